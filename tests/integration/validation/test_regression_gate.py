"""The regression gate with real servers: the baseline (the newest committed version) and the candidate
in one temporary TF Serving (stand-in image, docker launcher), the same golden requests to both.

The models are tiny hand-built classifiers ("the argmax of the mean colour channels", see
candidates.py) on a copy of the demo's golden images whose labels are that baseline's own answers,
so the baseline passes every image and a candidate's regressions are exactly the images it answers
differently."""
import json
import os

import pytest

from registry.s3 import S3Uri
from tests.integration.conftest import validation_containers

from . import candidates

pytestmark = pytest.mark.docker


def _stage(env, s3, tmp_path, module, tag, input_types=None):
    sm = candidates.save(module, str(tmp_path / f"sm-{tag}"))
    return candidates.stage_candidate(s3, S3Uri(env.serving, f"{env.name}/"), sm, env.golden, str(tmp_path),
                                      input_types=input_types)


def _validate(env, cand, image, *extra):
    p = env.cli("validate", env.name, "--candidate", cand, "--image", image, "--json", *extra, timeout=600)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    return p.returncode, json.loads(p.stdout)


def _check(v, prefix):
    return next(c for c in v["checks"] if c["name"].startswith(prefix))


def _publish_baseline(env, s3, tmp_path, image):
    base = _stage(env, s3, tmp_path, candidates.classifier_module(), "base")
    rc, v = _validate(env, base, image)
    assert rc == 0 and v["regression"]["status"] == "no baseline", v["reason"]
    assert v["regression"]["summary"].startswith("no baseline: first release")
    env.cli("publish", env.name, "--candidate", base, check=0)
    return v


def test_first_release_then_identical_candidate_passes_with_no_flips(gate_env, s3, tmp_path, standin_image,
                                                                     docker_engine):
    base = _publish_baseline(gate_env, s3, tmp_path, standin_image)
    same = _stage(gate_env, s3, tmp_path, candidates.classifier_module(), "same")
    rc, v = _validate(gate_env, same, standin_image)
    g = v["regression"]
    assert rc == 0 and v["passed"], v["reason"]
    assert g["status"] == "passed" and g["baseline"]["version"] == 1 and g["baseline"]["source"].startswith("registry")
    assert g["flips"]["regressed"] == 0 and g["flips"]["changed"] == 0 and g["flips"]["images"] == 150
    assert all(row["delta"] == 0 for row in g["metrics"]) and g["metrics"][0]["name"] == "accuracy"
    assert g["signatures"]["compatible"] and g["signatures"]["breaking"] == []
    # latency: both measured, interleaved, same number of samples; a ratio of two equal models near 1
    lat = g["latency_ms"]["REST serving_default"]
    assert lat["baseline"]["n"] == lat["candidate"]["n"] > 0 and 0.2 < lat["ratio_p50"] < 5, lat
    assert 0.2 < g["latency_ms"]["gRPC serving_default"]["ratio_p50"] < 5, g["latency_ms"]
    # memory: the server alone is TensorFlow's runtime (well over 50 MB); loading adds to it
    m = g["memory_mb"]
    assert m["server"] > 50 and m["with_baseline"] >= m["server"] * 0.95 and m["with_both"] >= m["server"] * 0.95, m
    assert g["load_seconds"]["baseline"] > 0 and g["load_seconds"]["candidate"] > 0
    assert _check(v, "regression: vs baseline v1")["passed"]
    assert validation_containers(docker_engine, base["candidate"], same) == []


