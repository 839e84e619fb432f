"""Canary releases against a real production loop: `tfs-release sync-all` (the sidecar: several models
into one TF Serving tree, and the model config file with version labels) and a TF-Serving stand-in
process reading that file (re-read every second, `--allow_version_labels_for_unavailable_models`).

Publish v1 (stable) and v2 (canary): /labels/stable and /labels/canary answer with each version's
own answers; promote: stable moves to v2 and v1 is unloaded; v3 then abort: v3 is unloaded, stable
stays. A server restarted on every intermediate config starts cleanly. Two sidecars converge on the
same versions and labels. A second, non-canary model in the same tree serves its latest version; a
third with nothing published yet is not listed (TF Serving would not open its ports for it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import yaml

from registry.s3 import S3Uri
from tests.conftest import ROOT
from tests.integration.validation import candidates

GOLDEN = os.path.join(ROOT, "demo", "golden", "shapes-classifier")


def _module(weight):
    return candidates.classifier_module(weight=weight)


@pytest.fixture
def canary_env(model_env, s3, tmp_path):
    cfg = {"models": {
        "canary-cls": {"task": "classification", "serving": f"s3://{model_env.serving}/canary-cls/",
                       "golden": GOLDEN, "input_types": {"serving_default": "image_tensor"}, "rollout": "canary"},
        "plain-cls": {"task": "classification", "serving": f"s3://{model_env.serving}/plain-cls/",
                      "golden": GOLDEN, "input_types": {"serving_default": "image_tensor"}},
        # configured, nothing published yet: listing it would keep a (re)started TF Serving from
        # opening its ports (it waits for every listed model), so it is left out until it has a version
        "empty-cls": {"task": "classification", "serving": f"s3://{model_env.serving}/empty-cls/",
                      "golden": GOLDEN, "input_types": {"serving_default": "image_tensor"}}}}
    with open(model_env.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return model_env


def _publish(env, s3, tmp_path, model, weight, tag):
    sm = candidates.save(_module(weight), str(tmp_path / f"sm-{model}-{tag}"))
    cand = candidates.stage_candidate(s3, S3Uri(env.serving, f"{model}/"), sm, GOLDEN, str(tmp_path))
    out = json.loads(env.cli("publish", model, "--candidate", cand, "--unvalidated", "--json", check=0).stdout)
    return out


class Server:
    """A stand-in process on a model config file (as production TF Serving would be started)."""

    def __init__(self, config_file, log):
        from serving.launchers import free_port, server_env
        self.rest, self.grpc = free_port(), free_port()
        while self.grpc == self.rest:
            self.grpc = free_port()
        env = {**server_env(), "PYTHONPATH": ROOT}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "standin.server", f"--port={self.grpc}", f"--rest_api_port={self.rest}",
             "--host=127.0.0.1", f"--model_config_file={config_file}", "--model_config_file_poll_wait_seconds=1",
             "--allow_version_labels_for_unavailable_models=true", "--file_system_poll_wait_seconds=1"],
            env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.rest}"

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return json.loads(r.read())
        except Exception as exc:  # noqa: BLE001 - not up yet / not found
            return {"error": str(exc)}

    def predict(self, path, x):
        req = urllib.request.Request(self.url + path + ":predict", method="POST",
                                     data=json.dumps({"inputs": {"inputs": x.tolist()}}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return np.asarray(json.loads(r.read())["outputs"]["logits"])

    def wait(self, cond, what, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}) waiting for {what}")
            if cond():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def label(self, model, label):
        """The version a label names: its metadata's model_spec (GetModelStatus ignores labels)."""
        v = (self.get(f"/v1/models/{model}/labels/{label}/metadata").get("model_spec") or {}).get("version")
        return int(v) if v is not None else None

    def states(self, model):
        return {int(v["version"]): v["state"] for v in self.get(f"/v1/models/{model}").get("model_version_status", [])}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def _sync(env, root, url, *extra):
    p = env.cli("sync-all", "--root", str(root), "--serving-url", url, "--once", "--json", *extra, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def _restart_clean(config_file, tmp_path, model, labels):
    """A fresh server on this config file starts, and its labels are as written."""
    s = Server(config_file, tmp_path / "restart.log")
    try:
        for label, v in labels.items():
            s.wait(lambda: s.label(model, label) == v, f"restarted server: {label} -> {v}")
    finally:
        s.stop()


def test_canary_promote_abort_restarts_and_two_sidecars(canary_env, s3, tmp_path):
    env = canary_env
    root = tmp_path / "models"
    config_file = root / "models.config"
    x = np.full((1, 8, 8, 3), 200, dtype=np.uint8)
    x[..., 0] = 10  # the weight decides the answer: v1 (weight 1) and v2 (weight 2) differ

    assert _publish(env, s3, tmp_path, "canary-cls", 1.0, "v1")["labels"]["stable"] == 1
    _publish(env, s3, tmp_path, "plain-cls", 1.0, "p1")
    out = _sync(env, root, "http://127.0.0.1:9")  # TF Serving not started yet
    entries = {e["name"]: e for e in out["config"]["models"]}
    assert entries["canary-cls"]["versions"] == [1] and entries["canary-cls"]["labels"] == {"stable": 1}
    assert entries["plain-cls"]["rollout"] == "all" and "empty-cls" not in entries, entries
    p = env.cli("sync-health", "--dest", str(root))  # the sidecar's health check reads sync-all's record
    assert p.returncode == 0, p.stderr
    server = Server(str(config_file), tmp_path / "server.log")
    try:
        server.wait(lambda: server.label("canary-cls", "stable") == 1, "stable -> 1")
        server.wait(lambda: server.states("plain-cls").get(1) == "AVAILABLE", "plain-cls v1")
        v1 = server.predict("/v1/models/canary-cls/labels/stable", x)

        # v2 becomes the canary: loaded beside v1; both labels answer with their own version
        labels = _publish(env, s3, tmp_path, "canary-cls", 2.0, "v2")["labels"]
        assert (labels["stable"], labels["canary"]) == (1, 2)
        cfg = _sync(env, root, server.url)["config"]
        assert {e["name"]: e for e in cfg["models"]}["canary-cls"]["versions"] == [1, 2]
        server.wait(lambda: server.label("canary-cls", "canary") == 2, "canary -> 2")
        assert server.label("canary-cls", "stable") == 1
        v2 = server.predict("/v1/models/canary-cls/labels/canary", x)
        # rollout confirmation of a canary: served, and the canary label names it on every endpoint
        cfg_doc = yaml.safe_load(open(env.config))
        cfg_doc["models"]["canary-cls"]["production"] = {"endpoints": [{"rest": server.url}], "confirm_deadline_s": 60}
        with open(env.config, "w") as fh:
            yaml.safe_dump(cfg_doc, fh)
        rec = json.loads(env.cli("confirm", "canary-cls", "--version", "2", "--poll", "0.5", "--json",
                                 check=0).stdout)
        assert rec["outcome"] == "confirmed" and rec["label"] == "canary" and rec["labels"][0]["version"] == 2, rec
        assert not np.allclose(v1, v2) and np.allclose(server.predict("/v1/models/canary-cls/versions/2", x), v2)
        _restart_clean(str(config_file), tmp_path, "canary-cls", {"stable": 1, "canary": 2})

        # a second sidecar (another replica's volume) converges on the same versions and labels
        other = _sync(env, tmp_path / "replica-b", server.url)["config"]
        strip = [{k: v for k, v in e.items() if k != "base_path"} for e in cfg["models"]]
        assert [{k: v for k, v in e.items() if k != "base_path"} for e in other["models"]] == strip

        # promote: stable moves to the loaded canary, v1 is unloaded
        p = env.cli("promote", "canary-cls", "--reason", "canary healthy for 1h", "--by", "alice", "--json", check=0)
        assert json.loads(p.stdout)["stable"] == 2
        cfg = _sync(env, root, server.url)["config"]
        assert {e["name"]: e for e in cfg["models"]}["canary-cls"] == {
            "name": "canary-cls", "base_path": str(root / "canary-cls"), "rollout": "canary", "versions": [2],
            "labels": {"stable": 2}}
        server.wait(lambda: server.label("canary-cls", "stable") == 2, "stable -> 2")
        server.wait(lambda: server.states("canary-cls").get(1) == "END", "v1 unloaded")
        _restart_clean(str(config_file), tmp_path, "canary-cls", {"stable": 2})

        # v3 as canary, but production never gets it (no sync round): its rollout times out and the
        # canary is aborted, never rolled forward; stable v2 keeps serving
        _publish(env, s3, tmp_path, "canary-cls", 3.0, "v3")
        p = env.cli("confirm", "canary-cls", "--version", "3", "--deadline", "3", "--poll", "0.5", "--json")
        rec = json.loads(p.stdout)
        assert p.returncode == 1 and rec["outcome"] == "aborted", rec
        assert rec["action"] == "aborted the canary; stable version 2 serves", rec
        # v4 as canary, then aborted by hand: v4 unloaded, stable stays; an aborted version is never promoted
        _publish(env, s3, tmp_path, "canary-cls", 4.0, "v4")
        _sync(env, root, server.url)
        server.wait(lambda: server.label("canary-cls", "canary") == 4, "canary -> 4")
        p = env.cli("abort", "canary-cls", "--reason", "error rate up", "--version", "4", "--json", check=0)
        assert json.loads(p.stdout)["canary"] is None and json.loads(p.stdout)["aborted"] == [3, 4]
        _sync(env, root, server.url)
        server.wait(lambda: server.states("canary-cls").get(4) == "END", "v4 unloaded")
        assert server.label("canary-cls", "stable") == 2
        _restart_clean(str(config_file), tmp_path, "canary-cls", {"stable": 2})
        p = env.cli("promote", "canary-cls", "--reason", "x")
        assert p.returncode == 2 and "no canary" in p.stderr
        labels = json.loads(env.cli("labels", "canary-cls", "--json", check=0).stdout)
        assert [h["action"] for h in labels["history"]] == ["publish", "publish", "promote", "publish", "abort",
                                                            "publish", "abort"]
        assert labels["history"][2]["by"] == "alice" and labels["history"][6]["reason"] == "error rate up"
        assert labels["history"][4]["by"] == "tfs-release confirm" and "failed" in labels["history"][4]["reason"]
    finally:
        server.stop()
