"""DAG integrity: every file in dags/ imports without errors and without TensorFlow, and the release
factory yields one correct DAG per configured model.

Runs from the worker env's pytest (`make test`); Airflow lives in the other env, so each check
parses the DAGs in a subprocess of the Airflow venv's python (``airflow_probe.py``, DagBag as the
DAG processor uses it) with AIRFLOW_HOME in a temp dir. Needs no service: parsing touches no S3.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import time

import pytest
import yaml

from tests.conftest import ROOT

DAGS = os.path.join(ROOT, "dags")
DAG_FILES = sorted(glob.glob(os.path.join(DAGS, "*.py")))
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "airflow_probe.py")
RELEASE = os.path.join(DAGS, "model_release.py")
TASK_EDGES = sorted([["newest_checkpoint", "export"], ["newest_checkpoint", "is_new"],
                     ["is_new", "export"], ["export", "validate"], ["export", "publish"],
                     ["validate", "publish"], ["publish", "clean_staging"]])
# conf values the release DAG's Params must refuse at trigger time (index -> what is wrong)
BAD_CONFS = [{"launcher": "kubernetes"}, {"force": "yes"}, {"dry_run": 1},
             {"checkpoint": "gs://bucket/ckpt-1"}, {"checkpoint": 7}]
DEFAULT_TIMEOUTS = {"newest_checkpoint": 600, "is_new": 600, "export": 3600, "validate": 3600, "publish": 1800,
                    "clean_staging": 600}
# cron presets as Airflow's CronTriggerTimetable spells them
CRON = {"@daily": "0 0 * * *", "@hourly": "0 * * * *"}
WATCHER = "tfs_release_airflow.checkpoint_watch.CheckpointTrigger"
GOOD_CONFS = [{}, {"checkpoint": "s3://training/m/checkpoints/ckpt-5", "force": True, "dry_run": True,
                   "launcher": "process"}, {"checkpoint": None}]


def expected_start(name: str, cfg: dict) -> dict:
    """How the release DAG of a model entry starts (docs/airflow.md "Event-driven releases")."""
    trigger, schedule = cfg.get("trigger", "checkpoint-event"), cfg.get("schedule")
    if trigger == "schedule":
        return {"timetable": "CronTriggerTimetable", "cron": CRON.get(schedule, schedule), "assets": []}
    poll = cfg.get("checkpoint_poll_s", 5)
    watchers = [{"name": f"checkpoints__{name}", "classpath": WATCHER,
                 "kwargs": {"model": name, "checkpoints": cfg["checkpoints"], "serving": cfg["serving"],
                            "conn_id": cfg.get("conn_id", "aws_default"), "poll_s": float(poll)}}] if poll else []
    return {"timetable": "AssetOrTimeSchedule" if schedule else "AssetTriggeredTimetable",
            "cron": CRON.get(schedule, schedule),
            "assets": [{"uri": cfg["checkpoints"].rstrip("/"), "watchers": watchers}]}


def started_by(d: dict) -> dict:
    return {k: d[k] for k in ("timetable", "cron", "assets")}


@pytest.fixture(scope="session")
def airflow_python() -> str:
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


def airflow_env(home, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "TFS_RELEASE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=DAGS, AIRFLOW__CORE__UNIT_TEST_MODE="False")
    env.update(extra)
    return env


def probe(airflow_python, tmp_path, files, *, config=None, confs=()) -> dict:
    out = tmp_path / "probe.json"
    extra = {"TFS_RELEASE_CONFIG": str(config)} if config else {}
    cmd = [airflow_python, PROBE, str(out), *files]
    if confs:
        cmd += ["--bad-params", json.dumps(list(confs))]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=airflow_env(tmp_path / "airflow-home", **extra), cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"probe failed:\n{p.stderr[-4000:]}"
    report = json.loads(out.read_text())
    report["wall_s"] = time.monotonic() - t0
    return report


@pytest.fixture(scope="module")
def every_file(airflow_python, tmp_path_factory) -> dict:
    """All DAG files parsed in one fresh Airflow process, in order, with the repo's config."""
    return probe(airflow_python, tmp_path_factory.mktemp("every-file"), DAG_FILES,
                 confs=BAD_CONFS + GOOD_CONFS)


def test_there_are_dag_files():
    assert RELEASE in DAG_FILES


