"""Benchmark: DAG integrity and parse time, 1 configured model (baseline) vs 20.

Every file in dags/ must import with no error and no TensorFlow import, in < 2 s per file with 20
models in config/models.yaml. Two configs are generated (absolute paths, no storage touched at
parse time): the demo classifier alone, and 20 models (copies of the three demo configs with other
names and buckets, half of them with alerts and a report link). Measured in the Airflow env, with
TFS_RELEASE_CONFIG pointing at each:
- DagBag, as the DAG processor uses it: one fresh process per file and round (the processor parses
  each file in a process of its own, with Airflow already imported), Airflow's own imports done
  before the clock starts; a meta-path spy records any attempt to import tensorflow/keras;
- `airflow dags report` (a migrated SQLite home in a temp dir): the CLI's per-file parse duration,
  all files in one process (the first file parsed pays for the project imports they share).
Medians over the rounds; a file with an import error or a TensorFlow import is an error. Timings
are printed, never asserted.

    $(bin/venv worker)/bin/python bench/dag_parse.py [--rounds 5] [--models 20]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402
from bench.import_spy import SPY  # noqa: E402

TARGET_S = 2.0
DAG_FILES = sorted(glob.glob(os.path.join(ROOT, "dags", "*.py")))
DEMO = {  # name -> (task, experiment, input size): the three demo models of config/models.yaml
    "shapes-classifier": ("classification", "resnet_imagenet", [64, 64]),
    "shapes-detector": ("detection", "retinanet_resnetfpn_coco", [128, 128]),
    "shapes-segmenter": ("segmentation", "seg_deeplabv3_pascal", [64, 64]),
}

# Run in the Airflow env: time one DAG file through DagBag after Airflow's own imports.
PROBE = SPY + r"""
t0 = time.monotonic()
import airflow.sdk  # noqa: F401 - already imported in the DAG processor's parent
from airflow.dag_processing.dagbag import DagBag
airflow_s = time.monotonic() - t0
t = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"airflow_import_s": airflow_s, "parse_s": time.monotonic() - t,
                  "dags": len(bag.dags), "tasks": sum(len(d.tasks) for d in bag.dags.values()),
                  "import_errors": {str(k): v for k, v in bag.import_errors.items()},
                  "tf_import_attempts": sorted(set(tried)),
                  "tf_modules": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")}))
