"""Release alerts delivered for real: the ReleaseAlert notifier runs in the Airflow venv
(tests/unit/dags/alerts_probe.py, a subprocess) and sends through the Slack-webhook and SMTP
provider notifiers, over TCP, to a real SMTP server (aiosmtpd) and a real HTTP webhook receiver
(demo/alert_sinks.py, started here on 127.0.0.1). With ``report_link: presigned`` the report link is
presigned with the model's Airflow AWS connection against the real SeaweedFS and must open the
uploaded report; by default it is the report endpoint on Airflow's API server (opened for real, behind
the login, in tests/e2e/test_report_link.py). The release DAG's own failure callback (a run that timed
out while ``approve`` waited) is run by Airflow's DAG-processor code and delivers the same way."""
from __future__ import annotations

import email
import json
import os
import subprocess
import urllib.request
import uuid

import pytest

from tests.conftest import ROOT

PROBE = os.path.join(ROOT, "tests", "unit", "dags", "alerts_probe.py")
MODEL = "shapes-classifier"
RUN_ID = "manual__2026-03-04T05:06:07+00:00"
UI = "https://airflow.internal.test"
CHECKS = [
    {"name": "parity: REST serving_default vs exporter", "passed": True, "detail": "ok",
     "numbers": {"max_abs_diff": 1.2e-07, "images": 6, "failed": 0}},
    {"name": "golden: 0004.png", "passed": False, "detail": "label 1 not in top-1 [2]",
     "numbers": {"label": 1, "top_k": [2], "p_label": 0.2871}},
    {"name": "gx: probs between 0 and 1", "passed": False, "detail": "2 unexpected value(s)",
     "numbers": {"rows": 6, "unexpected": 2}},
]


@pytest.fixture(scope="module")
def airflow_python() -> str:
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


@pytest.fixture
def sinks(tmp_path):
    from demo.alert_sinks import AlertSinks
    with AlertSinks(str(tmp_path / "alerts")) as s:
        yield s


@pytest.fixture
def report(seaweedfs):
    """A report in a fresh serving bucket; returns its s3:// uri."""
    from registry.s3 import make_client
    s3 = make_client(endpoint_url=seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key,
                     aws_secret_access_key=seaweedfs.secret_key, region_name="us-east-1")
    bucket = f"serving-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    key = f"{MODEL}/_reports/{RUN_ID}-t1/index.html"
    s3.put_object(Bucket=bucket, Key=key, Body=b"<html><h1>FAILED: 2 check(s)</h1></html>", ContentType="text/html")
    return f"s3://{bucket}/{key}"