@pytest.mark.parametrize("path", DAG_FILES, ids=os.path.basename)
def test_dag_file_imports_without_errors_or_tensorflow(every_file, path):
    r = every_file["files"][path]
    assert r["import_errors"] == {}, r["import_errors"]
    # model_canary is defined only when a model has rollout: canary (the repo's config has none;
    # test_production_approval_and_canary_shape_the_dags parses it with one)
    assert r["dags"] or os.path.basename(path) == "model_canary.py", f"{path} defines no DAG"
    assert not r["tensorflow_imported"], f"importing {path} imported tensorflow"
    for dag_id, d in r["dags"].items():  # as the DAG processor stores it (schedules, watchers, params)
        assert d["serialization_error"] is None, (dag_id, d["serialization_error"])
    print(f"{os.path.basename(path)}: {len(r['dags'])} DAG(s) parsed in {r['seconds']:.3f}s")


def test_one_release_dag_per_configured_model(every_file):
    with open(os.path.join(ROOT, "config", "models.yaml")) as fh:
        raw = yaml.safe_load(fh)
    models = raw["models"]
    dags = every_file["files"][RELEASE]["dags"]
    assert sorted(dags) == sorted(f"release__{m}" for m in models)
    for name, cfg in models.items():
        d = dags[f"release__{name}"]
        # a new complete checkpoint starts a run (the checkpoints Asset: the checkpoint relay announces
        # it, no trigger per model: the config's defaults); the cron is a safety net
        assert started_by(d) == expected_start(name, {**raw.get("defaults", {}), **cfg}), name
        assert d["timetable"] == "AssetOrTimeSchedule" and d["assets"][0]["watchers"] == []
        assert d["catchup"] is False and d["max_active_runs"] == 1
        # unpausing (the UI's Trigger does) starts no scheduled run for the daily point just past
        assert d["first_run_in_s"] is not None and d["first_run_in_s"] > -1, d["first_run_in_s"]
        assert {"tfs-release", "release", cfg["task"]} <= set(d["tags"])
        assert name in d["doc_md"] and cfg["checkpoints"] in d["doc_md"]
        assert d["params"] == {"checkpoint": None, "force": False, "dry_run": False, "accept_regression": None,
                               "baseline": "production", "launcher": "docker"}
        assert d["param_schemas"]["baseline"]["enum"] == ["production", "newest_confirmed"]
        assert d["param_schemas"]["launcher"]["enum"] == ["docker", "process"]
        assert d["edges"] == TASK_EDGES
        assert d["task_types"]["is_new"] == "_ShortCircuitDecoratedOperator"
        # chosen at parse time: Airflow's kill path (on_kill) reaches the step
        assert d["task_types"]["export"] == d["task_types"]["validate"] == "StepCommandOperator"
        assert d["outlets"] == {"publish": [cfg["serving"].rstrip("/")]}
        assert d["timeouts"] == DEFAULT_TIMEOUTS and d["dagrun_timeout"] == 4 * 3600
        assert d["pools"]["validate"] == ["tfs_release_serving", 1]
        assert {p for t, (p, _) in d["pools"].items() if t != "validate"} == {"default_pool"}


def test_params_refuse_bad_values_and_accept_good_ones(every_file):
    for dag_id, d in every_file["files"][RELEASE]["dags"].items():
        verdicts = d["refused"]
        bad, good = verdicts[:len(BAD_CONFS)], verdicts[len(BAD_CONFS):]
        assert all(v is not None for v in bad), (dag_id, list(zip(BAD_CONFS, bad)))
        assert good == [None] * len(GOOD_CONFS), (dag_id, list(zip(GOOD_CONFS, good)))


def _models(n: int, tmp_path) -> dict:
    schedules = ["@daily", "*/15 * * * *", None, "@hourly"]
    models = {}
    for i in range(n):
        name = f"model-{i:02d}"
        cfg = {"task": "classification", "checkpoints": f"s3://training/{name}/checkpoints/",
               "serving": f"s3://serving/{name}/", "golden": "demo/golden/shapes-classifier/",
               "experiment": "resnet_imagenet", "input_size": [64, 64]}
        if schedules[i % 4]:
            cfg["schedule"] = schedules[i % 4]
        if i % 4 == 3:
            cfg["trigger"] = "schedule"  # the cron only, as before event-driven releases
        elif i % 5 == 0:
            cfg["checkpoint_poll_s"] = 0  # no watcher: the training job posts the Asset event
        elif i % 5 == 1:
            cfg["checkpoint_poll_s"] = 5
        if i == 1:
            cfg.update(launcher="process", conn_id="s3_other", tags=["team-a"])
        models[name] = cfg
    models["publish-only"] = {"serving": "s3://serving/publish-only/"}  # no checkpoints: no release DAG
    return models


