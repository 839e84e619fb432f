"""A model whose config says `approval: required`, against one running `airflow standalone`: the
release run waits before publish for a human decision (Airflow's human-in-the-loop
ApprovalOperator), in this order:

- approved from the Airflow UI in a real browser (Debian chromium, headless, Selenium): a release
  run is triggered over REST and waits in its ``approve`` task (state awaiting_input). In the
  browser: log in, Browse -> Required Actions, the run's ``approve`` row -> the task instance's
  Required Actions tab (the request: subject, body with the verdict, a Comment field), type a
  comment, click Approve. Then over REST: the decision is recorded with the UI user, ``approve``
  and ``publish`` succeeded, the run succeeded (and its page in the UI says so), and version 1's
  manifest carries the approver and the comment typed in the browser. Screenshots of each step go
  to the test's tmp_path (paths printed);
- a decision over the REST API approves a forced re-release (publish goes on; the approver and
  comment land in version 2's manifest) or rejects the next one (the run ends failed, nothing is
  published, the task says who and why).

Real SeaweedFS (only via the aws_default connection), real Docker engine with the stand-in serving
image, real Model Garden export; the tests share the module's Airflow (one start) and buckets."""
from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest
import yaml

from tests.e2e.browser import is_png, ui_session
from tests.e2e.conftest import MODEL
from tests.e2e.test_standalone import _stuck, _task_states, _trigger, _versions, _wait_run

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"
TASKS = {"newest_checkpoint", "is_new", "export", "validate", "approve", "publish", "clean_staging"}


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


def _decided(af, run_id: str, option: str, comment: str) -> None:
    status, body = _decide(af, run_id, option, comment)
    assert status == 200 and body["chosen_options"] == [option], (status, body)


def _answer(af, run_id: str, respond, timeout: float = 600) -> list[int]:
    """Answer each request of the run's ``approve`` with ``respond(try_number)`` until the task is
    decided; returns the tries answered. More than one when Airflow lost a decision: Airflow 3.3
    marks a task resumed before the scheduler saw it park as failed, and approve's retry asks again
    (dags/model_release.py); seen here when an answer came within a second of the request."""
    answered, deadline = [], time.monotonic() + timeout
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/approve"
    while True:
        status, ti = af.api("GET", path, token=af.test_token)
        assert status == 200, ti
        if ti["state"] in ("success", "failed", "upstream_failed", "skipped"):
            if len(answered) > 1:
                print(f"run {run_id}: Airflow lost a decision; approve's retry asked again (tries {answered})")
            return answered
        if ti["state"] == "awaiting_input" and ti["try_number"] not in answered:
            time.sleep(3)  # a person takes a moment; an instant answer only makes the race likelier
            respond(ti["try_number"])
            answered.append(ti["try_number"])
        if time.monotonic() > deadline:
            raise AssertionError(f"approve of {run_id} undecided after {timeout:.0f}s (answered tries {answered})\n"
                                 + _stuck(af, DAG_ID, run_id))
        time.sleep(1)


@pytest.fixture
def ui(chromium, af, tmp_path):
    with ui_session(chromium, af.url, tmp_path) as ui:
        yield ui


