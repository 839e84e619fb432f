"""The release DAG ends only when production serves the new version: `airflow dags test` with a
production loop beside it (a `tfs-release sync` sidecar process filling a model_base_path that a
TF-Serving stand-in process serves). `wait_for_rollout` defers (the trigger runs inline under
`dags test`, on the triggerer in a deployment), `confirm_rollout` smoke-tests production and writes
the rollout record. With the sync sidecar stopped, the new version never arrives: the rollout times
out, the previous version is published again, and the run fails with that said."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"


@pytest.fixture(scope="module")
def production(airflow_env, seaweedfs, tmp_path_factory):
    from serving.launchers import ProcessLauncher
    af = airflow_env
    dest = tmp_path_factory.mktemp("production")
    env = {**os.environ, "PYTHONPATH": ROOT, "AWS_ENDPOINT_URL": seaweedfs.endpoint,
           "AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
           "AWS_REGION": "us-east-1"}
    state = {"sync": None, "server": None}

    def start_sync():
        state["sync"] = subprocess.Popen(
            [sys.executable, "-m", "cli", "sync", MODEL, "--dest", str(dest / MODEL), "--interval", "1",
             "--trusted-key", af.signing[1],  # serves only what the DAG (publish, confirm's rollback) signed
             "--config", af.config], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=open(dest / "sync.log", "a"))

    def stop_sync():
        state["sync"].terminate()
        state["sync"].wait(10)

    (dest / MODEL).mkdir()
    # TF Serving serves the folder; it starts before any version exists (it waits for one)
    state["server"] = ProcessLauncher().start(str(dest), MODEL)
    server = state["server"]
    cfg = yaml.safe_load(open(af.config))
    cfg["models"][MODEL]["production"] = {
        "endpoints": [{"rest": f"http://{server.host}:{server.rest_port}", "grpc": f"{server.host}:{server.grpc_port}"}],
        "confirm_deadline_s": 90}
    with open(af.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    start_sync()
    af.start_sync, af.stop_sync, af.sync_env = start_sync, stop_sync, env
    yield af
    if state["sync"].poll() is None:
        stop_sync()
    server.stop()


def _record(af, n):
    import json
    return json.loads(af.s3.get_object(Bucket=af.serving, Key=f"{MODEL}/_rollouts/{n}.json")["Body"].read())


def test_release_waits_for_production_then_a_stuck_sync_is_rolled_back(production):
    af = production
    p, run = af.dags_test(DAG_ID)
    assert run["state"] == "success", (run, p.stdout[-3000:], p.stderr[-3000:])
    assert run["tasks"]["wait_for_rollout"] == "success" and run["tasks"]["confirm_rollout"] == "success", run
    waited = af.xcom(DAG_ID, run["run_id"], "wait_for_rollout")
    assert waited["outcome"] == "served" and waited["endpoints"][0]["state"] == "AVAILABLE", waited
    rec = _record(af, 1)
    assert rec["outcome"] == "confirmed" and rec["smoke"][0]["passed"], rec
    # the Asset event comes once production serves it, with the rollout record
    uri = f"s3://{af.serving}/{MODEL}"
    [event] = [e for e in af.asset_events(uri) if e["run_id"] == run["run_id"]]
    assert event["extra"]["version"] == 1 and event["extra"]["rollout"] == "confirmed", event
    assert event["extra"]["rollout_record"].endswith(f"{MODEL}/_rollouts/1.json")

    # the sync sidecar stops; the checkpoint is released again (force): version 2 never reaches production
    af.stop_sync()
    cfg = yaml.safe_load(open(af.config))
    cfg["models"][MODEL]["production"]["confirm_deadline_s"] = 15
    with open(af.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    p, run = af.dags_test(DAG_ID, {"force": True})
    assert run["state"] == "failed" and run["tasks"]["publish"] == "success", run
    assert run["tasks"]["wait_for_rollout"] == "success" and run["tasks"]["confirm_rollout"] == "failed", run
    assert run["tasks"]["released"] == "upstream_failed"
    assert [e for e in af.asset_events(uri) if e["run_id"] == run["run_id"]] == []  # nothing newly served
    rec = _record(af, 2)
    assert rec["outcome"] == "rolled back" and rec["rollback_to"] == 1 and rec["rollback_version"] == 3, rec
    assert "version 2 NOT_FOUND" in rec["reason"] or "version 2 UNKNOWN" in rec["reason"], rec["reason"]
    out = p.stdout + p.stderr
    assert "rollout of shapes-classifier version 2 failed" in out
    # the rollback copy is signed (the confirm step got the key from the signing connection), and a
    # replica that serves only what that key signed serves it
    import json
    m3 = json.loads(af.s3.get_object(Bucket=af.serving, Key=f"{MODEL}/_manifests/3.json")["Body"].read())
    assert m3["rollback_of"] == 1 and m3["signed_by"]["key_id"] == af.signing[2], m3.get("signed_by")
    dest = os.path.dirname(af.config) + "/replica"
    p = subprocess.run([sys.executable, "-m", "cli", "sync", MODEL, "--dest", dest, "--once", "--json", "--keep", "1",
                        "--trusted-key", af.signing[1], "--config", af.config], cwd=ROOT, env=af.sync_env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["versions"] == [3], p.stderr[-2000:]
