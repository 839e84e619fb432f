"""Version lifecycle of the stand-in, one real server started like the tensorflow/serving image
(MODEL_NAME / MODEL_BASE_PATH environment, through the ``tensorflow_model_server`` wrapper):
new versions picked up by polling, the old one unloaded, non-numeric folders ignored, broken
versions reported while the previous one keeps serving, load retries, SIGTERM.
The tests run in file order and share the server (each phase builds on the previous one)."""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from .support import MODEL, GrpcClient, StandinProcess, copy_version, get, post

TOL = 1e-6


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    models = tmp_path_factory.mktemp("lifecycle")
    base = models / MODEL
    base.mkdir()
    copy_version(tiny_models["v1"], str(base), 1)
    s = StandinProcess(None, str(models / "standin.log"), wrapper=True, model_name=None,
                       env={"MODEL_NAME": MODEL, "MODEL_BASE_PATH": str(models)},
                       extra=["--file_system_poll_wait_seconds=1", "--max_num_load_retries=2",
                              "--load_retry_interval_micros=2000000"])
    s.base = str(base)
    try:
        s.startup_seconds = s.wait_available(1)
        print(f"stand-in (wrapper + env) startup to AVAILABLE: {s.startup_seconds:.2f} s")
        yield s
    finally:
        s.stop()


def predict_rest(env, images, version=None):
    suffix = f"/versions/{version}" if version else ""
    return post(f"{env.rest}/v1/models/{MODEL}{suffix}:predict", {"inputs": images.tolist()})


def states(env):
    code, body = get(f"{env.rest}/v1/models/{MODEL}")
    assert code == 200, body
    return {int(s["version"]): (s["state"], s["status"]["error_code"]) for s in body["model_version_status"]}


def test_started_from_image_style_environment(env, images, reference):
    assert f"base path {env.base}" in env.log()
    code, body = predict_rest(env, images)
    assert code == 200
    np.testing.assert_allclose(body["outputs"]["scores"], reference("v1", "serving_default", images=images)["scores"],
                               atol=TOL, rtol=0)


def test_non_numeric_folder_is_ignored(env, tiny_models):
    shutil.copytree(tiny_models["v2"], os.path.join(env.base, ".tmp-5"))  # a complete, valid model
    os.makedirs(os.path.join(env.base, "_manifests"))
    time.sleep(3.5)  # three polls
    assert states(env) == {1: ("AVAILABLE", "OK")}
    assert "version: 5" not in env.log()


def test_new_version_is_loaded_then_old_unloaded(env, tiny_models, images, reference):
    copy_version(tiny_models["v2"], env.base, 2)
    env.wait_available(2, timeout=60)
    env.wait_state(1, "END", timeout=30)
    assert states(env) == {2: ("AVAILABLE", "OK"), 1: ("END", "OK")}
    log = env.log()
    assert log.index("Successfully loaded servable version {name: tiny version: 2}") < \
        log.index("Done unloading servable version {name: tiny version: 1}")
    code, body = predict_rest(env, images)
    assert code == 200
    ref2 = reference("v2", "serving_default", images=images)
    np.testing.assert_allclose(body["outputs"]["scores"], ref2["scores"], atol=TOL, rtol=0)
    np.testing.assert_allclose(body["outputs"]["mean"], ref2["mean"], atol=TOL, rtol=0)
    code, body = predict_rest(env, images, version=1)
    assert code == 404 and "Specific(tiny, 1)" in body["error"]


def test_broken_version_is_reported_and_previous_keeps_serving(env, images, reference):
    tmp = os.path.join(env.base, ".tmp-broken")
    os.makedirs(tmp)
    with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
        f.write(b"\x08garbage, not a SavedModel proto \xff\xfe" * 10)
    os.rename(tmp, os.path.join(env.base, "3"))
    st = env.wait_state(3, "END", timeout=60)  # 1 try + 2 retries, 2 s apart
    assert st["status"]["error_code"] != "OK" and st["status"]["error_message"], st
    assert states(env)[2] == ("AVAILABLE", "OK")
    log = env.log()
    assert "retry 2 of 2" in log and "Failed to load servable version {name: tiny version: 3}" in log
    # version 2 still answers, over REST and gRPC
    code, body = predict_rest(env, images)
    assert code == 200
    np.testing.assert_allclose(body["outputs"]["scores"], reference("v2", "serving_default", images=images)["scores"],
                               atol=TOL, rtol=0)
    c = GrpcClient(env.grpc_port)
    try:
        assert c.predict({"images": images}).model_spec.version.value == 2
        from tensorflow_serving.apis import get_model_status_pb2
        st3 = c.status(version=3).model_version_status[0]
        assert st3.state == get_model_status_pb2.ModelVersionStatus.END and st3.status.error_code != 0
    finally:
        c.close()
    # not retried while it stays the aspired version
    n_attempts = env.log().count("Loading servable version {name: tiny version: 3} from")
    time.sleep(2.5)
    assert env.log().count("Loading servable version {name: tiny version: 3} from") == n_attempts == 3


def test_version_completed_during_retries_gets_loaded(env, tiny_models, images, reference):
    """A folder whose saved_model.pb is broken at first (e.g. files still landing) loads on a retry."""
    tmp = os.path.join(env.base, ".tmp-4")
    os.makedirs(tmp)
    with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
        f.write(b"truncated")
    os.rename(tmp, os.path.join(env.base, "4"))
    deadline = time.monotonic() + 30
    while "Loading servable version {name: tiny version: 4} failed" not in env.log():
        assert time.monotonic() < deadline, env.log()
        time.sleep(0.1)
    assert states(env)[4] == ("LOADING", "OK")
    # the rest of the files land; the next retry (2 s later) succeeds
    shutil.copytree(os.path.join(tiny_models["v1"], "variables"), os.path.join(env.base, "4", "variables"))
    shutil.copy(os.path.join(tiny_models["v1"], "saved_model.pb"), os.path.join(env.base, "4", "saved_model.pb"))
    env.wait_available(4, timeout=30)
    env.wait_state(2, "END", timeout=30)
    code, body = predict_rest(env, images)
    assert code == 200
    np.testing.assert_allclose(body["outputs"]["scores"], reference("v1", "serving_default", images=images)["scores"],
                               atol=TOL, rtol=0)
    assert states(env) == {4: ("AVAILABLE", "OK"), 3: ("END", states(env)[3][1]), 2: ("END", "OK"),
                           1: ("END", "OK")}


def test_sigterm_stops_within_seconds(env):
    took = env.stop()
    print(f"stand-in stopped {took:.2f} s after SIGTERM")
    assert env.proc.returncode == 0, env.log()
    assert took < 5
    assert "received SIGTERM" in env.log() and "stopped in" in env.log()
