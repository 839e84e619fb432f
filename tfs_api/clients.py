"""Talking to a TF Serving (or the stand-in): REST and gRPC clients with one small interface.

    status() -> [{"version", "state", "error"}]; metadata() -> signatures in tfs_api/signatures.py's normal form;
    predict(signature, input_type, x) -> {output: np.ndarray}   (x: a batch [B, ...], any B)

``predict_images`` sends golden images in batches (REST: one columnar ``inputs`` request, gRPC: one
PredictRequest with a leading batch dimension) and hands back one answer per image, shaped as a
request of that image alone would have been answered.
"""
from __future__ import annotations

import base64
import gc
import json
import threading
import time
from contextlib import contextmanager
import urllib.error

import numpy as np

from tfs_api import protos
from tfs_api.status import rest_status
from tfs_api.signatures import INPUT_KEY, signatures_from_grpc_metadata, signatures_from_rest_metadata


class ServingError(Exception):
    """The server answered with an error (message is the server's)."""


_gc_lock = threading.Lock()
_gc_users = 0


@contextmanager
def _gc_paused():
    """No cyclic GC while a REST body is built or parsed: a batch of images is hundreds of
    thousands of short-lived lists, and every collection they trigger also walks the whole heap
    (TensorFlow's and great-expectations' objects): 5-10x the JSON work itself."""
    global _gc_users
    with _gc_lock:
        mine = _gc_users > 0 or gc.isenabled()  # else disabled by someone else: leave it so
        if mine:
            _gc_users += 1
            gc.disable()
    try:
        yield
    finally:
        if mine:
            with _gc_lock:
                _gc_users -= 1
                if _gc_users == 0:
                    gc.enable()


