"""The rollback DAG on a canary model makes production serve the good version again, end to end:
a `rollout: canary` model in the Airflow env's buckets, a production loop beside it (the
`tfs-release sync-all --once` sidecar writing TF Serving's model config file with `specific`
versions and `version_labels`, and a TF-Serving stand-in process reading it every second).

v1 is published (stable) and confirmed, v2 published (canary), loaded, confirmed and promoted:
stable = 2, v1 unloaded. Then `airflow dags test model_rollback` with no version (the newest
confirmed stable-material version: v1) and a reason moves `stable` back to 1 (no copy is published);
two sidecar rounds later production's stable label names v1 and answers like v1. v2's rollout
record says rolled back. Running the DAG again changes nothing. (rollout: all, where a rollback
publishes a copy as N+1, is covered by tests/e2e/test_rollout_dag.py and the lifecycle's own tests.)"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from registry.s3 import S3Uri
from tests.conftest import ROOT
from tests.integration.registry.test_canary import Server
from tests.integration.validation import candidates

# airflow_env (tests/e2e/conftest.py) builds the stand-in image: it needs the Docker engine
pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = "model_rollback"
CANARY = "canary-cls"
GOLDEN = os.path.join(ROOT, "demo", "golden", "shapes-classifier")
REASON = "v2 error rate up after promote (INC-42)"


class Prod:
    """The canary model's registry, its sync sidecar rounds and its production server."""

    def __init__(self, af, seaweedfs, tmp):
        self.af, self.tmp = af, tmp
        self.root = tmp / "models"
        self.config_file = self.root / "models.config"
        self.env = {**os.environ, **seaweedfs.env(), "PYTHONPATH": ROOT}
        self.serving = S3Uri(af.serving, f"{CANARY}/")
        self.server = None

    def cli(self, *args, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args, "--config", self.af.config], capture_output=True,
                              text=True, env=self.env, cwd=ROOT, timeout=timeout)

    def cli_json(self, *args):
        p = self.cli(*args, "--json")
        assert p.returncode == 0, f"tfs-release {' '.join(args)}: exit {p.returncode}\n{p.stderr[-3000:]}"
        return json.loads(p.stdout)

    def publish(self, weight: float, tag: str) -> dict:
        sm = candidates.save(candidates.classifier_module(weight=weight), str(self.tmp / f"sm-{tag}"))
        cand = candidates.stage_candidate(self.af.s3, self.serving, sm, GOLDEN, str(self.tmp))
        return self.cli_json("publish", CANARY, "--candidate", cand, "--unvalidated")

    def sync(self) -> dict:
        url = self.server.url if self.server else "http://127.0.0.1:9"
        return self.cli_json("sync-all", "--root", str(self.root), "--models", CANARY, "--serving-url", url, "--once")

    def sync_until(self, cond, what: str, timeout: float = 60):
        """Sidecar rounds (a label moves only once its version is loaded) until production says ``cond``."""
        deadline = time.monotonic() + timeout
        while True:
            self.sync()
            t = time.monotonic() + 3  # the server re-reads the file every second
            while time.monotonic() < t:
                if cond():
                    return
                assert self.server.proc.poll() is None, f"the server exited waiting for {what}"
                time.sleep(0.3)
            assert time.monotonic() < deadline, f"timed out waiting for {what}; config:\n" + \
                self.config_file.read_text()

    def labels(self) -> dict:
        return json.loads(self.af.s3.get_object(Bucket=self.af.serving, Key=f"{CANARY}/_labels.json")["Body"].read())

    def versions(self) -> list[dict]:
        return self.cli_json("versions", CANARY)["versions"]


def _why(p: subprocess.CompletedProcess) -> str:
    """The task's exception from `airflow dags test` output (its last lines: the traceback's end)."""
    lines = (p.stdout + p.stderr).splitlines()
    errors = [ln for ln in lines if re.match(r"(\w+\.)*[A-Z]\w+: ", ln) or "Task failed" in ln]
    return "\n".join(errors[-5:]) or "\n".join(lines[-40:])


