"""Event-driven releases against a running `airflow standalone` (scheduler, DAG processor, triggerer,
API server; LocalExecutor, SQLite): nobody triggers anything. The release DAG is scheduled on its
checkpoints Asset; its AssetWatcher's CheckpointTrigger lists the prefix on the triggerer every 2 s.
A second model has no watcher: the checkpoint relay (`tfs-release checkpoint-relay`) announces its
checkpoint through the REST API, and a release run starts.
A checkpoint whose data shard is still missing starts nothing; once the shard lands a release run
starts by itself and publishes version 1. The training job's own event (POST /api/v2/assets/events,
demo/checkpoint_events.py) starts a run too, which finds the checkpoint published and skips.
Real SeaweedFS (only via the aws_default connection), real Docker engine with the stand-in image,
real Model Garden export of the demo classifier."""
from __future__ import annotations

import json
import os
import time
import urllib.parse

import pytest
import yaml

from tests.e2e.conftest import MODEL, airflow_conns
from tests.e2e.test_standalone import _task_states, _versions, _wait_run
from tests.integration.conftest import upload_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"
PREFIX = f"{MODEL}/incoming/"  # empty until the test writes a checkpoint there
RELAYED = "relayed-classifier"


@pytest.fixture(scope="module")
def af(airflow_env):
    """The module's config pointed at an empty checkpoints prefix, watched every 2 s; standalone with
    schedules on (the shared ``standalone`` fixture turns them off)."""
    import services
    cfg = yaml.safe_load(open(airflow_env.config))
    cfg["models"][MODEL].update(checkpoints=f"s3://{airflow_env.training}/{PREFIX}", checkpoint_poll_s=2)
    # a second model left to the checkpoint relay: no watcher on the triggerer (checkpoint_poll_s: 0)
    cfg["models"][RELAYED] = {**cfg["models"][MODEL], "checkpoints": f"s3://{airflow_env.training}/{RELAYED}/ckpt/",
                              "serving": f"s3://{airflow_env.serving}/{RELAYED}/", "checkpoint_poll_s": 0}
    with open(airflow_env.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    t0 = time.monotonic()
    # the watcher starts at the first parse after unpausing: parse often
    a = services.start_airflow(airflow_env.home, config=airflow_env.config, conns=airflow_conns(airflow_env),
                               extra_env={"TFS_RELEASE_SCHEDULES": "on",
                                          "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5"})
    print(f"\nairflow standalone ready in {time.monotonic() - t0:.1f}s at {a.url} (log {a.log})")
    a.test_token = a.token()
    yield a
    a.stop()


def _runs(af) -> list[dict]:
    status, body = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", token=af.test_token)
    assert status == 200, body
    return body["dag_runs"]


def _checkpoint_events(af, uri: str) -> list[dict]:
    status, body = af.api("GET", "/api/v2/assets?" + urllib.parse.urlencode({"uri_pattern": uri}),
                          token=af.test_token)
    assert status == 200, body
    [asset] = [a for a in body["assets"] if a["uri"] == uri]
    deadline = time.monotonic() + 60
    while True:
        status, body = af.api("GET", f"/api/v2/assets/events?asset_id={asset['id']}", token=af.test_token)
        # Airflow answers 500 while a run the event created is queued (start_date NULL; apache/airflow#71360)
        if status != 500 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200, body
    return body["asset_events"]


def _wait_for(what: str, check, timeout: float, af):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f}s; see {af.log}"
        time.sleep(0.5)
    return value