class RestClient:
    protocol = "REST"

    def __init__(self, host: str, port: int, model: str, *, timeout: float = 60, version: int | None = None,
                 scheme: str = "http", auth=None):
        # version: every call addresses /versions/N (several versions loaded in one server);
        # scheme/auth: a production endpoint's https and credentials (tfs_api/endpoint_auth.py)
        from tfs_api.endpoint_auth import NONE
        self.server = f"{scheme}://{host}:{port}/v1/models/{model}"
        self.base = self.server + (f"/versions/{int(version)}" if version is not None else "")
        self.model, self.timeout, self.version, self.auth = model, timeout, version, auth or NONE
        self._addr = (host, port, scheme)

    @classmethod
    def for_url(cls, url: str, model: str, **kw) -> "RestClient":
        """A client of a production endpoint as the config names it: ``http(s)://host[:port][/prefix]``."""
        c = cls("-", 0, model, **kw)
        c._url = url.rstrip("/")
        c.server = f"{c._url}/v1/models/{model}"
        c.base = c.server + (f"/versions/{int(c.version)}" if c.version is not None else "")
        return c

    def at(self, version: int | None) -> "RestClient":
        """The same server, addressing one version."""
        if getattr(self, "_url", None):
            return RestClient.for_url(self._url, self.model, timeout=self.timeout, version=version, auth=self.auth)
        host, port, scheme = self._addr
        return RestClient(host, int(port), self.model, timeout=self.timeout, version=version, scheme=scheme,
                          auth=self.auth)

    def _call(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        try:
            with self.auth.urlopen(url, data=data, method="POST" if body is not None else "GET",
                                   headers={"Content-Type": "application/json"}, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                msg = json.loads(text).get("error", text)
            except ValueError:
                msg = text
            raise ServingError(f"REST {exc.code}: {msg}") from None

    def status(self) -> list[dict]:
        return rest_status(self._call(self.base))

    def metadata(self) -> dict:
        return signatures_from_rest_metadata(self._call(self.base + "/metadata"))

    def predict(self, signature: str, input_type: str, x: np.ndarray) -> dict:
        with _gc_paused():  # the request's and the answer's lists are all freed before GC resumes
            if x.dtype == object:
                value = [{"b64": base64.b64encode(v).decode()} for v in x]
            else:
                value = x.tolist()
            body = {"signature_name": signature, "inputs": {INPUT_KEY: value}}
            del value
            try:
                out = self._call(self.base + ":predict", body)
            except (TimeoutError, urllib.error.URLError) as exc:
                if not isinstance(getattr(exc, "reason", exc), TimeoutError):
                    raise
                raise ServingError(f"REST predict: no answer within {self.timeout:.0f}s") from None
            finally:
                del body
            outputs = out.get("outputs")
            if not isinstance(outputs, dict):  # TF Serving unwraps a single output
                outputs = {"output_0": outputs}
            result = {k: np.asarray(v) for k, v in outputs.items()}
            del out, outputs
        return result


class GrpcClient:
    protocol = "gRPC"

    def __init__(self, host: str, port: int, model: str, *, timeout: float = 60, version: int | None = None,
                 auth=None, _channel=None):
        # auth: a production endpoint's TLS and credentials (tfs_api/endpoint_auth.py)
        from tfs_api.endpoint_auth import NONE
        self.auth = auth or NONE
        self._owns_channel = _channel is None
        self.channel = _channel or self.auth.grpc_channel(f"{host}:{port}", options=[
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.max_send_message_length", 256 * 1024 * 1024)])
        self._methods = {}
        self.model, self.timeout, self.version = model, timeout, version
        self._addr = (host, port)

    def at(self, version: int | None) -> "GrpcClient":
        """The same server (and channel), addressing one version (ModelSpec.version)."""
        return GrpcClient(*self._addr, self.model, timeout=self.timeout, version=version, auth=self.auth,
                          _channel=self.channel)

    def _spec(self, spec) -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)

    def close(self):
        if self._owns_channel:
            self.channel.close()

    def _method(self, path: str, response: str):
        """A unary method of the channel (what the generated ``*_pb2_grpc`` stubs hold), its messages
        from ``tfs_api.protos``: no TensorFlow import."""
        fn = self._methods.get(path)
        if fn is None:
            fn = self._methods[path] = self.channel.unary_unary(
                path, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=protos.message(response).FromString)
        return fn

    def _rpc(self, path: str, response: str, req):
        import grpc
        fn = self._method(path, response)
        try:
            return fn(req, timeout=self.timeout, metadata=self.auth.grpc_metadata())
        except grpc.RpcError as exc:
            raise ServingError(f"gRPC {exc.code().name}: {exc.details()}") from None

    def status(self) -> list[dict]:
        req = protos.message("tensorflow.serving.GetModelStatusRequest")()
        self._spec(req.model_spec)
        resp = self._rpc("/tensorflow.serving.ModelService/GetModelStatus",
                         "tensorflow.serving.GetModelStatusResponse", req)
        return [{"version": int(v.version),
                 "state": protos.enum_name("tensorflow.serving.ModelVersionStatus.State", v.state),
                 "error": v.status.error_message} for v in resp.model_version_status]

    def metadata(self) -> dict:
        req = protos.message("tensorflow.serving.GetModelMetadataRequest")(metadata_field=["signature_def"])
        self._spec(req.model_spec)
        return signatures_from_grpc_metadata(self._rpc("/tensorflow.serving.PredictionService/GetModelMetadata",
                                                       "tensorflow.serving.GetModelMetadataResponse", req))

    def predict(self, signature: str, input_type: str, x: np.ndarray) -> dict:
        req = protos.message("tensorflow.serving.PredictRequest")()
        self._spec(req.model_spec)
        req.model_spec.signature_name = signature
        protos.tensor_proto(x, into=req.inputs[INPUT_KEY])
        resp = self._rpc("/tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictResponse", req)
        try:
            return {k: protos.to_ndarray(v) for k, v in resp.outputs.items()}
        except protos.TensorError as exc:
            raise ServingError(f"gRPC predict of signature {signature!r}: {exc}") from None


def predict_images(client, signature: str, input_type: str, images: list, *, batch_size: int) -> tuple[list[dict], int]:
    """Every golden image's answer ({output: [1, ...]}, in the order of ``images``), asked in
    batches of at most ``batch_size`` (same-shaped images only for image_tensor; see
    tfs_api/batching.py). Returns (answers, number of requests). Raises ServingError."""
    from tfs_api import batching
    from tfs_api.inputs import model_input
    answers: list = [None] * len(images)
    groups = batching.plan_images(input_type, images, batch_size)
    for idx in groups:
        x = batching.stack([model_input(input_type, images[i]) for i in idx])
        try:
            parts = batching.split(client.predict(signature, input_type, x), len(idx),
                                   what=f"the {client.protocol} answer of signature {signature!r}")
        except batching.BatchError as exc:
            raise ServingError(str(exc)) from None
        except ServingError as exc:
            if len(idx) == 1:
                raise
            raise ServingError(f"{exc} (the request carried a batch of {len(idx)} golden images; if the model "
                               "cannot take batches, set validation_batch_size: 1 for it)") from None
        for i, part in zip(idx, parts):
            answers[i] = part
    return answers, len(groups)


def wait_available(client, *, deadline_s: float, alive=lambda: None, poll: float = 0.2) -> dict:
    """Poll until a version is AVAILABLE. ``alive()`` raises when the server died.
    Raises TimeoutError, or ServingError when the version ended with a load error."""
    deadline = time.monotonic() + deadline_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        alive()
        try:
            versions = client.status()
            avail = [v for v in versions if v["state"] == "AVAILABLE"]
            if avail:
                return avail[0]
            failed = [v for v in versions if v["state"] == "END" and v["error"]]
            if failed:
                raise ServingError(f"version {failed[0]['version']} failed to load: {failed[0]['error']}")
            last = ", ".join(f"version {v['version']} {v['state']}" for v in versions) or "no versions"
        except ServingError as exc:
            if "failed to load" in str(exc):
                raise
            last = str(exc)
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(poll)
    raise TimeoutError(f"model not AVAILABLE within {deadline_s:.0f}s (last: {last})")


def wait_listening(client, *, deadline_s: float, alive=lambda: None, poll: float = 0.3) -> None:
    """Poll until the REST port answers at all (any HTTP status: a server started with no model
    loaded answers 404 for it). Raises TimeoutError."""
    deadline = time.monotonic() + deadline_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        alive()
        try:
            client.status()
            return
        except ServingError:
            return  # an HTTP answer: the server is up
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(poll)
    raise TimeoutError(f"the server did not open its REST port within {deadline_s:.0f}s (last: {last})")
