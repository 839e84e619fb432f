"""The checkpoint watcher's trigger (plugins/tfs_release_airflow/checkpoint_watch.py) as the triggerer
runs it: ``CheckpointTrigger.run()`` in the Airflow venv (checkpoint_trigger_probe.py, a subprocess)
against the real SeaweedFS through the ``aws_default`` connection, while checkpoints are written like
training writes them. Under a real triggerer: tests/e2e/test_checkpoint_event.py."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tests.conftest import ROOT

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoint_trigger_probe.py")


@pytest.fixture(scope="module")
def airflow_python() -> str:
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


def test_fires_once_per_new_complete_checkpoint_and_survives_restarts(airflow_python, seaweedfs, s3, tmp_path):
    training, serving = f"training-{uuid.uuid4().hex[:10]}", f"serving-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=training)
    s3.create_bucket(Bucket=serving)
    conn = {"conn_type": "aws", "login": seaweedfs.access_key, "password": seaweedfs.secret_key,
            "extra": {"endpoint_url": seaweedfs.endpoint, "region_name": "us-east-1"}}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn))
    out = tmp_path / "out.json"
    p = subprocess.run([airflow_python, PROBE, str(out), training, "m/checkpoints/", f"s3://{serving}/m/"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(out.read_text())
    ck = f"s3://{training}/m/checkpoints/ckpt-"
    assert r["while_writing"] == [], r  # an index without all its shards never fires
    [ev] = r["complete"]
    assert (ev["checkpoint"], ev["step"], ev["source"], ev["model"]) == (ck + "1", 1, "watcher", "m")
    assert r["after"] == [] and r["state"]["fingerprint"] == ev["fingerprint"], r
    assert r["restart_with_state"] == [], r
    assert [e["checkpoint"] for e in r["two_close"]] == [ck + "3"], r  # one event, for the newest
    assert [e["checkpoint"] for e in r["restart_without_state"]] == [ck + "3"], r  # not published yet
    assert r["bad_bucket_events"] == [] and r["bad_bucket_still_running"] is True, r
    logs = p.stdout + p.stderr
    assert "poll failed" in logs and "retrying in" in logs, logs[-3000:]
