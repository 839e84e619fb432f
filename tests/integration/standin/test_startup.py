"""Startup behaviour of the stand-in, as TF Serving's: the ports open only once the first version is
AVAILABLE; a first version that cannot load makes the server exit ("Failed to start server").
The op set is TF Serving's binary's: core TF + TF Text (served), no Python-runtime ops (refused)."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from .support import MODEL, StandinProcess, copy_version, post


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_waits_for_a_first_version_with_ports_closed(tiny_models, images, reference, tmp_path):
    base = tmp_path / MODEL
    base.mkdir()
    s = StandinProcess(str(base), str(tmp_path / "standin.log"))
    try:
        deadline = time.monotonic() + 90
        while "No versions of servable tiny found under base path" not in s.log():
            assert s.proc.poll() is None and time.monotonic() < deadline, s.log()
            time.sleep(0.2)
        assert _refused(s.rest_port) and _refused(s.grpc_port)
        copy_version(tiny_models["v2"], str(base), 7)
        s.wait_available(7, timeout=60)
        code, body = post(f"{s.rest}/v1/models/{MODEL}:predict", {"instances": images.tolist()})
        assert code == 200
        np.testing.assert_allclose([p["mean"] for p in body["predictions"]],
                                   reference("v2", "serving_default", images=images)["mean"], atol=1e-6, rtol=0)
    finally:
        took = s.stop()
    assert s.proc.returncode == 0 and took < 5


@pytest.fixture
def text_op_model(tmp_path):
    """A SavedModel using a tensorflow_text op: TF Serving's binary links TF Text's ops, so it serves."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    class Tok(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def count(self, text):
            return {"tokens": tf_text.WhitespaceTokenizer().tokenize(text).row_lengths()}

    m = Tok()
    path = str(tmp_path / "text-src")
    tf.saved_model.save(m, path, signatures={"serving_default": m.count})
    return path


@pytest.fixture
def py_function_model(tmp_path):
    """A SavedModel with a tf.py_function (EagerPyFunc): an op only TensorFlow's Python runtime has."""
    import tensorflow as tf

    class Py(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def double(self, x):
            return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}

    m = Py()
    path = str(tmp_path / "py-src")
    tf.saved_model.save(m, path, signatures={"serving_default": m.double})
    return path


def test_tf_text_ops_are_served_like_tf_serving(text_op_model, tmp_path):
    base = tmp_path / MODEL
    base.mkdir()
    copy_version(text_op_model, str(base), 1)
    s = StandinProcess(str(base), str(tmp_path / "standin.log"))
    try:
        s.wait_available(1, timeout=120)
        code, body = post(f"{s.rest}/v1/models/{MODEL}:predict", {"instances": ["a b c", "d", ""]})
        assert code == 200 and body == {"predictions": [3, 1, 0]}, body
        assert "op set: core TF + tensorflow_text" in s.log()
    finally:
        s.stop()


def test_model_needing_non_serving_ops_fails_to_start(py_function_model, tmp_path):
    base = tmp_path / MODEL
    base.mkdir()
    copy_version(py_function_model, str(base), 1)
    s = StandinProcess(str(base), str(tmp_path / "standin.log"), extra=["--max_num_load_retries=0"])
    try:
        rc = s.proc.wait(120)
    finally:
        s.stop()
    log = s.log()
    assert rc == 255, log
    assert "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available" in log
    assert "{name: tiny version: 1} due to error: NOT_FOUND: Op type not registered 'EagerPyFunc'" in log
    assert "Running gRPC ModelServer" not in log and _refused(s.rest_port)