def test_a_complete_checkpoint_starts_a_release_nobody_triggered(af, airflow_env):
    from demo import checkpoint_cache
    from demo.checkpoint_events import post_checkpoint_event
    status, dag = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=af.test_token)
    assert status == 200 and dag["is_paused"] is False, dag

    # the watcher runs on the triggerer once the DAG is unpaused and parsed again: its first listing
    def log():
        return open(af.log, errors="replace").read()
    _wait_for("the checkpoint watcher's first listing on the triggerer", lambda: (
        f"checkpoint watch {MODEL}: no complete checkpoint (the prefix holds no checkpoint)" in log()), 120, af)

    # training writes its checkpoints: everything but the data shards -> incomplete, nothing starts
    folder = checkpoint_cache.get("classification")
    shards = [f for f in os.listdir(folder) if ".data-" in f]
    upload_checkpoints(airflow_env.s3, airflow_env.training, PREFIX, folder, skip=shards)
    _wait_for("the watcher seeing the incomplete checkpoints", lambda: (
        f"checkpoint watch {MODEL}: no complete checkpoint (ckpt-" in log()), 30, af)
    time.sleep(6)  # three more polls
    assert _runs(af) == [], "a checkpoint without its data shard started a run"
    uri = f"s3://{airflow_env.training}/{PREFIX.rstrip('/')}"
    assert _checkpoint_events(af, uri) == []

    # the shards land, the state file's checkpoint first (else the highest complete one is the newest
    # for a moment and is released instead): a release starts by itself
    for f in sorted(shards, key=lambda f: int(f.split(".")[0].rsplit("-", 1)[1]), reverse=True):
        airflow_env.s3.upload_file(os.path.join(folder, f), airflow_env.training, PREFIX + f)
    t0 = time.monotonic()
    [run] = _wait_for("an asset-triggered release run", lambda: _runs(af), 60, af)
    started = time.monotonic() - t0
    assert run["run_type"] == "asset_triggered", run
    [event] = _checkpoint_events(af, uri)
    assert event["extra"]["from_trigger"] is True, event
    payload = event["extra"]["payload"]
    assert payload["source"] == "watcher" and payload["checkpoint"].startswith(f"s3://{airflow_env.training}/{PREFIX}ckpt-")
    text = log()
    assert f"checkpoint watch {MODEL}: new complete checkpoint" in text  # the triggerer's log line
    assert "cannot read the asset state store" not in text and "cannot write the asset state store" not in text
    run = _wait_run(af, DAG_ID, run["dag_run_id"])
    states = _task_states(af, DAG_ID, run["dag_run_id"])
    assert run["state"] == "success" and states["publish"] == "success", (states, af.log)
    assert [v["version"] for v in _versions(airflow_env)] == [1]
    print(f"checkpoint complete -> run created in {started:.1f}s; release run {run['start_date']} .. {run['end_date']}")

    # the training job's own event (REST): one more run, which finds the checkpoint published and skips
    time.sleep(6)  # a watcher that fired twice would have made a second run by now
    assert len(_runs(af)) == 1, _runs(af)
    posted = post_checkpoint_event(af.url, payload["checkpoint"], token=af.test_token)
    assert posted["extra"]["source"] == "training" and posted["extra"]["from_rest_api"] is True, posted
    second = _wait_for("a run from the REST event", lambda: [r for r in _runs(af) if r["dag_run_id"] != run["dag_run_id"]],
                       60, af)[0]
    second = _wait_run(af, DAG_ID, second["dag_run_id"])
    states = _task_states(af, DAG_ID, second["dag_run_id"])
    assert second["state"] == "success" and states["is_new"] == "success", states
    assert states["export"] == "skipped" and states["publish"] == "skipped", states
    assert [v["version"] for v in _versions(airflow_env)] == [1]


def test_the_checkpoint_relay_starts_a_release_of_a_model_without_a_watcher(af, airflow_env, tmp_path):
    """The relay as deployed: the CLI, Airflow's REST API with a token, sweeps every 2 s (the store's
    notifications are tests/integration/registry/test_checkpoint_relay.py's)."""
    import subprocess

    from demo import checkpoint_cache
    from tests.conftest import ROOT
    dag_id = f"release__{RELAYED}"
    status, dag = af.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token=af.test_token)
    assert status == 200 and dag["is_paused"] is False, dag
    assert "checkpoint watch relayed-classifier" not in open(af.log, errors="replace").read()  # no trigger for it
    conn = json.loads(airflow_env.env["AIRFLOW_CONN_AWS_DEFAULT"])
    env = dict(os.environ, AWS_ENDPOINT_URL=conn["extra"]["endpoint_url"], AWS_ACCESS_KEY_ID=conn["login"],
               AWS_SECRET_ACCESS_KEY=conn["password"], AIRFLOW_API_URL=af.url, AIRFLOW_API_TOKEN=af.test_token)
    log = tmp_path / "relay.log"
    relay = subprocess.Popen([os.path.join(ROOT, "bin", "tfs-release"), "checkpoint-relay", "--config", airflow_env.config,
                              "--sweep-interval", "2"], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        _wait_for("the relay's start line", lambda: "checkpoint relay: 1 model(s) in 1 location(s)" in log.read_text(),
                  120, af)
        folder = checkpoint_cache.get("classification")
        upload_checkpoints(airflow_env.s3, airflow_env.training, f"{RELAYED}/ckpt/", folder)
        t0 = time.monotonic()
        runs = _wait_for("a release run from the relay's event", lambda: af.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns", token=af.test_token)[1]["dag_runs"], 60, af)
        print(f"checkpoint uploaded -> relayed run created in {time.monotonic() - t0:.1f}s")
        assert [r["run_type"] for r in runs] == ["asset_triggered"], runs
        [event] = _checkpoint_events(af, f"s3://{airflow_env.training}/{RELAYED}/ckpt")
        extra = event["extra"]
        assert extra["source"] == "relay" and extra["model"] == RELAYED and extra["from_rest_api"] is True, extra
        assert extra["checkpoint"].startswith(f"s3://{airflow_env.training}/{RELAYED}/ckpt/ckpt-"), extra
        time.sleep(5)  # two more sweeps: the checkpoint is announced once
        assert len(_checkpoint_events(af, f"s3://{airflow_env.training}/{RELAYED}/ckpt")) == 1
        text = log.read_text()
        assert "Asset event for" in text and "cannot read back" not in text, text
    finally:
        relay.terminate()
        assert relay.wait(30) == 0, log.read_text()
        # the run's release is not this test's subject: stop it (its tasks are killed)
        for r in af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", token=af.test_token)[1].get("dag_runs", []):
            if r["state"] in ("queued", "running"):
                af.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{r['dag_run_id']}", {"state": "failed"},
                       token=af.test_token)