def send(airflow_python, tmp_path, sinks, seaweedfs, spec: dict, mode: str = "send", **conn_overrides) -> dict:
    conns = {**sinks.connections(), **conn_overrides}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in conns.items()},
               AIRFLOW_HOME=str(tmp_path / "airflow-home"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__API__BASE_URL=UI,
               AIRFLOW_CONN_AWS_DEFAULT=json.dumps({
                   "conn_type": "aws", "login": seaweedfs.access_key, "password": seaweedfs.secret_key,
                   "extra": {"endpoint_url": seaweedfs.endpoint, "region_name": "us-east-1"}}))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "out.json"
    p = subprocess.run([airflow_python, PROBE, mode, str(tmp_path / "spec.json"), str(out)], env=env,
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(out.read_text())


def failure_spec(report_uri: str, **over) -> dict:
    return {"model": MODEL, "event": "failure", "conn_id": "aws_default",
            "reports_root": report_uri.split("/_reports/")[0] + "/_reports/",
            "alerts": {"slack_conn_id": "slack_alerts", "smtp_conn_id": "smtp_alerts",
                       "email_to": ["ml-oncall@example.com", "lead@example.com"],
                       "email_from": "tfs-release@example.com", "report_link": "presigned"},
            "context": {"dag_id": f"release__{MODEL}", "run_id": RUN_ID, "task_id": "validate", "try_number": 1,
                        "exception": "tfs-release validate failed (exit 1, a check failed): 2 check(s) failed; "
                                     "{{ raw braces }} stay as sent",
                        "xcom": {"newest_checkpoint|return_value": {"uri": "s3://training/m/checkpoints/ckpt-42",
                                                                    "step": 42, "published_as": None},
                                 "validate|verdict": {"passed": False, "checks": CHECKS, "report": report_uri}}},
            **over}


def test_failure_alert_reaches_smtp_and_webhook_with_the_same_text(airflow_python, tmp_path, sinks, seaweedfs,
                                                                   report):
    r = send(airflow_python, tmp_path, sinks, seaweedfs, failure_spec(report))
    assert r["raised"] is None
    assert sinks.wait(mails=1, webhooks=1, timeout=15), r["logs"]
    [mail], [hook] = sinks.mails, sinks.webhooks

    assert hook.path == "/services/" + sinks.connections()["slack_alerts"]["password"]
    assert hook.payload["unfurl_links"] is False
    text = hook.payload["text"]
    assert mail.text == text
    assert mail.subject == f"[tfs-release] {MODEL}: release FAILED at validate: 2 absolute check(s) failed (golden, gx)"
    assert mail.mail_from == "tfs-release@example.com"
    assert sorted(mail.rcpt_tos) == ["lead@example.com", "ml-oncall@example.com"]
    # multipart/alternative: the same text as text/plain (mail filters, terminals) and as HTML
    assert email.message_from_bytes(mail.raw).get_content_type() == "multipart/alternative"
    assert mail.plain is not None and mail.plain == text and "<pre" in mail.html

    lines = text.splitlines()
    assert lines[:7] == [
        mail.subject,
        f"model:       {MODEL}",
        "checkpoint:  s3://training/m/checkpoints/ckpt-42 (step 42)",
        "failed task: validate (try 1)",
        "cause:       2 absolute check(s) failed (golden, gx)",
        "reason:      tfs-release validate failed (exit 1, a check failed): 2 check(s) failed; "
        "{{ raw braces }} stay as sent",
        "production:  nothing was published; production serves what it served before",
    ]
    assert [ln for ln in lines if ln.startswith("next:")] == [
        "next:        the report shows each failed image with the model's answer; a better checkpoint is "
        "released when it lands",
        f"next:        to validate it again (e.g. after a fix): trigger release__{MODEL} with "
        "checkpoint=s3://training/m/checkpoints/ckpt-42 and force=true"]
    assert lines[9:12] == [
        "failed checks (2 of 3):",
        "  - golden: 0004.png: label 1 not in top-1 [2] [label=1, top_k=[2], p_label=0.2871]",
        "  - gx: probs between 0 and 1: 2 unexpected value(s) [rows=6, unexpected=2]",
    ]
    assert lines[13] == f"airflow run: {UI}/dags/release__{MODEL}/runs/manual__2026-03-04T05%3A06%3A07%2B00%3A00"
    assert lines[12].startswith(f"report:      {seaweedfs.endpoint}/")
    link = lines[12].split(None, 1)[1]
    assert "X-Amz-Signature=" in link and seaweedfs.secret_key not in text
    with urllib.request.urlopen(link, timeout=10) as resp:  # the presigned link opens the real report
        assert resp.status == 200 and b"FAILED: 2 check(s)" in resp.read()
    assert os.path.exists(mail.path) and json.load(open(hook.file))["payload"]["text"] == text
    assert any("sent via slack (slack_alerts), e-mail (smtp_alerts)" in ln for ln in r["logs"])


def test_a_broken_channel_is_logged_and_the_other_still_delivers(airflow_python, tmp_path, sinks, seaweedfs,
                                                                 report):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    broken_slack = {**sinks.connections()["slack_alerts"], "host": f"http://127.0.0.1:{dead}/services"}
    r = send(airflow_python, tmp_path, sinks, seaweedfs, failure_spec(report), slack_alerts=broken_slack)
    assert r["raised"] is None  # the notifier never raises: the task's own failure stays the failure
    assert sinks.wait(mails=1, timeout=15)
    assert sinks.webhooks == [] and len(sinks.mails) == 1
    assert any(ln.startswith("ERROR alert for shapes-classifier via slack (slack_alerts) failed:") for ln in r["logs"])
    assert any("sent via e-mail (smtp_alerts); FAILED via slack (slack_alerts)" in ln for ln in r["logs"])


def test_success_alert_announces_the_published_version(airflow_python, tmp_path, sinks, seaweedfs, report):
    spec = failure_spec(report, event="success")
    spec["alerts"] = {"slack_conn_id": "slack_alerts", "on_success": True}
    spec["context"].update(task_id="publish", exception=None, xcom={
        "newest_checkpoint|return_value": {"uri": "s3://training/m/checkpoints/ckpt-42", "step": 42},
        "validate|return_value": {"passed": True, "checks": CHECKS[:1], "report": report},
        "publish|return_value": {"version": 12}})
    r = send(airflow_python, tmp_path, sinks, seaweedfs, spec)
    assert r["raised"] is None and sinks.wait(webhooks=1, timeout=15)
    text = sinks.webhooks[0].payload["text"]
    assert text.startswith(f"[tfs-release] {MODEL}: version 12 published\n")
    assert "version:     12" in text and "checks:      all 1 passed" in text and "failed" not in text
    assert sinks.mails == []  # no smtp_conn_id configured: Slack only
    # no report_link key: the link is the report endpoint on the API server, names only
    run = RUN_ID.replace(":", "%3A").replace("+", "%2B")
    assert f"report:      {UI}/tfs-release/reports/{MODEL}/{run}-t1/index.html" in text.splitlines(), text
    assert "X-Amz-" not in text and seaweedfs.access_key not in text


def test_a_run_that_timed_out_awaiting_approval_alerts_once_through_the_dags_callback(
        airflow_python, tmp_path, sinks, seaweedfs):
    """The release DAG's own on_failure_callback (RunFailureAlert), run by Airflow's DAG-processor code
    for a dagrun_timeout while ``approve`` waited for input (no task callback fires then: Airflow marks
    the unfinished tasks skipped): one message on both real receivers, saying so."""
    import yaml
    cfg = tmp_path / "config" / "models.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump({"models": {MODEL: {
        "task": "classification", "checkpoints": f"s3://training/{MODEL}/checkpoints/",
        "serving": f"s3://serving/{MODEL}/", "golden": "demo/golden/shapes-classifier/",
        "experiment": "resnet_imagenet", "input_size": [64, 64], "approval": "required",
        "alerts": {"slack_conn_id": "slack_alerts", "smtp_conn_id": "smtp_alerts",
                   "email_to": ["ml-oncall@example.com"], "email_from": "tfs-release@example.com"}}}}))
    spec = {"config": str(cfg), "dag_file": os.path.join(ROOT, "dags", "model_release.py"),
            "dag_id": f"release__{MODEL}", "run_id": RUN_ID, "reason": "timed_out", "task_id": "approve",
            "try_number": 1, "send": True,
            "xcom": {"newest_checkpoint|return_value": {"uri": "s3://training/m/checkpoints/ckpt-42", "step": 42},
                     "validate|return_value": {"passed": True, "checks": CHECKS[:1], "report": None}}}
    r = send(airflow_python, tmp_path, sinks, seaweedfs, spec, mode="dag-callback")
    assert r["callbacks"] == [["RunFailureAlert", 14400.0]]
    assert sinks.wait(mails=1, webhooks=1, timeout=15), r["logs"]
    [mail], [hook] = sinks.mails, sinks.webhooks
    text = hook.payload["text"]
    assert mail.text == text and mail.plain == text
    assert mail.subject == f"[tfs-release] {MODEL}: release run TIMED OUT at approve (awaiting input); nothing published"
    assert sorted(mail.rcpt_tos) == ["ml-oncall@example.com"]
    lines = text.splitlines()
    assert lines[:6] == [
        mail.subject,
        f"model:       {MODEL}",
        "checkpoint:  s3://training/m/checkpoints/ckpt-42 (step 42)",
        "run:         timed out: the run's timeout (timeouts.run, 14400s) passed; Airflow skipped the unfinished tasks",
        "waiting:     approve (try 1): awaiting input (Approve / Reject), no decision yet",
        "published:   nothing (the run ended before publish)",
    ]
    assert lines[-1] == f"airflow run: {UI}/dags/release__{MODEL}/runs/manual__2026-03-04T05%3A06%3A07%2B00%3A00"
    assert any("sent via slack (slack_alerts), e-mail (smtp_alerts)" in ln for ln in r["logs"])
