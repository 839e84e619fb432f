"""A model whose config says `approval: required`, against a running `airflow standalone`: the release
run waits before publish for a human decision (Airflow's human-in-the-loop ApprovalOperator); a
decision over the REST API approves it (publish goes on; the approver and comment land in the
manifest) or rejects it (the run ends failed, nothing is published, the task says who and why)."""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest
import yaml

from tests.e2e.conftest import MODEL
from tests.e2e.test_standalone import _task_states, _trigger, _versions, _wait_run

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"


@pytest.fixture(scope="module")
def approval_env(airflow_env):
    cfg = yaml.safe_load(open(airflow_env.config))
    cfg["models"][MODEL].update(approval="required", approval_timeout_s=900)
    with open(airflow_env.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return airflow_env


@pytest.fixture(scope="module")
def af(approval_env, standalone):
    return standalone


def _wait_awaiting(af, run_id: str, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = _task_states(af, DAG_ID, run_id).get("approve")
        if state in ("awaiting_input", "deferred"):
            return state
        assert state not in ("failed", "upstream_failed", "success"), (state, _task_states(af, DAG_ID, run_id))
        assert time.monotonic() < deadline, f"approve still {state} after {timeout}s; see {af.log}"
        time.sleep(3)


def _decide(af, run_id: str, option: str, comment: str):
    path = (f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/approve/-1/hitlDetails")
    return af.api("PATCH", path, {"chosen_options": [option], "params_input": {"comment": comment}},
                  token=af.test_token)


def test_approved_over_rest_publishes_with_the_approver_rejected_fails(af, approval_env):
    status, dag = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=af.test_token)
    assert status == 200, dag
    status, run = _trigger(af, DAG_ID, {})
    assert status == 200, run
    run_id = run["dag_run_id"]
    _wait_awaiting(af, run_id)
    time.sleep(2)
    assert _task_states(af, DAG_ID, run_id)["publish"] in (None, "scheduled", "queued", "none")  # it waits
    assert _versions(approval_env) == []
    status, body = _decide(af, run_id, "Approve", "golden set reviewed (TICKET-11)")
    assert status == 200, body
    assert body["chosen_options"] == ["Approve"]
    run = _wait_run(af, DAG_ID, run_id)
    assert run["state"] == "success", (_task_states(af, DAG_ID, run_id), af.log)
    [v] = _versions(approval_env)
    m = json.loads(approval_env.s3.get_object(Bucket=approval_env.serving,
                                              Key=f"{MODEL}/_manifests/{v['version']}.json")["Body"].read())
    assert m["validation"]["approval"]["comment"] == "golden set reviewed (TICKET-11)"
    assert m["validation"]["approval"]["approved_by"], m["validation"]

    status, run = _trigger(af, DAG_ID, {"force": True})
    assert status == 200, run
    run_id = run["dag_run_id"]
    _wait_awaiting(af, run_id)
    status, body = _decide(af, run_id, "Reject", "wait for the new golden set")
    assert status == 200, body
    run = _wait_run(af, DAG_ID, run_id)
    states = _task_states(af, DAG_ID, run_id)
    assert run["state"] == "failed" and states["approve"] == "failed", states  # a rejection is not green
    assert states["publish"] in ("upstream_failed", "skipped"), states
    assert [x["version"] for x in _versions(approval_env)] == [v["version"]]  # nothing published
