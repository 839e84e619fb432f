"""Helpers for the TF-Serving stand-in tests: tiny real SavedModels, warmup files, the server as a
real subprocess on free 127.0.0.1 ports, and REST/gRPC clients written as for real TF Serving."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.conftest import ROOT

MODEL = "tiny"


# ------------------------------------------------------------------------------------ models
def save_model(path: str, scale: float) -> str:
    """A SavedModel with three signatures:
    serving_default: images uint8 [-1,-1,-1,3] -> scores f32 [-1,3], mean f32 [-1], height int32 [-1]
    text:            text string [-1]          -> length int32 [-1], upper_bytes string [-1]
    gray:            images uint8 [-1,-1,-1,3] -> gray f32 [-1,-1,-1] (a single output)"""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(scale, dtype=tf.float32)
            self.weights = tf.Variable([[0.299], [0.587], [0.114]], dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def detect(self, images):
            x = tf.cast(images, tf.float32) / 255.0
            m = tf.reduce_mean(x, axis=[1, 2])
            return {"scores": tf.sigmoid(m * self.scale - 0.3),
                    "mean": tf.reduce_mean(x, axis=[1, 2, 3]) * self.scale,
                    "height": tf.fill(tf.shape(images)[:1], tf.shape(images)[1])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def text(self, text):
            return {"length": tf.strings.length(text), "upper_bytes": tf.strings.upper(text)}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def gray(self, images):
            x = tf.cast(images, tf.float32) / 255.0
            return {"gray": tf.squeeze(tf.tensordot(x, self.weights, axes=1), -1) * self.scale}

    m = Tiny()
    tf.saved_model.save(m, path, signatures={"serving_default": m.detect, "text": m.text, "gray": m.gray})
    return path


def write_warmup(version_dir: str, images_list) -> None:
    """assets.extra/tf_serving_warmup_requests: PredictionLog records of predict requests."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    os.makedirs(os.path.join(version_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) as w:
        for images in images_list:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = MODEL
            req.model_spec.signature_name = "serving_default"
            req.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
            w.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())


def copy_version(src: str, base: str, version: int) -> str:
    """Make version folder <base>/<version> appear atomically: copy aside under a non-numeric name,
    then rename (what `tfs-release sync` does)."""
    tmp = os.path.join(base, f".tmp-copy-{version}")
    shutil.copytree(src, tmp)
    dst = os.path.join(base, str(version))
    os.rename(tmp, dst)
    return dst


# ------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandinProcess:
    """The stand-in as a real subprocess; log in a file."""

    def __init__(self, base_path: str | None, log_path: str, *, extra=(), env=None, wrapper=False,
                 model_name: str | None = MODEL):
        self.grpc_port, self.rest_port = free_port(), free_port()
        while self.rest_port == self.grpc_port:
            self.rest_port = free_port()
        self.log_path = log_path
        args = ["--host", "127.0.0.1", "--port", str(self.grpc_port), "--rest_api_port", str(self.rest_port)]
        if model_name:
            args += ["--model_name", model_name]
        if base_path:
            args += ["--model_base_path", base_path]
        args += list(extra)
        if wrapper:
            cmd = [sys.executable, os.path.join(ROOT, "standin", "tensorflow_model_server"), *args]
        else:
            cmd = [sys.executable, "-m", "standin.server", *args]
        full_env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "1", **(env or {})}
        for k in ("MODEL_NAME", "MODEL_BASE_PATH"):
            if env is None or k not in env:
                full_env.pop(k, None)
        self._log = open(log_path, "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_available(self, version: int | None = None, timeout: float = 120, model: str = MODEL) -> float:
        """Polls GET /v1/models/<name> (connection refused while loading, as with TF Serving) until
        AVAILABLE; returns seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in exited {self.proc.returncode}:\n{self.log()}")
            try:
                code, body = get(f"{self.rest}/v1/models/{model}")
                if code == 200 and any(s["state"] == "AVAILABLE" and (version is None or s["version"] == str(version))
                                       for s in body["model_version_status"]):
                    return time.monotonic() - self.t_start
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not AVAILABLE within {timeout}s:\n{self.log()}")

    def wait_state(self, version: int, state: str, timeout: float = 60, model: str = MODEL) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            code, body = get(f"{self.rest}/v1/models/{model}/versions/{version}")
            if code == 200:
                last = body["model_version_status"][0]
                if last["state"] == state:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"{model} version {version} not {state} within {timeout}s (last {last}):\n{self.log()}")

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM; returns seconds until the process exited."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"stand-in ignored SIGTERM for {timeout}s")
        self._log.close()
        return time.monotonic() - t0


# ------------------------------------------------------------------------------- REST client
def _request(url: str, data: bytes | None = None, method: str | None = None):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str):
    return _request(url)


def post(url: str, doc) -> tuple[int, dict]:
    return _request(url, json.dumps(doc).encode())


# ------------------------------------------------------------------------------- gRPC client
class GrpcClient:
    def __init__(self, port: int):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, inputs: dict, signature: str = "", name: str = MODEL, version: int | None = None,
                output_filter=(), label: str | None = None):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        req = predict_pb2.PredictRequest()
        req.model_spec.name = name
        if signature:
            req.model_spec.signature_name = signature
        if version is not None:
            req.model_spec.version.value = version
        if label is not None:
            req.model_spec.version_label = label
        for k, v in inputs.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        req.output_filter.extend(output_filter)
        return self.predict_stub.Predict(req, timeout=30)

    def metadata(self, name: str = MODEL, label: str | None = None):
        from tensorflow_serving.apis import get_model_metadata_pb2
        req = get_model_metadata_pb2.GetModelMetadataRequest()
        req.model_spec.name = name
        if label is not None:
            req.model_spec.version_label = label
        req.metadata_field.append("signature_def")
        return self.predict_stub.GetModelMetadata(req, timeout=30)

    def status(self, name: str = MODEL, version: int | None = None):
        from tensorflow_serving.apis import get_model_status_pb2
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        if version is not None:
            req.model_spec.version.value = version
        return self.model_stub.GetModelStatus(req, timeout=30)

    def reload_config(self, config_text: str):
        """ModelService.HandleReloadConfigRequest with a text-format ModelServerConfig."""
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2
        req = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(config_text, req.config)
        return self.model_stub.HandleReloadConfigRequest(req, timeout=60)

    def close(self):
        self.channel.close()
