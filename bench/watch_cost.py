"""Benchmark: what waiting for checkpoints costs with event-driven releases.

`airflow standalone` (services.start_airflow; SQLite, LocalExecutor) with N release DAGs whose
checkpoints prefixes hold what a training job leaves between saves (5 checkpoints, each missing
its last data shard, and a state file: nothing to release, ~16 keys per listing), against a
SeaweedFS of its own. The CPU time (user + system, from /proc) of the triggerer process and every
process under it is read over the same window twice:

- baseline: every DAG paused, so no watcher runs (the triggerer's own heartbeat and housekeeping);
- watching: every DAG unpaused, N CheckpointTrigger watchers listing their prefix every P seconds.

(watching - baseline) / window / N is the cost of one model's watcher; it is printed per hour and
per poll (one S3 LIST, nothing changed), with the LIST count from the polls. While watching the
bench also checks that waiting costs nothing else: no DAG run, no task instance, no step process.

    $(bin/venv worker)/bin/python bench/watch_cost.py [--models 10] [--poll 10] [--seconds 180]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402
from registry.config import DEFAULT_CHECKPOINT_POLL_S  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds of the process and its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / TICK


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_tree(root_pid: int) -> tuple[dict[int, tuple[int, float]], dict[int, list[int]]]:
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (s := _stat(int(d))):
            procs[int(d)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    return procs, children


def descendants(children: dict[int, list[int]], pid: int) -> list[int]:
    out = [pid]
    for c in children.get(pid, []):
        out += descendants(children, c)
    return out


def triggerer_cpu(root_pid: int) -> tuple[float, list[int]]:
    """CPU seconds of the `airflow triggerer` process under ``root_pid`` and all its descendants."""
    procs, children = process_tree(root_pid)
    tagged = {p for p in descendants(children, root_pid) if "airflow triggerer" in _cmdline(p)}
    roots = [p for p in tagged if procs[p][0] not in tagged]  # its runner subprocess has the same command line
    if not roots:
        raise SystemExit(f"no `airflow triggerer` process under {root_pid}")
    pids = sorted({p for r in roots for p in descendants(children, r)})
    return sum(procs[p][1] for p in pids), pids


def step_processes(root_pid: int) -> list[str]:
    """Step commands (export/validate: the worker env, TensorFlow) running under Airflow."""
    _, children = process_tree(root_pid)
    step = os.path.join(ROOT, "bin", "tfs-release")
    return [c for p in descendants(children, root_pid)
            if step in (c := _cmdline(p)) or "venv-worker" in c or " -m cli " in c]


def put_waiting_prefix(s3, bucket: str, prefix: str) -> None:
    """5 checkpoints, each without its last data shard, and a state file naming the newest."""
    for step in range(100, 600, 100):
        s3.put_object(Bucket=bucket, Key=f"{prefix}ckpt-{step}.index", Body=b"i" * 4096)
        for shard in range(2):  # of 3: the third never arrives
            s3.put_object(Bucket=bucket, Key=f"{prefix}ckpt-{step}.data-{shard:05d}-of-00003", Body=b"d" * 8192)
    s3.put_object(Bucket=bucket, Key=f"{prefix}checkpoint", Body=b'model_checkpoint_path: "ckpt-500"\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--poll", type=float, default=DEFAULT_CHECKPOINT_POLL_S, help="checkpoint_poll_s of every model")
    ap.add_argument("--seconds", type=float, default=180.0, help="measuring window (each phase)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    from registry.s3 import make_client

    work = tempfile.mkdtemp(prefix="bench-watch-cost-")
    sw = services.start_seaweedfs(os.path.join(work, "s3"))
    af, ok = None, False
    try:
        s3 = make_client(endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                         aws_secret_access_key=sw.secret_key, region_name="us-east-1")
        for b in ("training", "serving"):
            s3.create_bucket(Bucket=b)
        models = {}
        for i in range(a.models):
            name = f"watched-{i:02d}"
            put_waiting_prefix(s3, "training", f"{name}/checkpoints/")
            models[name] = {"task": "classification", "checkpoints": f"s3://training/{name}/checkpoints/",
                            "serving": f"s3://serving/{name}/", "checkpoint_poll_s": a.poll}
        config = os.path.join(work, "models.yaml")
        with open(config, "w") as fh:
            yaml.safe_dump({"models": models}, fh)
        conn = {"conn_type": "aws", "login": sw.access_key, "password": sw.secret_key,
                "extra": {"endpoint_url": sw.endpoint, "region_name": "us-east-1"}}
        home = os.path.join(work, "airflow-home")
        af = services.start_airflow(home, config=config, conns={"aws_default": conn},
                                    extra_env={"TFS_RELEASE_SCHEDULES": "on",
                                               "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10"})
        token = af.token()
        db = os.path.join(home, "airflow.db")

        def query(sql):
            with sqlite3.connect(db) as c:
                return c.execute(sql).fetchall()

        def window(label):
            c0, pids = triggerer_cpu(af.pid)
            t0 = time.monotonic()
            time.sleep(a.seconds)
            c1, _ = triggerer_cpu(af.pid)
            dt = time.monotonic() - t0
            print(f"{label}: triggerer (pids {pids}) {c1 - c0:.2f} CPU s in {dt:.0f} s", flush=True)
            return (c1 - c0) / dt

        time.sleep(20)  # start-up settles
        base = window("baseline (all DAGs paused, no watcher)")
        for name in models:
            status, body = af.api("PATCH", f"/api/v2/dags/release__{name}", {"is_paused": False}, token=token)
            if status != 200:
                raise SystemExit(f"unpause release__{name}: HTTP {status} {body}")
        deadline = time.monotonic() + 240
        while len(query("SELECT id FROM trigger WHERE classpath LIKE '%.CheckpointTrigger' "
                        "AND triggerer_id IS NOT NULL")) < a.models:
            if time.monotonic() > deadline:
                raise SystemExit(f"not every watcher started on the triggerer; see {af.log}")
            time.sleep(1)
        time.sleep(max(15.0, 2 * a.poll))  # first listings (full decision) done
        watching = window(f"watching ({a.models} watchers, poll {a.poll:g}s)")
        runs, tis = query("SELECT count(*) FROM dag_run")[0][0], query("SELECT count(*) FROM task_instance")[0][0]
        steps = step_processes(af.pid)
        per_model_s = (watching - base) / a.models  # CPU seconds per second, one watcher
        polls_per_s = 1 / a.poll
        per_poll_ms = 1000 * per_model_s / polls_per_s
        print(f"\n== watcher cost ({a.models} models, poll {a.poll:g}s, {a.seconds:.0f}s windows)")
        print(f"triggerer CPU: baseline {base * 3600:.1f} s/h, watching {watching * 3600:.1f} s/h")
        print(f"per model: {per_model_s * 3600:.2f} CPU s per hour at poll {a.poll:g}s "
              f"({per_poll_ms:.1f} ms per poll = one S3 LIST); at the default {DEFAULT_CHECKPOINT_POLL_S:g} s: "
              f"{per_poll_ms / 1000 * 3600 / DEFAULT_CHECKPOINT_POLL_S:.2f} CPU s per hour")
        print(f"while waiting: {runs} DAG runs, {tis} task instances, {len(steps)} step processes")
        print(json.dumps({"models": a.models, "poll_s": a.poll, "seconds": a.seconds,
                          "baseline_cpu_s_per_h": round(base * 3600, 2),
                          "watching_cpu_s_per_h": round(watching * 3600, 2),
                          "per_model_cpu_s_per_h": round(per_model_s * 3600, 3),
                          "per_poll_ms": round(per_poll_ms, 2),
                          "default_poll_s": DEFAULT_CHECKPOINT_POLL_S,
                          "per_model_cpu_s_per_h_at_default": round(per_poll_ms / 1000 * 3600 / DEFAULT_CHECKPOINT_POLL_S, 3),
                          "dag_runs": runs, "task_instances": tis}))
        if runs or tis or steps:
            raise SystemExit(f"waiting started DAG runs or step processes ({steps}): it must cost nothing but "
                             "the listings")
        ok = True
    finally:
        if af is not None:
            af.stop()
        sw.stop()
        if ok and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work dir kept: {work}")


if __name__ == "__main__":
    main()
