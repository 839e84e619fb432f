"""Benchmark: from "training wrote ckpt-N" to "production serves it", nobody triggering anything.

The parts are real and local: a SeaweedFS of its own; `airflow standalone` (scheduler, DAG processor,
triggerer, API server; LocalExecutor, SQLite; services.start_airflow) with this clone's DAGs and the
release DAG of the demo classifier scheduled on its checkpoints Asset; the validator's temporary
TF Serving in the stand-in image (Docker engine); production = the `tfs-release sync` sidecar
(every 2 s, the default) filling a model_base_path that a TF-Serving stand-in process
serves (serving.launchers.ProcessLauncher; it polls the folder every second, as TF Serving does).

1. Seed (untimed): the demo trainer's cached classifier checkpoint is released with the CLI
   (`tfs-release release`) as version 1, production loads it; then the DAG is unpaused and its
   checkpoint watcher starts on the triggerer (it finds ckpt-N published and records it). Warm-up
   (untimed, skipped with `--cold`): one manual run that skips (version 1 is out), so the measured
   runs meet a stack that has run before, as a production Airflow has (`--cold`: the first measured
   run is the stack's first).
2. Measured, `--rounds` times (default 3): training writes a new checkpoint (the same weights
   under a new step, files first, the state file last; with the watcher, at a random point of its
   poll cycle). Then, from the moment it is complete until production reports the next version
   AVAILABLE, the phases, from Airflow's own timestamps (REST API) and the bench's polling:
   detection (complete -> Asset event), queueing (event -> first task starts), lookup
   (newest_checkpoint, is_new), export, validation (with the previous version as the baseline, as
   any release after the first), publish, hand-offs (gaps between those tasks), sync (publish done
   -> the version folder in production's model_base_path), load (folder -> AVAILABLE). They add up
   to the total.
3. Bare steps (after it, same machine, the last checkpoint): `tfs-release export --checkpoint`,
   `validate`, `publish`, `sync --once` of that version, and production's load of it.
   Ratio: total / sum of the bare steps, per round and the median (target <= 1.5x); total target
   <= 120 s in every round.

`--via rest`: no watcher (checkpoint_poll_s: 0); the "training job" posts the Asset event itself
(demo/checkpoint_events.py) as soon as the state file is written. `--poll S`: the watcher's
interval (default: the config default, 5 s; detection then waits 2.5 s on average, 5 s at most).

    $(bin/venv worker)/bin/python bench/freshness.py [--via watcher|rest] [--poll 5] [--rounds 3] [--cold] [--keep]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import statistics
import tempfile
import threading
import time
import urllib.parse

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402
from cli import SYNC_INTERVAL_S  # noqa: E402
from registry.config import DEFAULT_CHECKPOINT_POLL_S  # noqa: E402
from bench.pipeline import model_config, rounded, timed  # noqa: E402

NAME = "shapes-classifier"  # the demo classifier (golden set, params); its own buckets here
DAG_ID = f"release__{NAME}"
TARGET_S, TARGET_RATIO = 120.0, 1.5
TASKS = ("newest_checkpoint", "is_new", "export", "validate", "publish")
ORDER = ("detection", "queueing", "lookup", "export", "validation", "publish", "hand-offs", "sync", "load")


def iso(value: str | None) -> float | None:
    if not value:
        return None
    d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)).timestamp()


def rest_state(rest: str, version: int) -> str:
    import urllib.request
    try:
        with urllib.request.urlopen(f"{rest}/v1/models/{NAME}/versions/{version}", timeout=2) as r:
            body = json.loads(r.read())
        return body["model_version_status"][0]["state"]
    except Exception:  # noqa: BLE001 - not there yet
        return "NOT_FOUND"


class Watcher(threading.Thread):
    """When version N's folder appears in production's model_base_path, and when production reports
    it AVAILABLE (polled every 50 ms)."""

    def __init__(self, dest: str, rest: str, version: int):
        super().__init__(daemon=True)
        self.dest, self.rest, self.version = dest, rest, version
        self.folder_at = self.available_at = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and self.available_at is None:
            now = time.time()
            if self.folder_at is None and os.path.isdir(os.path.join(self.dest, str(self.version))):
                self.folder_at = now
            if self.folder_at is not None and rest_state(self.rest, self.version) == "AVAILABLE":
                self.available_at = time.time()
            time.sleep(0.05)

    def wait(self, timeout: float) -> bool:
        self.join(timeout)
        return self.available_at is not None


def upload_new_checkpoint(s3, folder: str, bucket: str, prefix: str, step: int) -> tuple[str, float]:
    """The cached checkpoint's files as ckpt-<step> (data, index, params), the state file last;
    returns its uri and the time it became complete (the state file written)."""
    from demo.checkpoint_cache import checkpoint_files
    from registry.checkpoints import parse_state_file
    with open(os.path.join(folder, "checkpoint")) as fh:
        src, _ = parse_state_file(fh.read())  # the newest (what version 1 was released from)
    for f in checkpoint_files(folder):
        if f.startswith(src + "."):
            s3.upload_file(os.path.join(folder, f), bucket, prefix + f"ckpt-{step}" + f[len(src):])
        elif f == "params.yaml":
            s3.upload_file(os.path.join(folder, f), bucket, prefix + f)
    s3.put_object(Bucket=bucket, Key=prefix + "checkpoint",
                  Body=f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n'.encode())
    return f"s3://{bucket}/{prefix}ckpt-{step}", time.time()


def api_json(af, path: str) -> dict:
    status, body = af.api("GET", path, token=af.bench_token)
    if status != 200:
        raise SystemExit(f"GET {path}: HTTP {status} {body}")
    return body


def run_to_end(af, dag_id: str, *, run_id: str | None = None, trigger: bool = False,
               timeout: float = 300) -> dict:
    """Wait for a run to end (``trigger``: start a manual one first); its wall seconds and how long
    its first task took."""
    t0 = time.monotonic()
    if trigger:
        status, body = af.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None},
                              token=af.bench_token)
        if status != 200:
            raise SystemExit(f"trigger {dag_id}: HTTP {status} {body}")
        run_id = body["dag_run_id"]
    path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
    while (state := api_json(af, path)["state"]) not in ("success", "failed"):
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"run {run_id} did not end within {timeout:.0f}s; see {af.log}")
        time.sleep(0.5)
    if state != "success":
        raise SystemExit(f"run {run_id} ended {state}; see {af.log}")
    tis = api_json(af, f"{path}/taskInstances")["task_instances"]
    first = min((ti for ti in tis if ti["start_date"]), key=lambda ti: iso(ti["start_date"]))
    return {"run_id": run_id, "seconds": time.monotonic() - t0,
            "first_task": first["task_id"], "first_task_s": iso(first["end_date"]) - iso(first["start_date"])}


def run_phases(af, run: dict, event_ts: float, complete_at: float, w: Watcher) -> dict:
    tis = api_json(af, f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run['dag_run_id'])}/taskInstances")
    t = {ti["task_id"]: (iso(ti["start_date"]), iso(ti["end_date"]), ti["state"]) for ti in tis["task_instances"]}
    missing = [k for k in TASKS if k not in t or t[k][0] is None or t[k][1] is None]
    if missing:
        raise SystemExit(f"tasks without start/end: {missing} ({t})")
    p = {"detection": event_ts - complete_at,
         "queueing": t["newest_checkpoint"][0] - event_ts,
         "lookup": t["export"][0] - t["newest_checkpoint"][0],
         "export": t["export"][1] - t["export"][0],
         "validation": t["validate"][1] - t["validate"][0],
         "publish": t["publish"][1] - t["publish"][0],
         "hand-offs": (t["validate"][0] - t["export"][1]) + (t["publish"][0] - t["validate"][1]),
         "sync": w.folder_at - t["publish"][1],
         "load": w.available_at - w.folder_at}
    p["total"] = w.available_at - complete_at
    p["tasks"] = {k: {"start": round(v[0] - complete_at, 2), "seconds": round(v[1] - v[0], 2)}
                  for k, v in sorted(t.items(), key=lambda kv: kv[1][0] or 0) if v[0] and v[1]}
    p["run_created_after_event"] = iso(run.get("queued_at") or run.get("run_after")) - event_ts
    return p


def bare_steps(cli_env: dict, config: str, checkpoint: str, dest: str, rest: str, log: str) -> dict:
    """export, validate, publish, then one sync round into production's folder (the sidecar is
    stopped) and production's load of the new version; seconds of each."""
    cli = os.path.join(ROOT, "bin", "tfs-release")
    out = {}
    s, p = timed([cli, "export", NAME, "--checkpoint", checkpoint, "--config", config, "--json"], cli_env, log=log)
    if p.returncode != 0:
        raise SystemExit(f"bare export failed:\n{p.stderr[-3000:]}")
    cand, out["export"] = json.loads(p.stdout)["candidate"], s
    s, p = timed([cli, "validate", NAME, "--candidate", cand, "--config", config, "--json"], cli_env, log=log)
    if p.returncode != 0:
        raise SystemExit(f"bare validate failed:\n{p.stderr[-3000:]}")
    out["validation"] = s
    s, p = timed([cli, "publish", NAME, "--candidate", cand, "--config", config, "--json"], cli_env, log=log)
    if p.returncode != 0:
        raise SystemExit(f"bare publish failed:\n{p.stderr[-3000:]}")
    out["publish"], version = s, json.loads(p.stdout)["version"]
    # sync: one round into production's folder (it holds the earlier versions: only the new one is
    # fetched); load: production, from the version's folder appearing to AVAILABLE
    w = Watcher(dest, rest, version)
    w.start()
    s, p = timed([cli, "sync", NAME, "--dest", dest, "--once", "--config", config], cli_env, log=log)
    if p.returncode != 0 or not os.path.isdir(os.path.join(dest, str(version))):
        raise SystemExit(f"bare sync failed:\n{p.stderr[-3000:]}")
    out["sync"] = s
    if not w.wait(300):
        raise SystemExit(f"production did not load version {version} within 300 s")
    out["load"], out["version"] = w.available_at - w.folder_at, version
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--via", choices=("watcher", "rest"), default="watcher",
                    help="who creates the Asset event: the checkpoint watcher on the triggerer, or the "
                         "training job over the REST API")
    ap.add_argument("--poll", type=float, help="the watcher's checkpoint_poll_s (default: the config default)")
    ap.add_argument("--rounds", type=int, default=3, help="checkpoints released one after another (default 3)")
    ap.add_argument("--cold", action="store_true", help="no warm-up run: the first measured run is Airflow's first")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (Airflow home, logs)")
    a = ap.parse_args()
    from demo import checkpoint_cache
    from demo.checkpoint_events import post_checkpoint_event
    from registry.s3 import make_client
    from standin.image import ensure_image
    from serving.launchers import ProcessLauncher

    services.ensure_docker()
    image = ensure_image()
    ckdir = checkpoint_cache.get("classification")
    work = tempfile.mkdtemp(prefix="bench-freshness-")
    sw = services.start_seaweedfs(os.path.join(work, "s3"))
    procs, af, server, ok = [], None, None, False
    try:
        s3 = make_client(endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                         aws_secret_access_key=sw.secret_key, region_name="us-east-1")
        for b in ("training", "serving"):
            s3.create_bucket(Bucket=b)
        prefix = f"{NAME}/checkpoints/"
        cfg = model_config(f"s3://training/{prefix}", "serving", NAME, image)
        if a.via == "rest":
            cfg["models"][NAME]["checkpoint_poll_s"] = 0
        elif a.poll:
            cfg["models"][NAME]["checkpoint_poll_s"] = a.poll
        poll_s = cfg["models"][NAME].get("checkpoint_poll_s", DEFAULT_CHECKPOINT_POLL_S)
        config = os.path.join(work, "models.yaml")
        with open(config, "w") as fh:
            yaml.safe_dump(cfg, fh)
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_CONFIG")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        cli_env = {**clean, **sw.env()}
        log = os.path.join(work, "cli.log")

        # 1. seed: version 1 from the cached checkpoint, with the CLI; production serves it
        from demo.run_demo import upload_like_training
        upload_like_training(s3, ckdir, "training", prefix)
        s, p = timed([os.path.join(ROOT, "bin", "tfs-release"), "release", NAME, "--config", config, "--json"],
                     cli_env, log=log, timeout=1200)
        if p.returncode != 0:
            raise SystemExit(f"seed release failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        print(f"seed: version 1 released with the CLI in {s:.1f}s", flush=True)
        dest = os.path.join(work, "production", NAME)
        os.makedirs(dest)
        sync_log = open(os.path.join(work, "sync.log"), "a")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cli", "sync", NAME, "--dest", dest, "--interval", str(SYNC_INTERVAL_S),
             "--config", config], cwd=ROOT, env={**cli_env, "PYTHONPATH": ROOT}, stdout=sync_log,
            stderr=subprocess.STDOUT, start_new_session=True))
        server = ProcessLauncher(log_dir=work).start(os.path.dirname(dest), NAME)
        rest = f"http://{server.host}:{server.rest_port}"
        w1 = Watcher(dest, rest, 1)
        w1.start()
        if not w1.wait(300):
            raise SystemExit("production did not load version 1 within 300 s")
        print(f"production serves version 1 ({rest})", flush=True)

        home = os.path.join(work, "airflow-home")
        conn = {"conn_type": "aws", "login": sw.access_key, "password": sw.secret_key,
                "extra": {"endpoint_url": sw.endpoint, "region_name": "us-east-1"}}
        t0 = time.monotonic()
        af = services.start_airflow(home, config=config, conns={"aws_default": conn},
                                    extra_env={"TFS_RELEASE_SCHEDULES": "on",
                                               "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5"})
        af.bench_token = af.token()
        status, body = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=af.bench_token)
        if status != 200:
            raise SystemExit(f"unpause: HTTP {status} {body}")
        db = os.path.join(home, "airflow.db")
        import sqlite3
        if a.via == "watcher":  # its trigger runs on the triggerer (after the next parse), then its first poll
            deadline = time.monotonic() + 180
            while True:
                with sqlite3.connect(db) as c:
                    if c.execute("SELECT 1 FROM trigger WHERE classpath LIKE '%.CheckpointTrigger' "
                                 "AND triggerer_id IS NOT NULL").fetchall():
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the checkpoint watcher did not start on the triggerer; see {af.log}")
                time.sleep(0.5)
            time.sleep(5)
        asset_uri = f"s3://training/{prefix.rstrip('/')}"
        assets = api_json(af, "/api/v2/assets?" + urllib.parse.urlencode({"uri_pattern": asset_uri}))
        [asset_id] = [x["id"] for x in assets["assets"] if x["uri"] == asset_uri]
        print(f"airflow standalone ready, DAG unpaused{', watcher running' if a.via == 'watcher' else ''} "
              f"in {time.monotonic() - t0:.1f}s; home {home}", flush=True)

        # warm-up (untimed): one no-op run, so the measured runs meet a stack that has run before, as a
        # production Airflow has. --cold skips it: the first measured run is the stack's first.
        warmup = None
        if not a.cold:
            warmup = run_to_end(af, DAG_ID, trigger=True)
            print(f"warm-up: a manual run that skips (version 1 is out) in {warmup['seconds']:.1f}s, "
                  f"its first task ({warmup['first_task']}) took {warmup['first_task_s']:.1f}s", flush=True)

        # 2. training writes a new checkpoint; nobody triggers anything. One round per checkpoint.
        rounds, seen = [], set()
        for i in range(a.rounds):
            if a.via == "watcher" and i:  # the next checkpoint at a random point of the poll cycle
                time.sleep(random.uniform(0, poll_s))
            version = 2 + i
            w2 = Watcher(dest, rest, version)
            w2.start()
            ck_uri, complete_at = upload_new_checkpoint(s3, ckdir, "training", prefix, step=10_000 + i)
            if a.via == "rest":
                post_checkpoint_event(af.url, ck_uri, token=af.bench_token)
            print(f"round {i + 1}: {ck_uri} complete; waiting for production to serve version {version}", flush=True)
            if not w2.wait(900):
                raise SystemExit(f"production did not serve version {version} within 900 s; see {af.log}")
            runs = [r for r in api_json(af, f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
                    if r["run_type"] != "manual" and r["dag_run_id"] not in seen]
            if len(runs) != 1 or runs[0]["run_type"] != "asset_triggered":
                raise SystemExit(f"expected one new asset-triggered run, got "
                                 f"{[(r['dag_run_id'], r['run_type']) for r in runs]}")
            run = runs[0]
            seen.add(run["dag_run_id"])
            events = [e for e in api_json(af, f"/api/v2/assets/events?asset_id={asset_id}")["asset_events"]
                      if iso(e["timestamp"]) >= complete_at - 1]
            if len(events) != 1:
                raise SystemExit(f"expected one Asset event for {ck_uri}, got {len(events)}: {events}")
            phases = run_phases(af, run, iso(events[0]["timestamp"]), complete_at, w2)
            rounds.append(phases)
            run_to_end(af, DAG_ID, run_id=run["dag_run_id"])  # clean_staging, before the next round
            print(f"round {i + 1}: {phases['total']:.1f}s (detection {phases['detection']:.1f}s)", flush=True)

        # 3. the bare steps on the same checkpoint (the sidecar stopped: the bare sync does it)
        for p in procs:
            p.terminate()
            p.wait(15)
        bare = bare_steps(cli_env, config, ck_uri, dest, rest, log)
        bare_sum = sum(bare[k] for k in ("export", "validation", "publish", "sync", "load"))
        for r in rounds:
            r["ratio"] = r["total"] / bare_sum
        med = {k: statistics.median(r[k] for r in rounds) for k in (*ORDER, "total", "ratio")}

        print(f"\n== freshness: a complete checkpoint -> production serves it (event by the {a.via}"
              f"{f', poll {poll_s:g}s' if a.via == 'watcher' else ''}; {len(rounds)} round(s)"
              f"{', cold stack' if a.cold else ', after a warm-up run'})")
        print(f"{'phase':<12} " + " ".join(f"{'r' + str(i + 1):>7}" for i in range(len(rounds)))
              + f" {'median':>7}   bare step")
        for k in (*ORDER, "total"):
            b = bare_sum if k == "total" else bare.get(k)
            print(f"{k:<12} " + " ".join(f"{r[k]:7.1f}" for r in rounds) + f" {med[k]:7.1f}   "
                  + ("" if b is None else f"{b:.1f}" + (" (sum of the bare steps)" if k == "total" else "")))
        print(f"{'ratio':<12} " + " ".join(f"{r['ratio']:6.2f}x" for r in rounds) + f" {med['ratio']:6.2f}x")
        nodet = statistics.median((r["total"] - r["detection"]) / bare_sum for r in rounds)
        for i, r in enumerate(rounds):
            print(f"round {i + 1} tasks (start after the checkpoint was complete, seconds): " + ", ".join(
                f"{k} +{v['start']:.1f}s {v['seconds']:.1f}s" for k, v in r["tasks"].items()))
        print(f"total (median): {med['total']:.1f}s (target <= {TARGET_S:.0f}s: "
              f"{'PASS' if max(r['total'] for r in rounds) <= TARGET_S else 'MISS'} in every round); "
              f"total / bare sum (median): {med['ratio']:.2f}x "
              f"(target <= {TARGET_RATIO}x: {'PASS' if med['ratio'] <= TARGET_RATIO else 'MISS'}); "
              f"without detection {nodet:.2f}x")
        print(json.dumps(rounded({"via": a.via, "poll_s": poll_s, "cold": a.cold, "warmup": warmup,
                                  "rounds": rounds, "median": med, "bare": bare, "bare_sum": bare_sum,
                                  "ratio_without_detection": nodet})))
        ok = True
    finally:
        if af is not None:
            af.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
        if server is not None:
            server.stop()
        sw.stop()
        if (ok and not a.keep):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work dir kept: {work}")


if __name__ == "__main__":
    main()