def test_twenty_configured_models_parse(airflow_python, tmp_path):
    models = _models(20, tmp_path)
    config = tmp_path / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": models}))
    r = probe(airflow_python, tmp_path, [RELEASE], config=config)
    f = r["files"][RELEASE]
    assert f["import_errors"] == {} and not f["tensorflow_imported"]
    dags = f["dags"]
    assert sorted(dags) == sorted(f"release__model-{i:02d}" for i in range(20))
    for name, cfg in models.items():
        if "checkpoints" not in cfg:
            continue
        d = dags[f"release__{name}"]
        assert started_by(d) == expected_start(name, cfg), name
        assert d["serialization_error"] is None, (name, d["serialization_error"])
    kinds = {dags[f"release__{m}"]["timetable"] for m in models if m != "publish-only"}
    assert kinds == {"AssetOrTimeSchedule", "AssetTriggeredTimetable", "CronTriggerTimetable"}, kinds
    assert dags["release__model-02"]["assets"][0]["watchers"][0]["kwargs"]["poll_s"] == 5.0
    assert dags["release__model-00"]["assets"][0]["watchers"] == []  # checkpoint_poll_s: 0
    assert dags["release__model-01"]["params"]["launcher"] == "process"
    assert "team-a" in dags["release__model-01"]["tags"]
    assert "s3_other" in dags["release__model-01"]["doc_md"]
    print(f"\n20 models: model_release.py parsed in {f['seconds']:.3f}s (DagBag, in a process that had "
          f"already imported Airflow in {r['airflow_import_s']:.2f}s); subprocess wall {r['wall_s']:.2f}s")


def test_a_broken_config_file_is_an_import_error_that_names_the_problem(airflow_python, tmp_path):
    """Nothing can be known from a file that is not a config: that is an import error (every release
    DAG is gone), and it says what is wrong."""
    config = tmp_path / "models.yaml"
    config.write_text("models: [not, a, mapping]\n")
    r = probe(airflow_python, tmp_path, [RELEASE], config=config)
    errors = r["files"][RELEASE]["import_errors"]
    assert len(errors) == 1 and "top-level 'models:' mapping" in next(iter(errors.values()))


def _good(name: str) -> dict:
    return {"task": "classification", "checkpoints": f"s3://training/{name}/checkpoints/",
            "serving": f"s3://serving/{name}/", "golden": "demo/golden/shapes-classifier/",
            "experiment": "resnet_imagenet", "input_size": [64, 64], "schedule": "@daily"}


def test_one_bad_model_breaks_only_its_own_dag(airflow_python, tmp_path):
    """An invalid entry (here a bad task kind, a removed key, a bad name) gives that model a DAG
    that says what is wrong and cannot release; every other release DAG and model_rollback load
    with no import error (an import error would mark every DAG of the file broken in Airflow)."""
    models = {"good-a": _good("good-a"), "good-b": _good("good-b"),
              "bad-task": {**_good("bad-task"), "task": "detect"},
              "bad-keep": {**_good("bad-keep"), "keep": 3},
              "bad-trigger": {**_good("bad-trigger"), "trigger": "cron"},
              "Bad Name!": _good("x")}
    config = tmp_path / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": models}))
    r = probe(airflow_python, tmp_path, DAG_FILES, config=config)
    for path in DAG_FILES:
        assert r["files"][path]["import_errors"] == {}, (path, r["files"][path]["import_errors"])
    dags = r["files"][RELEASE]["dags"]
    for name in ("good-a", "good-b"):
        d = dags[f"release__{name}"]
        assert d["edges"] == TASK_EDGES and started_by(d) == expected_start(name, _good(name)), name
    bad = {"release__bad-task": "models.bad-task.task is 'detect'",
           "release__bad-keep": "models.bad-keep.keep is not supported",
           "release__bad-trigger": "models.bad-trigger.trigger must be checkpoint-event"}
    [invalid_id] = [d for d in dags if d.startswith("release__invalid-")]
    bad[invalid_id] = "model name 'Bad Name!' is not valid"
    assert sorted(dags) == sorted(["release__good-a", "release__good-b", *bad])
    for dag_id, message in bad.items():
        d = dags[dag_id]
        assert message in d["doc_md"], (dag_id, d["doc_md"])
        assert "config-error" in d["tags"] and d["schedule"] is None and d["is_paused_upon_creation"] is True
        assert list(d["task_types"]) == ["config_error"]  # nothing to release with
    rollback = r["files"][os.path.join(DAGS, "model_rollback.py")]["dags"]["model_rollback"]
    assert rollback["param_schemas"]["model"]["enum"] == ["good-a", "good-b"]
    # version empty: the lifecycle picks the newest confirmed version (production/lifecycle.py)
    assert rollback["params"]["version"] is None and "null" in rollback["param_schemas"]["version"]["type"]
    assert "bad-task" in rollback["doc_md"] and "models.bad-task.task" in rollback["doc_md"]