@pytest.fixture(scope="module")
def prod(airflow_env, seaweedfs, tmp_path_factory):
    af = airflow_env
    pr = Prod(af, seaweedfs, tmp_path_factory.mktemp("rollback-canary"))
    cfg = yaml.safe_load(open(af.config))
    cfg["models"][CANARY] = {"task": "classification", "serving": f"s3://{af.serving}/{CANARY}/", "golden": GOLDEN,
                             "input_types": {"serving_default": "image_tensor"}, "rollout": "canary"}
    with open(af.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    assert pr.publish(1.0, "v1")["labels"]["stable"] == 1
    pr.sync()  # the config file exists before TF Serving starts on it
    pr.server = Server(str(pr.config_file), pr.tmp / "server.log")
    cfg["models"][CANARY]["production"] = {"endpoints": [{"rest": pr.server.url}], "confirm_deadline_s": 60}
    with open(af.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    yield pr
    pr.server.stop()


def test_rollback_dag_moves_stable_back_on_a_canary_model(prod):
    pr, af, srv = prod, prod.af, prod.server
    x = np.full((1, 8, 8, 3), 200, dtype=np.uint8)
    x[..., 0] = 10  # the weight decides the answer: v1 (weight 1) and v2 (weight 2) differ

    # v1: stable, served and confirmed (as stable: what a rollback may return to)
    srv.wait(lambda: srv.label(CANARY, "stable") == 1, "stable -> 1")
    v1 = srv.predict(f"/v1/models/{CANARY}/labels/stable", x)
    rec = pr.cli_json("confirm", CANARY, "--version", "1", "--poll", "0.5")
    assert rec["outcome"] == "confirmed" and rec["label"] == "stable", rec

    # v2: the canary, loaded beside v1, confirmed, promoted: stable = 2, v1 unloaded
    labels = pr.publish(2.0, "v2")["labels"]
    assert (labels["stable"], labels["canary"]) == (1, 2), labels
    pr.sync_until(lambda: srv.label(CANARY, "canary") == 2, "canary -> 2")
    v2 = srv.predict(f"/v1/models/{CANARY}/labels/canary", x)
    assert not np.allclose(v1, v2)
    rec = pr.cli_json("confirm", CANARY, "--version", "2", "--poll", "0.5")
    assert rec["outcome"] == "confirmed" and rec["label"] == "canary", rec
    assert pr.cli_json("promote", CANARY, "--reason", "canary healthy")["stable"] == 2
    pr.sync_until(lambda: srv.label(CANARY, "stable") == 2 and srv.states(CANARY).get(1) == "END",
                  "stable -> 2, v1 unloaded")
    assert np.allclose(srv.predict(f"/v1/models/{CANARY}/labels/stable", x), v2)

    # the rollback DAG, no version named: the newest confirmed stable version, v1
    p, run = af.dags_test(DAG_ID, {"model": CANARY, "reason": REASON})
    assert run["state"] == "success", f"{run}\n{_why(p)}"
    out = af.xcom(DAG_ID, run["run_id"], "rollback")
    assert out["served"] == 1 and out["rollback_of"] == 1 and out["already"] is False, out
    assert out["rolled_back"] == [2] and out["labels"] == {"stable": 1, "canary": None}, out
    assert out["reason"] == REASON and not out.get("copy"), out
    [event] = [e for e in af.asset_events(f"s3://{af.serving}/{CANARY}") if e["run_id"] == run["run_id"]]
    assert event["extra"]["version"] == 1 and event["extra"]["already"] is False, event

    lab = pr.labels()
    assert (lab["stable"], lab["canary"]) == (1, None), lab
    assert lab["history"][-1]["action"] == "rollback" and lab["history"][-1]["reason"] == REASON, lab["history"]
    vs = {v["version"]: v for v in pr.versions()}
    assert sorted(vs) == [1, 2], vs  # no copy published
    assert vs[2]["rollout"] == "rolled back" and vs[1]["rollout"] == "confirmed", vs

    # two sidecar rounds: v1 loaded again, then stable moves to it; production answers like v1
    pr.sync_until(lambda: srv.label(CANARY, "stable") == 1, "stable -> 1 again")
    assert np.allclose(srv.predict(f"/v1/models/{CANARY}/labels/stable", x), v1)
    pr.sync_until(lambda: srv.states(CANARY).get(2) == "END", "v2 unloaded")

    # again: nothing to do (production already serves v1)
    p, run = af.dags_test(DAG_ID, {"model": CANARY, "reason": REASON})
    assert run["state"] == "success", f"a second rollback must be a no-op (idempotent): {run}\n{_why(p)}"
    again = af.xcom(DAG_ID, run["run_id"], "rollback")
    assert again["already"] is True and again["served"] == 1, again
    assert (pr.labels()["stable"], pr.labels()["canary"]) == (1, None)
    assert len(pr.labels()["history"]) == len(lab["history"])  # nothing written
    assert sorted(v["version"] for v in pr.versions()) == [1, 2]
