"""The main job as a newcomer runs it: demo/run_demo.py (what `make demo` runs after `make services`)
against this session's SeaweedFS and the Docker engine, with the demo models this session trained
(under CI they are trained from nothing in every run: tests/conftest.py), in a demo folder of its own.

Real parts: SeaweedFS over HTTP, the Docker engine running the stand-in serving image, Model Garden
training + export, Airflow 3 (`airflow dags test`, SQLite), local SMTP and webhook receivers.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(2400)]


def test_demo_publishes_three_models_blocks_a_regression_skips_alerts_and_confirms(s3_env, docker_engine, standin_image, trained, chromium, tmp_path):
    for kind in ("classification", "segmentation", "detection"):
        trained(kind)  # passed their golden sets (the demo would train them the same way)
    demo_dir = tmp_path / "demo"
    env = {**os.environ, **s3_env, "PYTHONPATH": ROOT, "TFS_RELEASE_DEMO_DIR": str(demo_dir)}
    p = subprocess.run([sys.executable, os.path.join(ROOT, "demo", "run_demo.py")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    out = p.stdout
    print(out[-6000:])
    assert p.returncode == 0, f"demo exit {p.returncode}\n{out[-4000:]}\n{p.stderr[-4000:]}"
    assert "Demo done: every expected outcome happened." in out
    summary = out[out.index("== summary"):]
    for name in ("shapes-classifier", "shapes-segmenter", "shapes-detector"):
        row = next(line for line in summary.splitlines() if line.split()[:2] == [name, "release"])
        assert re.search(r"PASSED\s+v1 \(new\)", row), row
    assert re.search(r"shapes-classifier\s+again, nothing new\s+\S+\s+skipped", summary), summary
    earlier = next(line for line in summary.splitlines() if "earlier ckpt-" in line)
    assert "BLOCKED by the regression gate" in earlier and "none (nothing published)" in earlier, earlier
    assert "the absolute checks (golden images, floors, parity): all passed" in out  # only the gate blocks it
    for name in ("shapes-classifier", "shapes-segmenter", "shapes-detector"):
        assert re.search(rf"{name} v1: confirmed \(http://127\.0\.0\.1:\d+ AVAILABLE after [\d.]+s; smoke: 16 "
                         r"golden images over REST, gRPC: answers as in validation\)", out), name
    broken = next(line for line in summary.splitlines() if "broken ckpt-" in line)
    assert "FAILED" in broken and "none (nothing published)" in broken, broken
    alerts = os.listdir(demo_dir / "alerts")
    assert any(f.endswith(".eml") for f in alerts) and any(f.endswith(".json") for f in alerts), alerts
    # the broken checkpoint's alert: its primary cause, and links that open on `make airflow` (port 8080)
    texts = [json.load(open(demo_dir / "alerts" / f))["payload"]["text"] for f in sorted(alerts) if f.endswith(".json")]
    broken_alert = next(t for t in texts if "looks untrained" in t.splitlines()[0])
    assert "\nairflow run: http://127.0.0.1:8080/dags/release__" in broken_alert, broken_alert
    assert "\nreport:      http://127.0.0.1:8080/tfs-release/reports/" in broken_alert, broken_alert
    for name in ("shapes-classifier", "shapes-segmenter", "shapes-detector"):
        assert (demo_dir / "model_base_path" / name / "1" / "saved_model.pb").exists()
    assert "== time per phase" in out

    # `make airflow` opens the demo's own Airflow home: the UI/API show the demo's runs
    import services
    # with the demo's S3 connection, as `make airflow` starts it: the report endpoint reads through it
    af = services.start_airflow(str(demo_dir / "airflow"), config=str(demo_dir / "config" / "models.yaml"),
                                conns={"aws_default": services.aws_connection(s3_env)})
    try:
        status, body = af.api("GET", "/api/v2/dags/release__shapes-classifier/dagRuns?limit=20")
        assert status == 200, body
        states = sorted(r["state"] for r in body["dag_runs"])
        assert states == ["failed", "success", "success"], states
        # each run's note says what it did (the listener ran in `airflow dags test` too)
        notes = sorted((r["state"], r["note"] or "") for r in body["dag_runs"])
        assert notes[0][1].startswith("release FAILED at validate"), notes
        assert re.fullmatch(r"nothing new: ckpt-\d+ is already v1", notes[1][1]) or \
            re.fullmatch(r"nothing new: ckpt-\d+ is already v1", notes[2][1]), notes
        assert any(re.fullmatch(r"published v1 \(ckpt-\d+\)", n) for _, n in notes), notes
        status, body = af.api("GET", "/api/v2/dags/release__shapes-detector/dagRuns")
        assert status == 200 and sorted(r["state"] for r in body["dag_runs"]) == ["failed", "success"], body
        # every task that ran in the demo has its log in the UI (`airflow dags test` writes none: the
        # demo writes them where Airflow's log reader looks), the failed task's with its reason
        token, seen = af.token(), 0
        for dag_id in ("release__shapes-classifier", "release__shapes-detector"):
            _, runs = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", token=token)
            for run in runs["dag_runs"]:
                rq = urllib.parse.quote(run["dag_run_id"], safe="")
                _, tis = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rq}/taskInstances", token=token)
                for ti in tis["task_instances"]:
                    if ti["state"] in ("skipped", "upstream_failed", None):
                        continue
                    status, log = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rq}/taskInstances/"
                                                f"{ti['task_id']}/logs/{ti['try_number']}", token=token)
                    text = "\n".join(str(e.get("event", "")) for e in log.get("content", []))
                    where = (dag_id, run["dag_run_id"], ti["task_id"], ti["state"])
                    assert status == 200 and f"starting task_id={ti['task_id']} " in text, (where, text[-2000:])
                    assert "log file not found" not in text.lower(), (where, text[-2000:])
                    if ti["state"] == "failed":
                        # an expected outcome (a check said no) ends in one line with the reason,
                        # not in a traceback
                        exited = [e for e in log["content"] if str(e.get("event", "")).startswith("Task exited")]
                        assert exited and exited[-1].get("level") == "error", (where, text[-2000:])
                        assert "a check failed" in exited[-1]["event"], exited
                        assert "Traceback" not in text, (where, text[-3000:])
                    seen += 1
        assert seen >= 20, seen
        # in a browser, as on-call after `make airflow`: the failed run's page shows its reason, and
        # its validate task shows its log
        from tests.e2e.browser import is_png, ui_session
        [failed] = [r for r in body_runs(af, "release__shapes-classifier", token) if r["state"] == "failed"]
        page = f"{af.url}/dags/release__shapes-classifier/runs/{urllib.parse.quote(failed['dag_run_id'], safe='')}"
        with ui_session(chromium, af.url, tmp_path) as ui:
            try:
                ui.login(af.username, af.password)
                ui.driver.get(page)
                ui.wait_text(failed["note"][:60], timeout=60)
                shots = [ui.screenshot("01-failed-run-says-why.png")]
                ui.driver.get(f"{page}/tasks/validate")
                ui.wait_text("starting task_id=validate", timeout=60)
                shots.append(ui.screenshot("02-validate-log.png"))
            except Exception:
                ui.dump("failure")
                raise
        assert all(is_png(p) for p in shots)
        # the closing summary's report links open on this Airflow (behind its login)
        links = re.findall(r"http://127\.0\.0\.1:8080(/tfs-release/reports/\S+)", out[out.index("== validation reports"):])
        assert len(links) >= 4, out[out.index("== validation reports"):]
        req = urllib.request.Request(af.url + links[0], headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200 and b"<html" in resp.read(2000).lower(), links[0]
    finally:
        af.stop()


def body_runs(af, dag_id: str, token: str) -> list[dict]:
    status, body = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", token=token)
    assert status == 200, body
    return body["dag_runs"]
