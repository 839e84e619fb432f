"""Against a running `airflow standalone` (API server, scheduler, DAG processor, triggerer;
LocalExecutor, SQLite) on 127.0.0.1: trigger the release DAG over the REST API with params (a bad
param is refused with 400), the run succeeds and its Asset event exists; the rollback DAG makes an
earlier version the highest. Real SeaweedFS (only via the aws_default connection), real Docker
engine with the stand-in serving image, real Model Garden export.
"""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from tests.e2e.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"


def _wait_run(af, dag_id: str, run_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, run = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}",
                             token=af.test_token)
        assert status == 200, run
        if run["state"] in ("success", "failed"):
            return run
        assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run['state']} after {timeout}s; see {af.log}"
        time.sleep(3)


def _task_states(af, dag_id: str, run_id: str) -> dict[str, str]:
    status, body = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances",
                          token=af.test_token)
    assert status == 200, body
    return {ti["task_id"]: ti["state"] for ti in body["task_instances"]}


def _trigger(af, dag_id: str, conf: dict) -> tuple[int, dict]:
    return af.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf},
                  token=af.test_token)


def _asset_events(af, dag_id: str, run_id: str) -> list[dict]:
    query = urllib.parse.urlencode({"source_dag_id": dag_id, "source_run_id": run_id})
    status, body = af.api("GET", f"/api/v2/assets/events?{query}", token=af.test_token)
    assert status == 200, body
    return body["asset_events"]


def _versions(airflow_env):
    from registry.s3 import S3Uri
    from registry.versions import list_versions
    return list_versions(airflow_env.s3, S3Uri.parse(f"s3://{airflow_env.serving}/{MODEL}/"))


def test_rest_trigger_with_params_publishes_and_emits_the_asset_event(standalone, airflow_env):
    af = standalone
    status, dag = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=af.test_token)
    assert status == 200 and dag["is_paused"] is False, dag

    status, body = _trigger(af, DAG_ID, {"launcher": "kubernetes"})
    assert status == 400, body
    assert "launcher" in json.dumps(body) and "kubernetes" in json.dumps(body)
    status, body = _trigger(af, DAG_ID, {"force": "yes"})
    assert status == 400, body

    t0 = time.monotonic()
    status, run = _trigger(af, DAG_ID, {"launcher": "docker", "force": False, "dry_run": False})
    assert status == 200, run
    assert run["conf"]["launcher"] == "docker"
    run = _wait_run(af, DAG_ID, run["dag_run_id"])
    print(f"release run over REST: {time.monotonic() - t0:.1f}s")
    states = _task_states(af, DAG_ID, run["dag_run_id"])
    assert run["state"] == "success", (states, af.log)
    assert states["publish"] == "success" and states["validate"] == "success"
    assert [v["version"] for v in _versions(airflow_env)] == [1]

    [event] = _asset_events(af, DAG_ID, run["dag_run_id"])
    assert event["uri"] == f"s3://{airflow_env.serving}/{MODEL}"
    assert event["extra"]["version"] == 1 and event["extra"]["model"] == MODEL


def test_rollback_dag_makes_an_earlier_version_the_highest(standalone, airflow_env, tmp_path):
    """Version 1 (from the REST run above) and a second version; roll back to 1 -> version 3 is a
    copy of 1 (same files), recorded as rollback_of 1, and is what TF Serving will serve."""
    from registry.publish import publish
    from registry.s3 import S3Uri
    from registry.staging import stage
    from tests.integration.registry.conftest import make_saved_model
    af = standalone
    serving = S3Uri.parse(f"s3://{airflow_env.serving}/{MODEL}/")
    assert [v["version"] for v in _versions(airflow_env)] == [1], "runs after the REST release test"
    cand = stage(airflow_env.s3, serving, make_saved_model(tmp_path / "v2", seed=2), run_id="other-model")
    assert publish(airflow_env.s3, serving, MODEL, cand, allow_unvalidated=True).version == 2

    status, dag = af.api("PATCH", "/api/v2/dags/model_rollback", {"is_paused": False}, token=af.test_token)
    assert status == 200, dag
    status, body = _trigger(af, "model_rollback", {"model": "no-such-model", "version": 1})
    assert status == 400, body
    status, body = _trigger(af, "model_rollback", {"model": MODEL, "version": 0})
    assert status == 400, body

    status, run = _trigger(af, "model_rollback", {"model": MODEL, "version": 1, "reason": "v2 regressed"})
    assert status == 200, run
    run = _wait_run(af, "model_rollback", run["dag_run_id"], timeout=300)
    assert run["state"] == "success", (_task_states(af, "model_rollback", run["dag_run_id"]), af.log)

    versions = _versions(airflow_env)
    assert [v["version"] for v in versions] == [1, 2, 3]
    v1, v3 = versions[0], versions[2]
    assert v3["rollback_of"] == 1
    assert v3["checkpoint"] == v1["checkpoint"] and v3["bytes"] == v1["bytes"] and v3["files"] == v1["files"]
    [event] = _asset_events(af, "model_rollback", run["dag_run_id"])
    assert event["uri"] == f"s3://{airflow_env.serving}/{MODEL}"
    assert event["extra"]["version"] == 3 and event["extra"]["rollback_of"] == 1

    # a version that is not published: the run fails with the reason, nothing new is published
    status, run = _trigger(af, "model_rollback", {"model": MODEL, "version": 9})
    assert status == 200, run
    run = _wait_run(af, "model_rollback", run["dag_run_id"], timeout=300)
    assert run["state"] == "failed"
    assert [v["version"] for v in _versions(airflow_env)] == [1, 2, 3]