def test_timeouts_and_pool_come_from_the_config(airflow_python, tmp_path):
    models = {"quick": {**_good("quick"), "timeouts": {"validate": 120, "export": 300, "run": 2400}}}
    config = tmp_path / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": models, "serving_pool": {"name": "serving_slots", "slots": 2}}))
    r = probe(airflow_python, tmp_path, [RELEASE], config=config)
    d = r["files"][RELEASE]["dags"]["release__quick"]
    assert d["timeouts"] == {**DEFAULT_TIMEOUTS, "validate": 120, "export": 300}
    assert d["dagrun_timeout"] == 2400 and d["pools"]["validate"] == ["serving_slots", 1]


def test_worker_image_mode_chooses_docker_operators_at_parse_time(airflow_python, tmp_path):
    out = tmp_path / "probe.json"
    env = airflow_env(tmp_path / "airflow-home", TFS_RELEASE_STEP_IMAGE="tfs-release/worker:test",
                      TFS_RELEASE_STEP_NETWORK="tfsr-net")
    p = subprocess.run([airflow_python, PROBE, str(out), RELEASE], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    f = json.loads(out.read_text())["files"][RELEASE]
    assert f["import_errors"] == {}
    for d in f["dags"].values():
        assert d["task_types"]["export"] == d["task_types"]["validate"] == "StepImageOperator"
        assert d["edges"] == TASK_EDGES and d["pools"]["validate"] == ["tfs_release_serving", 1]


def test_production_approval_and_canary_shape_the_dags(airflow_python, tmp_path):
    """approval -> an approve task before publish; production -> wait_for_rollout (deferrable) and
    confirm_rollout after it; rollout: canary -> offered by model_canary."""
    models = {"prod": {**_good("prod"), "approval": "required", "rollout": "canary",
                       "production": {"endpoints": [{"rest": "http://tfs:8501", "grpc": "tfs:8500"}],
                                      "confirm_deadline_s": 120}},
              "plain": _good("plain")}
    config = tmp_path / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": models}))
    canary = os.path.join(DAGS, "model_canary.py")
    r = probe(airflow_python, tmp_path, [RELEASE, canary], config=config)
    d = r["files"][RELEASE]["dags"]["release__prod"]
    edges = {tuple(e) for e in d["edges"]}
    assert {("validate", "approve"), ("approve", "publish"), ("publish", "wait_for_rollout"),
            ("wait_for_rollout", "confirm_rollout"), ("confirm_rollout", "released"),
            ("released", "clean_staging")} <= edges, edges
    assert d["timeouts"]["confirm_rollout"] == 2 * 120 + 600 and d["timeouts"]["wait_for_rollout"] == 120 + 300
    assert sorted(r["files"][RELEASE]["dags"]["release__plain"]["edges"]) == TASK_EDGES  # no production: as before
    c = r["files"][canary]["dags"]["model_canary"]
    assert c["param_schemas"]["model"]["enum"] == ["prod"] and c["param_schemas"]["action"]["enum"] == ["promote", "abort"]
    # no model with rollout: canary -> no canary DAG (not one whose Model list is empty)
    models["prod"].pop("rollout")
    config.write_text(yaml.safe_dump({"models": models}))
    r = probe(airflow_python, tmp_path, [canary], config=config)
    assert r["files"][canary]["dags"] == {} and not r.get("import_errors"), r


def test_schedules_off_makes_every_release_dag_manual(airflow_python, tmp_path):
    """TFS_RELEASE_SCHEDULES=off: no cron, no checkpoints Asset, no watcher (e.g. a staging stack)."""
    models = {"ev": _good("ev"), "cron": {**_good("cron"), "trigger": "schedule"}}
    config = tmp_path / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": models}))
    out = tmp_path / "probe.json"
    env = airflow_env(tmp_path / "airflow-home", TFS_RELEASE_CONFIG=str(config), TFS_RELEASE_SCHEDULES="off")
    p = subprocess.run([airflow_python, PROBE, str(out), RELEASE], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    dags = json.loads(out.read_text())["files"][RELEASE]["dags"]
    for name in models:
        d = dags[f"release__{name}"]
        assert started_by(d) == {"timetable": "NullTimetable", "cron": None, "assets": []}, name
        assert "manually only" in d["doc_md"]
