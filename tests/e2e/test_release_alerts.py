"""A broken checkpoint through `airflow dags test release__shapes-classifier`: validation fails,
nothing is published, and the release alert reaches a real SMTP server (aiosmtpd) and a real
webhook receiver (demo/alert_sinks.py, in this process on 127.0.0.1) through the Slack and SMTP
provider notifiers, with the Airflow connections pointing at them.

Real parts: SeaweedFS (S3 settings only from the Airflow connection), the Docker engine running the
stand-in serving image, a Model Garden export of a random-weight checkpoint of the demo classifier
(demo/broken_checkpoint.py), Airflow 3 with SQLite in a temp home (its own buckets and home: this
module's ``airflow_env`` is not the one test_release_dag.py uses).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"
UI = "http://airflow.internal.test:8080"             # [api] base_url: only used to build links
REPORTS = "https://reports.internal.test/s3"         # report_base_url: a proxy over the bucket
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "extra_links_probe.py")


@pytest.fixture(scope="module")
def sinks(tmp_path_factory):
    from demo.alert_sinks import AlertSinks
    with AlertSinks(str(tmp_path_factory.mktemp("alerts"))) as s:
        yield s


@pytest.fixture(scope="module")
def broken(airflow_env, sinks, tmp_path_factory):
    """A random-weight checkpoint becomes the newest one; alerts go to the local receivers."""
    from demo import checkpoint_cache
    af = airflow_env
    trained = checkpoint_cache.get("classification")
    step = max(int(m.group(1)) for f in os.listdir(trained) if (m := re.match(r"ckpt-(\d+)\.index$", f))) + 1
    out = tmp_path_factory.mktemp("broken")
    t0 = time.monotonic()
    subprocess.run([sys.executable, os.path.join(ROOT, "demo", "broken_checkpoint.py"), "--kind", "classification",
                    "--out", str(out), "--step", str(step)], check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600)
    prefix = f"{MODEL}/checkpoints/"
    for f in sorted(os.listdir(out)):
        if f.startswith(f"ckpt-{step}."):
            af.s3.upload_file(str(out / f), af.training, prefix + f)
    af.s3.put_object(Bucket=af.training, Key=prefix + "checkpoint",
                     Body=f'model_checkpoint_path: "ckpt-{step}"\n'.encode())
    print(f"\nbroken checkpoint ckpt-{step} written and uploaded in {time.monotonic() - t0:.1f}s")

    with open(af.config) as fh:
        cfg = yaml.safe_load(fh)
    cfg["models"][MODEL].update(
        alerts={"slack_conn_id": sinks.slack_conn_id, "smtp_conn_id": sinks.smtp_conn_id,
                "email_to": ["ml-oncall@example.com", "release-bot@example.com"],
                "email_from": "tfs-release@example.com"},
        report_base_url=REPORTS)
    with open(af.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    af.env.update(sinks.connection_env(), AIRFLOW__API__BASE_URL=UI)
    return f"s3://{af.training}/{prefix}ckpt-{step}"


def test_a_broken_checkpoint_fails_validation_publishes_nothing_and_alerts_once(airflow_env, sinks, broken):
    from registry.s3 import S3Uri
    from registry.versions import list_versions
    af = airflow_env

    p, run = af.dags_test(DAG_ID)
    print(f"\nrelease run of the broken checkpoint: {p.seconds:.1f}s")
    assert run["state"] == "failed", (run, p.stdout[-4000:], p.stderr[-4000:])
    release = {"newest_checkpoint": "success", "is_new": "success", "export": "success",
               "validate": "failed", "publish": "upstream_failed"}
    assert {t: run["tasks"].get(t) for t in release} == release, run
    assert [t for t, s in run["tasks"].items() if s == "failed"] == ["validate"], run  # e.g. clean-up ran fine
    assert list_versions(af.s3, S3Uri.parse(f"s3://{af.serving}/{MODEL}/")) == []
    assert af.asset_events(f"s3://{af.serving}/{MODEL}") == []
    verdict = af.xcom(DAG_ID, run["run_id"], "validate", key="verdict")
    assert verdict["passed"] is False and verdict["checkpoint"] == broken

    # exactly one alert per channel for the failed run (callbacks are on every task; only one failed)
    assert sinks.wait(mails=1, webhooks=1, timeout=30), (len(sinks.mails), len(sinks.webhooks))
    time.sleep(1.0)
    assert (len(sinks.mails), len(sinks.webhooks)) == (1, 1)
    [mail], [hook] = sinks.mails, sinks.webhooks
    text = hook.payload["text"]
    assert mail.text == text                      # the same message in both channels
    # the primary cause: a random-weight model is "untrained", not a threshold question
    assert re.fullmatch(rf"\[tfs-release\] {MODEL}: release FAILED at validate: the checkpoint looks untrained "
                        r"\(\d+ of \d+ golden images wrong(, accuracy 0?\.\d+)?\)", mail.subject), mail.subject
    assert sorted(mail.rcpt_tos) == ["ml-oncall@example.com", "release-bot@example.com"]
    assert mail.mail_from == "tfs-release@example.com"
    assert os.path.getsize(mail.path) > 0 and os.path.getsize(hook.file) > 0

    lines = text.splitlines()
    assert f"model:       {MODEL}" in lines
    assert any(ln.startswith(f"checkpoint:  {broken} (step ") for ln in lines), text
    assert "failed task: validate (try 1)" in lines
    assert lines[lines.index("failed task: validate (try 1)") + 1] == "cause:       " + mail.subject.split(": ", 2)[2]
    assert "production:  nothing was published; production serves no version of this model yet" in lines, text
    assert any(ln.startswith(f"next:        check the training job that wrote {broken} ") for ln in lines), text
    assert any(ln.startswith("reason:      tfs-release validate failed (exit 1, a check failed)") for ln in lines)
    failed = [c for c in verdict["checks"] if not c["passed"]]
    assert f"failed checks ({len(failed)} of {len(verdict['checks'])}):" in lines
    golden = [ln for ln in lines if re.match(r"  - golden: \S+\.png: label \d+ \([^)]+\) not in top-1 \[\d+ \([^)]+\)\] "
                                             r"\[label=\d+, top_k=\[\d+\], p_label=0?\.\d+\]$", ln)]
    assert golden, text                           # a failed check with its numbers
    report_key = verdict["report"].split(f"s3://{af.serving}/", 1)[1]
    assert af.s3.head_object(Bucket=af.serving, Key=report_key)["ContentLength"] > 0
    link = f"{REPORTS}/{af.serving}/{report_key}"
    assert f"report:      {link}" in lines
    assert f"airflow run: {UI}/dags/{DAG_ID}/runs/{quote(run['run_id'], safe='')}" in lines
    assert af.env_secret not in text and af.env_secret not in mail.raw.decode(errors="replace")

    # the validate task's extra link: computed at task end into XCom, read the way the REST API does
    assert af.xcom(DAG_ID, run["run_id"], "validate", key="_link_ReportLink") == link
    q = subprocess.run([os.path.join(os.path.dirname(af.airflow), "python"), PROBE, DAG_ID, run["run_id"],
                        "validate"], env=af.env, cwd=af.home, capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr[-3000:]
    links = json.loads(q.stdout.strip().splitlines()[-1])
    assert links["extra_links"] == {"Validation report": link}, links
