"""Benchmark: one Airflow release run vs the sum of its parts run bare, and a no-op run.

For the demo classifier (the smallest model; the demo trainer's cached checkpoint), against a
SeaweedFS of its own and the real Docker engine with the stand-in serving image, in the same run:
- bare parts, on a fresh serving bucket, as a user runs them (subprocesses, each timed):
  `bin/tfs-release export`, `validate --candidate C`, `publish --candidate C`;
- one release run: `airflow dags test release__<model>` (dags/model_release.py, SQLite Airflow home
  in a temp dir, S3 settings only from the `aws_default` connection) on another fresh serving
  bucket; wall time, and the span from the first task's start to the last task's end (without the
  CLI's imports and DAG parse; the in-process execution API starts inside the first task);
- a no-op run right after it (the checkpoint is published): export/validate/publish must be
  skipped, no step command may run (no `[export]`/`[validate]` lines), no serving container may be
  created (Docker events with the validator's model label), and in the Airflow env parsing the DAG
  file plus calling its `newest_checkpoint` and `is_new` code must not even try to import
  TensorFlow (a meta-path spy in a probe process).
Overhead ratio: DAG run / (export + validate + publish) of the same round; target <= 1.5x. Also
printed: tasks span / sum; (DAG run - no-op run) / sum, the no-op run being all of the fixed part
(start-up, in-process API, checkpoint lookup, skip); and the CPU seconds of each side (the process
and the step commands it waited for; the serving container is outside both), which other jobs on
the machine disturb less than wall time. Rounds alternate which side goes first; medians of the
per-round ratios. Timings are printed, never asserted; a failed step or run is an error (the work
dir is then kept).

    $(bin/venv worker)/bin/python bench/pipeline.py [--repeat 2] [--keep]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402
from bench.import_spy import SPY  # noqa: E402

TARGET = 1.5
DAG_FILE = os.path.join(ROOT, "dags", "model_release.py")
STEP_TASKS = ("export", "validate", "publish")  # the tasks a no-op run must skip
STEP_MARKERS = ("[export]", "[validate]", "step command:")  # run_step's log lines
LABEL_MODEL = "tfs-release.model"  # serving/launchers.py: every serving container carries it

# Run in the Airflow env: parse the DAG file as the DAG processor does, then call the no-op path's
# task code (newest_checkpoint, is_new) outside Airflow, recording every attempt to import TF.
PROBE = SPY + r"""
dag_file, dag_id = sys.argv[1:3]
t0 = time.monotonic()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=dag_file)
parse_s = time.monotonic() - t0
dag = bag.dags[dag_id]
t1 = time.monotonic()
ck = dag.get_task("newest_checkpoint").python_callable(params={"checkpoint": None})
new = dag.get_task("is_new").python_callable(ck, params={"force": False})
print(json.dumps({"import_errors": {str(k): v for k, v in bag.import_errors.items()},
                  "parse_s": parse_s, "noop_path_s": time.monotonic() - t1, "checkpoint": ck,
                  "is_new": new, "tf_import_attempts": sorted(set(tried)),
                  "tf_modules": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")}))
"""


def model_config(checkpoints: str, serving: str, name: str, image: str) -> dict:
    kind = "shapes-classifier"  # golden set and Model Garden params of the demo classifier
    return {"models": {name: {
        "task": "classification", "checkpoints": checkpoints,
        "serving": f"s3://{serving}/{name}/", "golden": os.path.join(ROOT, "demo", "golden", kind),
        "experiment": "resnet_imagenet", "params_override": os.path.join(ROOT, "config", f"{kind}.params.yaml"),
        "input_types": {"serving_default": "image_tensor"}, "input_size": [64, 64], "serving_image": image}}}


def write_config(work: str, tag: str, cfg: dict) -> str:
    path = os.path.join(work, f"models-{tag}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def timed(cmd: list[str], env: dict, *, cwd: str = ROOT, timeout: float = 900,
          log: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run cmd; wall seconds, and as ``p.cpu_s`` the CPU seconds (user + system) of the process and
    every descendant it waited for (the step commands; not the serving container, on both sides)."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    s, r1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    p.cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if log:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}  (exit {p.returncode}, {s:.1f}s)\n{p.stdout}\n{p.stderr}\n")
    return s, p


class Containers:
    """Serving containers of one model (a name only this bench uses), from the Docker engine's records."""

    def __init__(self, model: str):
        import docker
        self.client = docker.from_env(timeout=60)
        self.filters = {"label": f"{LABEL_MODEL}={model}"}

    def existing(self) -> int:
        return len(self.client.containers.list(all=True, filters=self.filters, ignore_removed=True))

    def created(self, since: float, until: float) -> int:
        events = self.client.events(since=int(since), until=int(until) + 1, decode=True,
                                    filters={**self.filters, "type": "container", "event": "create"})
        return sum(1 for _ in events)

    def remove_all(self) -> None:
        for c in self.client.containers.list(all=True, filters=self.filters, ignore_removed=True):
            c.remove(force=True)
        self.client.close()


class AirflowHome(services.AirflowCLI):
    """A migrated SQLite Airflow home (services.AirflowCLI); `dags test` with the given config; task
    timings from its DB."""

    def __init__(self, home: str, env: dict):
        super().__init__(home, env)
        self.python = os.path.join(services.airflow_venv(), "bin", "python")

    def cli(self, *args, config: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
        p = self.run(*args, env={"TFS_RELEASE_CONFIG": config} if config else None)
        return p.seconds, p

    def dags_test(self, dag_id: str, config: str) -> dict:
        t_start = time.time()
        try:
            r = super().dags_test(dag_id, env={"TFS_RELEASE_CONFIG": config})
        except services.DagsTestError as exc:
            raise SystemExit(str(exc)) from None
        t_end, p = time.time(), r.process
        if r.state != "success":
            errors = [ln for ln in (p.stdout + p.stderr).splitlines()
                      if any(w in ln for w in ("ERROR", "error", "Error", "failed", "Traceback"))]
            raise SystemExit(f"airflow dags test {dag_id}: exit {p.returncode}, run {r.run_id} {r.state}, "
                             f"tasks {r.tasks}\n" + "\n".join(ln[:400] for ln in errors[-25:]))
        tasks = {}
        for task_id, state, start, end in self.query(
                "SELECT task_id, state, start_date, end_date FROM task_instance WHERE dag_id = ? AND run_id = ?",
                dag_id, r.run_id):
            tasks[task_id] = {"state": state, "start": _ts(start), "end": _ts(end)}
            tasks[task_id]["s"] = (tasks[task_id]["end"] - tasks[task_id]["start"]
                                   if start and end else None)
        ran = [t for t in tasks.values() if t["start"] and t["end"]]
        span = max(t["end"] for t in ran) - min(t["start"] for t in ran)
        return {"run_id": r.run_id, "wall_s": r.seconds, "cpu_s": p.cpu_s, "span_s": span, "tasks": tasks,
                "t_start": t_start, "t_end": t_end, "output": p.stdout + p.stderr}


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    d = dt.datetime.fromisoformat(value)
    return (d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)).timestamp()


def rounded(obj):
    """Floats to 3 decimals, all the way down (for the JSON line)."""
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v) for v in obj]
    return obj


def bare_parts(name: str, config: str, env: dict, log_path: str) -> dict:
    """export -> validate -> publish through the CLI, as a user runs them; seconds of each."""
    cli = os.path.join(ROOT, "bin", "tfs-release")
    out = {}
    s, p = timed([cli, "export", name, "--config", config, "--json"], env, log=log_path)
    if p.returncode != 0:
        raise SystemExit(f"bare export failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    candidate = json.loads(p.stdout)["candidate"]
    out["export"], cpu = s, {"export": p.cpu_s}
    s, p = timed([cli, "validate", name, "--candidate", candidate, "--config", config, "--json"], env, log=log_path)
    if p.returncode != 0 or not json.loads(p.stdout).get("passed"):
        raise SystemExit(f"bare validate failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    out["validate"], cpu["validate"] = s, p.cpu_s
    s, p = timed([cli, "publish", name, "--candidate", candidate, "--config", config, "--json"], env, log=log_path)
    if p.returncode != 0:
        raise SystemExit(f"bare publish failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    out["publish"], out["version"], cpu["publish"] = s, json.loads(p.stdout)["version"], p.cpu_s
    out["cpu_s"] = cpu
    return out


def no_tf_probe(af: AirflowHome, dag_id: str, config: str) -> dict:
    env = {**af.env, "TFS_RELEASE_CONFIG": config}
    s, p = timed([af.python, "-c", PROBE, DAG_FILE, dag_id], env, cwd=af.home, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"no-TensorFlow probe failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["wall_s"] = s
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2, help="rounds (bare and DAG alternate who goes first)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (Airflow home and logs, bare outputs)")
    a = ap.parse_args()
    from demo import checkpoint_cache
    from registry.s3 import make_client
    from standin.image import ensure_image

    services.ensure_docker()
    image = ensure_image()
    ckdir = checkpoint_cache.get("classification")
    work = tempfile.mkdtemp(prefix="bench-pipeline-")
    checkpoints = "s3://training/bench-classifier/checkpoints/"
    sw = services.start_seaweedfs(os.path.join(work, "s3"))
    watched: list[Containers] = []
    rounds = []
    keep = a.keep
    try:
        s3 = make_client(endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                         aws_secret_access_key=sw.secret_key, region_name="us-east-1")
        s3.create_bucket(Bucket="training")
        for f in checkpoint_cache.checkpoint_files(ckdir):
            s3.upload_file(os.path.join(ckdir, f), "training", f"bench-classifier/checkpoints/{f}")

        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_CONFIG"))
                 and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        bare_env = {**clean, **sw.env()}
        home = os.path.join(work, "airflow-home")
        os.makedirs(home)
        conn = {"conn_type": "aws", "login": sw.access_key, "password": sw.secret_key,
                "extra": {"endpoint_url": sw.endpoint, "region_name": "us-east-1"}}
        af = AirflowHome(home, {**clean, "AIRFLOW_HOME": home, "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags"),
                                "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(ROOT, "plugins"),
                                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": services.sqlite_url(home),
                                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn)})
        s, p = af.cli("db", "migrate")
        if p.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{p.stderr[-3000:]}")
        print(f"setup: image {image}, checkpoint {checkpoints}, airflow db migrate {s:.1f}s; logs in {home}",
              flush=True)

        for r in range(a.repeat):
            # a model name per round: its own DAG and Asset (Airflow deactivates an Asset whose name
            # comes back with another URI), and its own label value (other runs' containers don't count)
            tag = uuid.uuid4().hex[:6]
            name, bare_bucket, dag_bucket = f"bench-classifier-{tag}", f"serving-bare-{tag}", f"serving-dag-{tag}"
            dag_id = f"release__{name}"
            containers = Containers(name)
            watched.append(containers)
            for b in (bare_bucket, dag_bucket):
                s3.create_bucket(Bucket=b)
            bare_cfg = write_config(work, f"bare-{tag}", model_config(checkpoints, bare_bucket, name, image))
            dag_cfg = write_config(work, f"dag-{tag}", model_config(checkpoints, dag_bucket, name, image))
            rnd = {}

            def run_bare():
                rnd["bare"] = bare_parts(name, bare_cfg, bare_env, os.path.join(work, f"bare-{tag}.log"))
                b = rnd["bare"]
                print(f"  round {r} bare: export {b['export']:5.1f}s, validate {b['validate']:5.1f}s, "
                      f"publish {b['publish']:4.1f}s (version {b['version']}); CPU {sum(b['cpu_s'].values()):5.1f}s",
                      flush=True)

            def run_dag():
                full = af.dags_test(dag_id, dag_cfg)
                full["containers_created"] = containers.created(full["t_start"], full["t_end"])
                out = full.pop("output")
                full["step_lines_seen"] = [m for m in STEP_MARKERS if m in out]  # the control: a full run shows them
                rnd["dag"] = full
                before = containers.existing()
                noop = af.dags_test(dag_id, dag_cfg)
                out = noop.pop("output")
                noop["containers_created"] = containers.created(noop["t_start"], noop["t_end"])
                noop["containers_before_after"] = [before, containers.existing()]
                noop["step_lines_seen"] = [m for m in STEP_MARKERS if m in out]
                noop["skipped"] = sorted(t for t, x in noop["tasks"].items() if x["state"] == "skipped")
                noop["ok"] = (not noop["step_lines_seen"] and noop["containers_created"] == 0
                              and all(noop["tasks"][t]["state"] == "skipped" for t in STEP_TASKS if t in noop["tasks"]))
                rnd["noop"] = noop
                ordered = sorted(full["tasks"].items(), key=lambda kv: kv[1]["start"] or 0)
                tasks = " ".join(f"{t} {x['s']:.1f}s" for t, x in ordered if x["s"] is not None)
                print(f"  round {r} DAG : wall {full['wall_s']:5.1f}s, CPU {full['cpu_s']:5.1f}s, "
                      f"tasks span {full['span_s']:5.1f}s "
                      f"({tasks}); step lines {full['step_lines_seen']}, {full['containers_created']} serving "
                      f"container(s) created", flush=True)
                print(f"  round {r} no-op: wall {noop['wall_s']:5.1f}s, CPU {noop['cpu_s']:4.1f}s, "
                      f"tasks span {noop['span_s']:4.1f}s, "
                      f"skipped {', '.join(noop['skipped'])}; step lines {noop['step_lines_seen'] or 'none'}, "
                      f"containers created {noop['containers_created']}", flush=True)

            for step in ((run_bare, run_dag) if r % 2 == 0 else (run_dag, run_bare)):
                step()
            rounds.append(rnd)
        probe = no_tf_probe(af, dag_id, dag_cfg)
        print(f"  no-TF probe (Airflow env): parse {probe['parse_s']:.2f}s + newest_checkpoint/is_new "
              f"{probe['noop_path_s']:.2f}s, is_new={probe['is_new']}, tensorflow import attempts "
              f"{probe['tf_import_attempts'] or 'none'}, tensorflow modules {len(probe['tf_modules'])}", flush=True)
    except SystemExit:
        keep = True  # a failed step or run: keep the Airflow home and logs to look at
        raise
    finally:
        try:
            for c in watched:
                c.remove_all()
        finally:
            sw.stop()
            if keep:
                print(f"kept {work} (Airflow home, airflow-cli.log, bare-*.log)", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)

    summarize(rounds, probe)


def summarize(rounds: list[dict], probe: dict) -> None:
    med = statistics.median
    for x in rounds:  # ratios are paired: each round's DAG run against the same round's bare parts
        x["bare_sum_s"] = sum(x["bare"][k] for k in STEP_TASKS)
        x["bare_cpu_s"] = sum(x["bare"]["cpu_s"].values())
        x["ratio"] = x["dag"]["wall_s"] / x["bare_sum_s"]
        x["ratio_span"] = x["dag"]["span_s"] / x["bare_sum_s"]
        x["ratio_minus_noop"] = (x["dag"]["wall_s"] - x["noop"]["wall_s"]) / x["bare_sum_s"]
        x["ratio_cpu"] = x["dag"]["cpu_s"] / x["bare_cpu_s"]
        x["ratio_cpu_minus_noop"] = (x["dag"]["cpu_s"] - x["noop"]["cpu_s"]) / x["bare_cpu_s"]
    parts = {k: med([x["bare"][k] for x in rounds]) for k in STEP_TASKS}
    task_s = {t: med([x["dag"]["tasks"][t]["s"] for x in rounds]) for t in rounds[0]["dag"]["tasks"]
              if all(x["dag"]["tasks"].get(t, {}).get("s") is not None for x in rounds)}
    ratios = ("ratio", "ratio_span", "ratio_minus_noop", "ratio_cpu", "ratio_cpu_minus_noop")
    m = {k: med([x[k] for x in rounds]) for k in ("bare_sum_s", "bare_cpu_s", *ratios)}
    m.update({f"{side}_{k}": med([x[side][k] for x in rounds]) for side in ("dag", "noop")
              for k in ("wall_s", "cpu_s", "span_s")})
    m["dag_outside_tasks_s"] = med([x["dag"]["wall_s"] - x["dag"]["span_s"] for x in rounds])
    m["noop_outside_tasks_s"] = med([x["noop"]["wall_s"] - x["noop"]["span_s"] for x in rounds])
    # the checks are only worth something if the full run trips them: its step lines and container
    control = all(len(x["dag"]["step_lines_seen"]) == len(STEP_MARKERS) and x["dag"]["containers_created"] > 0
                  for x in rounds)
    noop_ok = (control and all(x["noop"]["ok"] for x in rounds) and not probe["tf_import_attempts"]
               and not probe["tf_modules"])
    verdict = "PASS" if m["ratio"] <= TARGET else "MISS"

    print(f"\nmedians over {len(rounds)} round(s); demo classifier, stand-in image; 2-core machine shared with "
          "other jobs (noisy: compare the paired ratios)")
    print(f"  {'step':<24}{'bare CLI':>10}{'DAG task':>10}")
    for t in STEP_TASKS:
        print(f"  {t:<24}{parts[t]:>9.1f}s{task_s.get(t, float('nan')):>9.1f}s")
    for t in sorted(set(task_s) - set(STEP_TASKS)):
        print(f"  {t:<24}{'-':>10}{task_s[t]:>9.1f}s")
    print(f"  {'sum of the bare parts':<24}{m['bare_sum_s']:>9.1f}s   (CPU {m['bare_cpu_s']:.1f}s)")
    print(f"  {'DAG run (dags test)':<24}{m['dag_wall_s']:>9.1f}s   (CPU {m['dag_cpu_s']:.1f}s)")
    print(f"  {'no-op run (dags test)':<24}{m['noop_wall_s']:>9.1f}s   (CPU {m['noop_cpu_s']:.1f}s; outside tasks "
          f"{m['noop_outside_tasks_s']:.1f}s): "
          f"{'skipped, no step command, no container, no TensorFlow import' if noop_ok else 'NOT a clean no-op'}")
    print(f"  ratio DAG run / sum of parts:           {m['ratio']:.2f}x  {verdict} (target <= {TARGET}x); "
          f"per round {', '.join(format(x['ratio'], '.2f') for x in rounds)}")
    print(f"  ratio tasks span / sum:                 {m['ratio_span']:.2f}x  (without the CLI start-up and "
          f"shut-down, {m['dag_outside_tasks_s']:.1f}s)")
    print(f"  ratio (DAG run - no-op run) / sum:      {m['ratio_minus_noop']:.2f}x  (without all of the fixed part)")
    print(f"  ratio CPU seconds, DAG run / parts:     {m['ratio_cpu']:.2f}x  (less sensitive to other jobs)")
    print(f"  ratio CPU, (DAG run - no-op) / parts:   {m['ratio_cpu_minus_noop']:.2f}x  (the steps under Airflow "
          "vs bare)")
    print(f"pipeline: DAG run {m['dag_wall_s']:.1f}s vs parts {m['bare_sum_s']:.1f}s = {m['ratio']:.2f}x "
          f"({verdict} target <= {TARGET}x); no-op run {m['noop_wall_s']:.1f}s")
    print(json.dumps(rounded({"bench": "pipeline", "rounds": len(rounds), "target": TARGET, "verdict": verdict,
                      "bare_s": {k: round(v, 2) for k, v in parts.items()},
                      "dag_task_s": {k: round(v, 2) for k, v in task_s.items()},
                      **m,
                      "noop_clean": noop_ok, "noop_checks_tripped_by_full_run": control,
                      "noop": [{k: x["noop"][k] for k in ("skipped", "step_lines_seen", "containers_created",
                                                          "containers_before_after")} for x in rounds],
                      "dag_containers_created": [x["dag"]["containers_created"] for x in rounds],
                      "probe": {k: probe[k] for k in ("parse_s", "noop_path_s", "is_new", "tf_import_attempts",
                                                      "tf_modules", "import_errors")},
                      "per_round": [{"bare": x["bare"], **{f"{side}_{k}": x[side][k] for side in ("dag", "noop")
                                                           for k in ("wall_s", "cpu_s", "span_s")},
                                     **{k: x[k] for k in ratios}}
                                    for x in rounds]})))

if __name__ == "__main__":
    main()