def test_approve_from_the_ui_publishes_with_the_comment(ui, af, approval_env):
    run_id = f"browser-approval-{uuid.uuid4().hex[:8]}"
    comment = f"approved in the browser ({run_id})"
    t0 = time.monotonic()
    status, dag = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=af.test_token)
    assert status == 200, dag
    status, run = af.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                         {"dag_run_id": run_id, "logical_date": None, "conf": {}}, token=af.test_token)
    assert status == 200, run
    _wait_awaiting(af, run_id)
    t_wait = time.monotonic()
    assert _versions(approval_env) == []  # it waits: nothing published yet
    hitl = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/approve/-1/hitlDetails"
    status, detail = af.api("GET", hitl, token=af.test_token)
    assert status == 200, detail
    # the request's form fields: without a task-level "comment" param the UI shows no Comment box
    assert list(detail["params"]) == ["comment"] and detail["response_received"] is False, detail
    # the request links the report on this Airflow (its report endpoint), not an s3:// path
    assert f"- report: {af.url}/tfs-release/reports/{MODEL}/" in detail["body"], detail["body"]
    assert "s3://" not in detail["body"].split("- report:")[1], detail["body"]

    shots = []

    def respond_in_the_browser(try_number: int) -> None:
        try:
            if not shots:
                ui.login(af.username, af.password)
                shots.append(ui.screenshot("01-logged-in.png"))
            ui.open_required_actions()
            shots.append(ui.screenshot(f"02-required-actions-try{try_number}.png"))
            ui.open_required_action(DAG_ID, run_id, "approve")
            shots.append(ui.screenshot(f"03-request-try{try_number}.png"))
            ui.fill_param("comment", comment)
            shots.append(ui.screenshot(f"04-comment-typed-try{try_number}.png"))
            ui.respond("Approve")
            shots.append(ui.screenshot(f"05-responded-try{try_number}.png"))
        except Exception:
            ui.dump("failure")
            raise

    answered = _answer(af, run_id, respond_in_the_browser)
    t_ui = time.monotonic()

    # what Airflow recorded: the decision from the UI, with the UI's user
    status, detail = af.api("GET", hitl, token=af.test_token)
    assert status == 200, detail
    assert detail["response_received"] is True and detail["chosen_options"] == ["Approve"], detail
    assert detail["params_input"] == {"comment": comment}, detail
    assert (detail.get("responded_by_user") or {}).get("name") == af.username, detail

    run = _wait_run(af, DAG_ID, run_id, timeout=300)  # ~6 s: the trigger sees the decision within 5 s
    states = _task_states(af, DAG_ID, run_id)
    print(f"trigger -> awaiting_input {t_wait - t0:.1f}s; UI login -> approved {t_ui - t_wait:.1f}s "
          f"(tries answered {answered}); "
          f"approved -> run {run['state']} {time.monotonic() - t_ui:.1f}s; tasks {states}")
    assert run["state"] == "success", (states, af.log)
    assert states["approve"] == "success" and states["publish"] == "success", states
    try:  # and the UI's run page agrees
        ui.driver.get(f"{af.url}/dags/{DAG_ID}/runs/{run_id}")
        ui_tasks = ui.wait_tasks_settled(TASKS)
        shots.append(ui.screenshot("06-run-succeeded.png"))
    except Exception:
        ui.dump("failure-run-page")
        raise
    assert ui_tasks == {t: "Success" for t in TASKS}, ui_tasks

    [v] = _versions(approval_env)
    assert v["version"] == 1, v
    m = json.loads(approval_env.s3.get_object(Bucket=approval_env.serving,
                                              Key=f"{MODEL}/_manifests/{v['version']}.json")["Body"].read())
    approval = m["validation"]["approval"]
    assert approval["comment"] == comment, approval
    assert approval["approved_by"] == af.username, approval
    for shot in shots:
        assert is_png(shot), f"{shot} is not a non-empty PNG"


def test_approved_over_rest_publishes_with_the_approver_rejected_fails(af, approval_env):
    status, dag = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=af.test_token)
    assert status == 200, dag
    assert [v["version"] for v in _versions(approval_env)] == [1], "runs after the browser's approval"
    status, run = _trigger(af, DAG_ID, {"force": True})  # the checkpoint is already version 1
    assert status == 200, run
    run_id = run["dag_run_id"]
    _wait_awaiting(af, run_id)
    time.sleep(2)
    assert _task_states(af, DAG_ID, run_id)["publish"] in (None, "scheduled", "queued", "none")  # it waits
    assert [v["version"] for v in _versions(approval_env)] == [1]
    _answer(af, run_id, lambda _try: _decided(af, run_id, "Approve", "golden set reviewed (TICKET-11)"))
    run = _wait_run(af, DAG_ID, run_id)
    assert run["state"] == "success", (_task_states(af, DAG_ID, run_id), af.log)
    [_, v] = _versions(approval_env)
    assert v["version"] == 2, v
    m = json.loads(approval_env.s3.get_object(Bucket=approval_env.serving,
                                              Key=f"{MODEL}/_manifests/{v['version']}.json")["Body"].read())
    assert m["validation"]["approval"]["comment"] == "golden set reviewed (TICKET-11)"
    assert m["validation"]["approval"]["approved_by"], m["validation"]

    status, run = _trigger(af, DAG_ID, {"force": True})
    assert status == 200, run
    run_id = run["dag_run_id"]
    _wait_awaiting(af, run_id)
    answered = _answer(af, run_id, lambda _try: _decided(af, run_id, "Reject", "wait for the new golden set"))
    run = _wait_run(af, DAG_ID, run_id)
    states = _task_states(af, DAG_ID, run_id)
    assert run["state"] == "failed" and states["approve"] == "failed", states  # a rejection is not green
    # a rejection is final (no retry asks again) and its log ends in one line with who and why
    rq = urllib.parse.quote(run_id)
    status, ti = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{rq}/taskInstances/approve", token=af.test_token)
    assert status == 200 and ti["try_number"] == answered[-1], (ti, answered)
    status, log = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{rq}/taskInstances/approve/logs/{ti['try_number']}",
                         token=af.test_token)
    assert status == 200, log
    events = log["content"]
    exited = [e for e in events if e.get("event") == "Task exited"]
    assert exited and "rejected by" in str(exited[-1].get("exit_code")), events[-12:]
    assert "wait for the new golden set" in str(exited[-1].get("exit_code")), exited
    assert not any(e.get("event") == "Task failed with exception" or "Traceback" in json.dumps(e)
                   for e in events), events[-12:]
    assert states["publish"] in ("upstream_failed", "skipped"), states
    assert [x["version"] for x in _versions(approval_env)] == [1, 2]  # nothing published