def test_worse_candidate_is_blocked_and_accept_regression_lets_it_through_on_record(
        gate_env, s3, tmp_path, standin_image):
    _publish_baseline(gate_env, s3, tmp_path, standin_image)
    # swaps classes 0 and 1: every image the baseline answered 0 or 1 now gets the other label
    worse = candidates.classifier_module()
    import tensorflow as tf
    worse.w.assign(tf.constant([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    cand = _stage(gate_env, s3, tmp_path, worse, "worse")
    rc, v = _validate(gate_env, cand, standin_image)
    g = v["regression"]
    assert rc == 1 and not v["passed"] and g["status"] == "blocked", g
    labels = json.loads(open(os.path.join(gate_env.golden, "golden.json")).read())["images"]
    swapped = sum(e["label"] in (0, 1) for e in labels)
    assert g["flips"]["regressed"] == swapped > 0 and g["flips"]["fixed"] == 0
    acc = next(r for r in g["metrics"] if r["name"] == "accuracy")
    assert acc["baseline"] == 1.0 and acc["regressed"] and abs(acc["delta"] + swapped / 150) < 1e-3, acc
    assert any("golden images regressed" in f for f in g["failures"]) and g["worst"]
    gate_check = _check(v, "regression: vs baseline v1")
    assert not gate_check["passed"] and gate_check["detail"].startswith("blocked: accuracy 1.000 -> ")
    # publish refuses it; an accepted regression passes, and the manifest records why
    assert gate_env.cli("publish", gate_env.name, "--candidate", cand).returncode == 2
    reason = "known: classes 0 and 1 relabelled upstream (TICKET-7)"
    # the golden checks fail too (labels are the baseline's); accept only the gate: look at its check
    rc, v2 = _validate(gate_env, cand, standin_image, f"--accept-regression={reason}")
    assert v2["regression"]["status"] == "accepted" and v2["regression"]["accepted_reason"] == reason
    assert _check(v2, "regression: vs baseline v1")["passed"]


def test_signature_breaking_candidate_is_blocked_with_the_diff(gate_env, s3, tmp_path, standin_image):
    _publish_baseline(gate_env, s3, tmp_path, standin_image)
    import tensorflow as tf

    class Fixed(tf.Module):  # same answers, but only 64x64 images: clients sending others break
        def __init__(self):
            self.w = tf.Variable(tf.eye(3))

        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.uint8, name="inputs")])
        def serve(self, inputs):
            x = tf.reduce_mean(tf.cast(inputs, tf.float32), axis=[1, 2]) / 255.0
            logits = tf.matmul(x, self.w)
            return {"logits": logits, "probs": tf.nn.softmax(logits)}
    cand = _stage(gate_env, s3, tmp_path, Fixed(), "fixed")
    rc, v = _validate(gate_env, cand, standin_image)
    g = v["regression"]
    assert rc == 1 and g["status"] == "blocked" and not g["signatures"]["compatible"]
    assert g["signatures"]["breaking"] == [
        "signature 'serving_default': input 'inputs' dimension 1 ? -> 64 ([?, ?, ?, 3] -> [?, 64, 64, 3])"]
    assert g["flips"]["regressed"] == 0  # it answers the same: only the signature blocks it
    sig = _check(v, "compatibility: signatures vs baseline v1")
    assert not sig["passed"] and "dimension 1 ? -> 64" in sig["detail"]
    # accepting it on purpose: the verdict passes, publish goes on, and the manifest says who/why
    reason = "clients resize to 64x64 since release 12 (TICKET-9)"
    rc, v2 = _validate(gate_env, cand, standin_image, "--accept-regression", reason)
    assert rc == 0 and v2["passed"] and v2["regression"]["status"] == "accepted", v2["reason"]
    assert v2["regression"]["accepted_reason"] == reason and "(accepted: " in _check(
        v2, "compatibility: signatures vs baseline v1")["detail"]
    out = json.loads(gate_env.cli("publish", gate_env.name, "--candidate", cand, "--json", check=0).stdout)
    from registry import layout
    key = layout.manifest_key(S3Uri(gate_env.serving, f"{gate_env.name}/"), out["version"])
    m = json.loads(s3.get_object(Bucket=gate_env.serving, Key=key)["Body"].read())
    assert m["validation"]["regression"] == {"status": "accepted", "baseline": 1, "accepted_reason": reason,
                                             "summary": v2["regression"]["summary"]}


def test_baseline_is_what_production_serves_not_the_newest_committed(gate_env, s3, tmp_path):
    """Production lags (its sync is behind: it serves v1 while v2 is committed): the baseline is v1.
    Production that cannot be observed fails the gate closed (unless baseline=newest_confirmed); a
    production version the registry does not hold is an error; gRPC-only endpoints are asked too."""
    import time

    from production.baseline import BaselineUnknown, choose
    from registry.config import ModelConfig
    from registry.errors import BadInput
    from registry.publish import publish
    from validation import baseline
    from serving.launchers import ProcessLauncher
    serving = S3Uri(gate_env.serving, f"{gate_env.name}/")
    for tag in ("v1", "v2"):
        cand = _stage(gate_env, s3, tmp_path, candidates.classifier_module(), tag)
        publish(s3, serving, gate_env.name, cand, allow_unvalidated=True)
    prod = tmp_path / "production"
    candidates.save(candidates.classifier_module(), str(prod / gate_env.name / "1"))
    server = ProcessLauncher().start(str(prod), gate_env.name)

    def model(*endpoints):
        return ModelConfig(name=gate_env.name, serving=serving, task="classification",
                           extra={"production": {"endpoints": list(endpoints)}} if endpoints else {})
    try:
        from tfs_api.clients import RestClient, wait_available
        wait_available(RestClient(server.host, server.rest_port, gate_env.name), deadline_s=120, alive=server.alive)
        url, grpc = f"http://{server.host}:{server.rest_port}", f"{server.host}:{server.grpc_port}"
        dead = {"rest": "http://127.0.0.1:9"}  # nothing listens
        assert choose(s3, model({"rest": url})) == {"version": 1, "source": f"production {url}"}
        assert choose(s3, model({"grpc": grpc}))["version"] == 1  # gRPC-only production
        with pytest.raises(BaselineUnknown, match=r"fails closed.*baseline=newest_confirmed"):
            choose(s3, model(dead, {"rest": url}))
        # newest_confirmed: nothing was confirmed in production yet -> no baseline to compare with
        assert choose(s3, model(dead), mode="newest_confirmed") is None
        assert choose(s3, model())["source"].startswith("registry") and choose(s3, model())["version"] == 2
        os.rename(prod / gate_env.name / "1", prod / gate_env.name / "7")  # serves v7 after its next poll
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and choose(s3, model({"rest": url}))["version"] != 7:
            time.sleep(0.5)
        with pytest.raises(BadInput, match=r"production http://127\.0\.0\.1:\d+ serves shapes-classifier "
                                           r"version 7, but s3://serving-\w+/shapes-classifier/ holds no committed "
                                           r"version 7 \(committed: \[1, 2\]\)"):
            baseline.load(s3, serving, gate_env.name, choose(s3, model({"rest": url})))
    finally:
        server.stop()
