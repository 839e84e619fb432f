"""demo/alert_sinks.py on its own: the CLI mode (`python demo/alert_sinks.py --dir D`, as `make airflow`
runs it) prints its ports and Airflow connections as JSON, receives real SMTP (smtplib) and webhook
POSTs (urllib) on 127.0.0.1, writes them to D, refuses what Slack would refuse, and stops on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import EmailMessage

import pytest

from tests.conftest import ROOT


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_for(path, pattern_count, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(os.listdir(path)) >= pattern_count:
            return
        time.sleep(0.05)
    raise AssertionError(f"only {os.listdir(path)} in {path}")


@pytest.fixture
def sinks_process(tmp_path):
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "demo", "alert_sinks.py"), "--dir", str(tmp_path / "a")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        info = json.loads(p.stdout.readline())
        yield p, info
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_cli_receives_mail_and_webhooks_and_stops_on_sigterm(sinks_process):
    p, info = sinks_process
    folder = info["dir"]
    env = {k: json.loads(v) for k, v in info["env"].items()}
    assert set(env) == {"AIRFLOW_CONN_SLACK_ALERTS", "AIRFLOW_CONN_SMTP_ALERTS"}
    smtp = env["AIRFLOW_CONN_SMTP_ALERTS"]
    assert (smtp["conn_type"], smtp["host"], smtp["port"]) == ("smtp", "127.0.0.1", info["smtp_port"])
    assert smtp["extra"]["disable_ssl"] is True and smtp["extra"]["disable_tls"] is True
    slack = env["AIRFLOW_CONN_SLACK_ALERTS"]
    assert slack["conn_type"] == "slackwebhook"
    # the Slack webhook hook's rule: host (with a scheme) + "/" + password
    assert slack["host"].rstrip("/") + "/" + slack["password"] == info["webhook_url"]

    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "release FAILED", "bot@example.com", "oncall@example.com"
    msg.set_content("<pre>model: m &amp; co</pre>", subtype="html")
    with smtplib.SMTP("127.0.0.1", info["smtp_port"], timeout=10) as s:
        s.send_message(msg)
    assert _post(info["webhook_url"], json.dumps({"text": "hello"}).encode()) == (200, b"ok")
    assert _post(info["webhook_url"].rsplit("/", 1)[0] + "/wrong", b'{"text": "x"}')[0] == 404
    assert _post(info["webhook_url"], b"not json")[0] == 400
    _wait_for(folder, 2)

    assert sorted(os.listdir(folder)) == ["mail-0001.eml", "webhook-0001.json"]
    with open(os.path.join(folder, "webhook-0001.json")) as fh:
        assert json.load(fh)["payload"] == {"text": "hello"}
    with open(os.path.join(folder, "mail-0001.eml"), "rb") as fh:
        raw = fh.read()
    assert b"Subject: release FAILED" in raw and b"model: m &amp; co" in raw

    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=15) == 0
    assert "1 mail(s), 1 webhook(s) received" in p.stderr.read()


def test_in_process_api_decodes_html_mail_to_the_sent_text(tmp_path):
    sys.path.insert(0, ROOT)
    from demo.alert_sinks import AlertSinks
    with AlertSinks(str(tmp_path / "b")) as sinks:
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = "s", "bot@example.com", "a@example.com"
        msg.set_content('<pre>a &lt;b&gt; <a href="https://r/x?a=1&amp;b=2">https://r/x?a=1&amp;b=2</a></pre>',
                        subtype="html")
        with smtplib.SMTP("127.0.0.1", sinks.smtp_port, timeout=10) as s:
            s.send_message(msg)
        assert sinks.wait(mails=1, timeout=10)
        assert not sinks.wait(webhooks=1, timeout=0.2)
    [mail] = sinks.mails
    assert mail.text.strip() == "a <b> https://r/x?a=1&b=2"
    assert (mail.mail_from, mail.rcpt_tos, mail.subject) == ("bot@example.com", ["a@example.com"], "s")


def test_wait_about_a_model_counts_only_its_alerts(tmp_path):
    """The demo releases two models side by side: a wait for one model's alert is not met by the other's."""
    import urllib.request
    sys.path.insert(0, ROOT)
    from demo.alert_sinks import AlertSinks
    with AlertSinks(str(tmp_path / "b")) as sinks:
        def post(text):
            req = urllib.request.Request(sinks.webhook_url, data=json.dumps({"text": text}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()

        post("[tfs-release] shapes-segmenter: release FAILED at validate")
        assert sinks.wait(webhooks=1, timeout=10)
        assert not sinks.wait(webhooks=1, timeout=0.2, about="shapes-detector")
        post("[tfs-release] shapes-detector: release BLOCKED by the regression gate")
        assert sinks.wait(webhooks=1, timeout=10, about="shapes-detector")
        assert [w.payload["text"] for w in sinks.about("shapes-detector")[1]] == [
            "[tfs-release] shapes-detector: release BLOCKED by the regression gate"]
        assert len(sinks.about(None)[1]) == 2
