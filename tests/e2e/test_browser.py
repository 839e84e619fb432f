"""The Airflow UI in a real browser (Debian chromium, headless, Selenium) against a running
`airflow standalone`: log in through the simple auth manager's form, open the release DAG from the
Dags list, unpause it with its toggle, trigger it from the trigger form with **Dry run** switched on
(and a run id of our own), watch the run page until it shows Success. Then over REST: the run's
conf has ``dry_run: true`` (set from the form), validate succeeded, publish was skipped, and no
version was published. Screenshots go to the test's tmp_path (paths printed).

Real SeaweedFS (only via the aws_default connection), real Docker engine with the stand-in serving
image, real Model Garden export. This module has its own buckets and Airflow home (module-scoped
``airflow_env``), so it does not interfere with test_standalone.py.
"""
from __future__ import annotations

import os
import time
import urllib.parse
import uuid

import pytest

from tests.e2e.browser import find_chromium, is_png, ui_session
from tests.e2e.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"
RUN_TIMEOUT = 900
TASKS = {"newest_checkpoint", "is_new", "export", "validate", "publish", "clean_staging"}


@pytest.fixture(scope="module")
def chromium():
    """(chromium, chromedriver); missing: skip, or fail when CI=true (like the Docker engine)."""
    found = find_chromium()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no headless browser: {found}")
        pytest.skip(f"no headless browser: {found}")
    return found


@pytest.fixture
def ui(chromium, standalone, tmp_path):
    with ui_session(chromium, standalone.url, tmp_path) as ui:
        yield ui


def _versions(airflow_env):
    from registry.s3 import S3Uri
    from registry.versions import list_versions
    return list_versions(airflow_env.s3, S3Uri.parse(f"s3://{airflow_env.serving}/{MODEL}/"))


def test_trigger_dry_run_from_the_ui_form_and_see_it_succeed(ui, standalone, airflow_env):
    af = standalone
    run_id = f"browser-dry-run-{uuid.uuid4().hex[:8]}"
    shots = []
    t0 = time.monotonic()
    try:
        ui.login(af.username, af.password)
        shots.append(ui.screenshot("01-logged-in.png"))

        ui.open_dag(DAG_ID)
        was_paused = ui.unpause()
        shots.append(ui.screenshot("02-dag-page-unpaused.png"))
        status, dag = af.api("GET", f"/api/v2/dags/{DAG_ID}", token=af.test_token)
        assert status == 200 and dag["is_paused"] is False, (was_paused, dag)

        ui.open_trigger_form(DAG_ID)
        ui.set_boolean_param("dry_run", True)
        shots.append(ui.screenshot("03-trigger-form-dry-run.png"))
        ui.open_advanced_options()
        ui.set_run_id(run_id)
        conf_text = ui.conf_json_text()
        assert '"dry_run": true' in conf_text, conf_text  # the form wrote the param into the conf
        shots.append(ui.screenshot("04-trigger-form-run-id-and-conf.png"))

        ui.submit_trigger(DAG_ID, run_id)
        t_trigger = time.monotonic()
        state, seen = ui.wait_run_finished(run_id, timeout=RUN_TIMEOUT)
        ui_tasks = ui.wait_tasks_settled(TASKS) if state == "Success" else ui.task_states()
        shots.append(ui.screenshot("05-run-succeeded.png"))
    except Exception:
        ui.dump("failure")
        raise
    print(f"UI: login to trigger {t_trigger - t0:.1f}s; run watched {time.monotonic() - t_trigger:.1f}s "
          f"(badge states {seen}); tasks in the UI {ui_tasks}")

    # what the UI showed
    assert state == "Success", (seen, ui_tasks, af.log)
    assert ui_tasks == {**{t: "Success" for t in TASKS}, "publish": "Skipped"}, ui_tasks

    # what Airflow recorded (REST)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}"
    status, run = af.api("GET", path, token=af.test_token)
    assert status == 200, run
    assert run["state"] == "success" and run["run_type"] == "manual", run
    assert run["conf"]["dry_run"] is True, run["conf"]
    assert run["conf"]["launcher"] == "docker" and run["conf"]["force"] is False, run["conf"]
    status, body = af.api("GET", f"{path}/taskInstances", token=af.test_token)
    assert status == 200, body
    states = {ti["task_id"]: ti["state"] for ti in body["task_instances"]}
    assert states["export"] == "success" and states["validate"] == "success", states
    assert states == {**{t: "success" for t in TASKS}, "publish": "skipped"}, states

    # a dry run publishes nothing
    assert _versions(airflow_env) == []

    for shot in shots:
        assert is_png(shot), f"{shot} is not a non-empty PNG"
