"""Rollout confirmation against a real production loop: the sync sidecar (`tfs-release sync`, a
process) fills a model_base_path that a TF-Serving stand-in process serves (latest policy, polling).

A validated version is confirmed (every endpoint AVAILABLE, smoke answers as in validation); a
version production cannot load (it needs an op TF Serving's binary lacks) is rolled back: the last
good version is published again as N+1, production loads that, and both records say so."""
import json
import os
import subprocess
import sys

import pytest

from registry.s3 import S3Uri
from tests.conftest import ROOT

from . import candidates

pytestmark = pytest.mark.docker


def _stage(env, s3, tmp_path, module, tag):
    sm = candidates.save(module, str(tmp_path / f"sm-{tag}"))
    return candidates.stage_candidate(s3, S3Uri(env.serving, f"{env.name}/"), sm, env.golden, str(tmp_path))


@pytest.fixture
def production(gate_env, tmp_path, s3):
    """A sync sidecar (interval 1 s) into tmp_path/prod/<model>, served by a stand-in process; the
    model's config names it as its production endpoint."""
    import yaml
    from validation.launchers import ProcessLauncher
    dest = tmp_path / "prod"
    (dest / gate_env.name).mkdir(parents=True)
    env = {**os.environ, **gate_env.env, "PYTHONPATH": ROOT}
    sync = subprocess.Popen([sys.executable, "-m", "cli", "sync", gate_env.name, "--dest", str(dest / gate_env.name),
                             "--interval", "1", "--config", gate_env.config], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sync.log", "w"))
    server = None
    try:
        def start():  # TF Serving starts once its model has a version
            nonlocal server
            server = ProcessLauncher().start(str(dest), gate_env.name)
            url = f"http://{server.host}:{server.rest_port}"
            cfg = yaml.safe_load(open(gate_env.config))
            cfg["models"][gate_env.name]["production"] = {
                "endpoints": [{"rest": url, "grpc": f"{server.host}:{server.grpc_port}"}], "confirm_deadline_s": 60}
            with open(gate_env.config, "w") as fh:
                yaml.safe_dump(cfg, fh)
            return server
        gate_env.start_production = start
        yield gate_env
    finally:
        sync.terminate()
        sync.wait(10)
        if server is not None:
            server.stop()


def test_confirmed_then_unloadable_version_is_rolled_back(production, s3, tmp_path, standin_image):
    env = production
    v1 = _stage(env, s3, tmp_path, candidates.classifier_module(), "v1")
    p = env.cli("validate", env.name, "--candidate", v1, "--image", standin_image, "--json", timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    env.cli("publish", env.name, "--candidate", v1, check=0)
    env.start_production()
    p = env.cli("confirm", env.name, "--version", "1", "--poll", "0.5", "--json", timeout=300)
    rec = json.loads(p.stdout)
    assert p.returncode == 0 and rec["outcome"] == "confirmed", rec
    assert rec["endpoints"][0]["state"] == "AVAILABLE" and rec["smoke"][0]["passed"], rec
    assert "answers as in validation" in rec["smoke"][0]["detail"]
    # a version production's TF Serving cannot load: EagerPyFunc is not in the serving binary
    bad = _stage(env, s3, tmp_path, candidates.classifier_module(py_op=True), "v2")
    assert json.loads(env.cli("publish", env.name, "--candidate", bad, "--unvalidated", "--json",
                              check=0).stdout)["version"] == 2
    p = env.cli("confirm", env.name, "--version", "2", "--poll", "0.5", "--json", timeout=300)
    rec = json.loads(p.stdout)
    assert p.returncode == 1 and rec["outcome"] == "rolled back", rec
    assert "version 2 END" in rec["reason"] and "PyFunc" in rec["reason"], rec["reason"]
    assert rec["rollback_to"] == 1 and rec["rollback_version"] == 3
    assert rec["rollback"]["outcome"] == "confirmed", rec["rollback"]
    # the records, the manifest of the rollback and `versions` agree
    vs = {v["version"]: v for v in json.loads(env.cli("versions", env.name, "--json", check=0).stdout)["versions"]}
    assert (vs[1]["rollout"], vs[2]["rollout"], vs[3]["rollout"]) == ("confirmed", "rolled back", "confirmed")
    assert vs[3]["rollback_of"] == 1
    from registry import layout
    m3 = json.loads(s3.get_object(Bucket=env.serving, Key=layout.manifest_key(S3Uri(env.serving, f"{env.name}/"), 3))["Body"].read())
    assert m3["rollback_reason"].startswith("rollout of version 2 failed: ")
    # production serves the rollback (a copy of 1), never the bad version
    from validation.rollout import status_once
    ep = rec["endpoints"][0]["endpoint"]
    assert status_once({"rest": ep}, env.name, 3)["state"] == "AVAILABLE"
    assert status_once({"rest": ep}, env.name, 2)["state"] == "END"