"""


def write_config(path: str, count: int, relay: bool = False) -> str:
    names = list(DEMO)
    models = {}
    for i in range(count):
        base = names[i % len(names)] if count > 1 else "shapes-classifier"
        task, experiment, size = DEMO[base]
        name = base if count == 1 else f"{base}-{i:02d}"
        models[name] = {
            "task": task, "checkpoints": f"s3://training-{i:02d}/{name}/checkpoints/",
            "serving": f"s3://serving-{i:02d}/{name}/", "golden": os.path.join(ROOT, "demo", "golden", base),
            "experiment": experiment, "params_override": os.path.join(ROOT, "config", f"{base}.params.yaml"),
            "input_types": {"serving_default": "image_tensor"}, "input_size": size, "schedule": "@hourly"}
        if count > 1 and i % 2:  # half of them with failure alerts and a report link, as in production
            models[name]["alerts"] = {"slack_conn_id": "slack_alerts", "smtp_conn_id": "smtp_alerts",
                                      "email_to": ["ml-oncall@example.com"]}
            models[name]["report_base_url"] = "https://reports.internal/s3"
    with open(path, "w") as fh:  # --relay: a fleet's config, no watcher per model (the checkpoint relay's job)
        yaml.safe_dump({"models": models, **({"defaults": {"checkpoint_poll_s": 0}} if relay else {})}, fh)
    return path


def airflow_env(home: str, config: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=os.path.join(ROOT, "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=os.path.join(ROOT, "plugins"),
               AIRFLOW__CORE__UNIT_TEST_MODE="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=services.sqlite_url(home), TFS_RELEASE_CONFIG=config)
    return env


def run(cmd: list[str], env: dict, cwd: str, what: str) -> str:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def dagbag_parse(python: str, path: str, env: dict, cwd: str) -> dict:
    out = run([python, "-c", PROBE, path], env, cwd, f"DagBag probe of {os.path.basename(path)}")
    res = json.loads(out.strip().splitlines()[-1])
    if res["import_errors"] or res["tf_import_attempts"] or res["tf_modules"]:
        raise SystemExit(f"{os.path.basename(path)}: import errors {res['import_errors']}, "
                         f"tensorflow import attempts {res['tf_import_attempts']}, modules {res['tf_modules']}")
    return res


def dags_report(airflow: str, env: dict, cwd: str) -> dict[str, dict]:
    out = run([airflow, "dags", "report", "-o", "json"], env, cwd, "airflow dags report")
    rows = json.loads(next(ln for ln in reversed(out.splitlines()) if ln.startswith("[")))
    res = {}
    for r in rows:
        h, m, s = r["duration"].split(":")
        res[r["file"]] = {"parse_s": int(h) * 3600 + int(m) * 60 + float(s), "dags": int(r["dag_num"]),
                          "tasks": int(r["task_num"])}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--target", type=float, default=TARGET_S, help="seconds per file (2 at 20 models; the fleet "
                                                                   "issue's target at 1000 models is 10)")
    ap.add_argument("--relay", action="store_true", help="a fleet's config: defaults: {checkpoint_poll_s: 0}, no "
                                                          "watcher (AssetWatcher) per model")
    a = ap.parse_args()
    venv = services.airflow_venv()
    python, airflow = os.path.join(venv, "bin", "python"), os.path.join(venv, "bin", "airflow")
    work = tempfile.mkdtemp(prefix="bench-dag-parse-")
    try:
        home = os.path.join(work, "airflow-home")
        os.makedirs(home)
        configs = {n: write_config(os.path.join(work, f"models-{n}.yaml"), n, a.relay) for n in (1, a.models)}
        t0 = time.monotonic()
        run([airflow, "db", "migrate"], airflow_env(home, configs[1]), home, "airflow db migrate")
        print(f"setup: {len(DAG_FILES)} DAG files, configs with 1 and {a.models} models, "
              f"airflow db migrate {time.monotonic() - t0:.1f}s", flush=True)
        bag = {n: {f: [] for f in DAG_FILES} for n in configs}
        rep = {n: {} for n in configs}
        for r in range(a.rounds):
            for n in (configs if r % 2 == 0 else list(configs)[::-1]):
                env = airflow_env(home, configs[n])
                for f in DAG_FILES:
                    bag[n][f].append(dagbag_parse(python, f, env, home))
                for f, x in dags_report(airflow, env, home).items():
                    rep[n].setdefault(f, []).append(x)
                print(f"  round {r} {n:2} model(s): DagBag " + ", ".join(
                    f"{os.path.basename(f)} {bag[n][f][-1]['parse_s']:.2f}s ({bag[n][f][-1]['dags']} DAGs)"
                    for f in DAG_FILES) + "; dags report " + ", ".join(
                    f"{f} {rep[n][f][-1]['parse_s']:.2f}s" for f in sorted(rep[n])), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, many = 1, a.models
    results = {}
    print(f"\nmedians over {a.rounds} rounds (2-core machine shared with other jobs); target < {a.target:.0f} s "
          f"per file with {many} models; no file imported or tried to import tensorflow:")
    print(f"  {'file':<20}{'DAGs':>6}{'tasks':>7}{'DagBag 1':>10}{f'DagBag {many}':>11}{'ratio':>7}"
          f"{'report 1':>10}{f'report {many}':>11}{'ratio':>7}")
    for f in DAG_FILES:
        b = os.path.basename(f)
        b1 = statistics.median(x["parse_s"] for x in bag[one][f])
        bn = statistics.median(x["parse_s"] for x in bag[many][f])
        r1 = statistics.median(x["parse_s"] for x in rep[one].get(b, [{"parse_s": float("nan")}]))
        rn = statistics.median(x["parse_s"] for x in rep[many].get(b, [{"parse_s": float("nan")}]))
        dags, tasks = bag[many][f][-1]["dags"], bag[many][f][-1]["tasks"]
        results[b] = {"dags": dags, "tasks": tasks, "dagbag_1_s": round(b1, 3), f"dagbag_{many}_s": round(bn, 3),
                      "dagbag_ratio": round(bn / b1, 2), "report_1_s": round(r1, 3), f"report_{many}_s": round(rn, 3),
                      "report_ratio": round(rn / r1, 2) if r1 else None, "pass": bn < a.target and rn < a.target}
        print(f"  {b:<20}{dags:>6}{tasks:>7}{b1:>9.2f}s{bn:>10.2f}s{bn / b1:>6.2f}x{r1:>9.2f}s{rn:>10.2f}s"
              f"{rn / r1 if r1 else float('nan'):>6.2f}x  {'PASS' if results[b]['pass'] else 'MISS'}")
    airflow_s = statistics.median(x["airflow_import_s"] for n in bag for f in DAG_FILES for x in bag[n][f])
    print(f"  (Airflow's own imports before the clock, per fresh process: {airflow_s:.2f}s)")
    print(json.dumps({"bench": "dag_parse", "rounds": a.rounds, "models": many, "target_s": a.target,
                      "tensorflow_imported": any(x["tf_modules"] for n in bag for f in DAG_FILES for x in bag[n][f]),
                      "import_errors": sum(len(x["import_errors"]) for n in bag for f in DAG_FILES for x in bag[n][f]),
                      "airflow_import_s": round(airflow_s, 2), "files": results}))


if __name__ == "__main__":
    main()
