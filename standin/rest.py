"""REST API of the TF-Serving stand-in (TF Serving's http_rest_api_handler.cc), on the standard
library's ThreadingHTTPServer.

GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature_def metadata
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict     row ("instances") / columnar ("inputs")
Errors are ``{"error": "<message>"}`` with TF Serving's HTTP status for the status code.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from . import tensors
from .core import Core
from .errors import INVALID_ARGUMENT, UNIMPLEMENTED, ServingError

log = logging.getLogger("standin")

_PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r":(classify|regress|predict)", re.I)
_STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                        r"(?:/(metadata))?", re.I)
_V1_RE = re.compile(r"/v1/.*", re.I | re.S)


def _to_json(msg, preserve_names: bool) -> dict:
    from google.protobuf import json_format
    return json.loads(json_format.MessageToJson(msg, always_print_fields_with_no_presence=True,
                                                preserving_proto_field_name=preserve_names))


class RestApi:
    def __init__(self, core: Core, timeout_ms: int = 30000):
        self.core = core
        self.timeout_ms = timeout_ms if timeout_ms and timeout_ms > 0 else None

    def process(self, method: str, path: str, body: bytes) -> str:
        """HttpRestApiHandler::ProcessRequest; returns the JSON body or raises ServingError."""
        malformed = ServingError(INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        m = None
        if method == "POST":
            m = _PREDICT_RE.fullmatch(path)
        elif method == "GET":
            m = _STATUS_RE.fullmatch(path)
        if m is None:
            raise malformed
        name, version_s, label, verb = m.groups()
        name = unquote(name) if name else ""
        version = int(version_s) if version_s else None
        label = unquote(label) if label else None
        if method == "POST":
            verb = verb.lower()
            if verb == "predict":
                return self.predict(name, version, label, body)
            raise ServingError(UNIMPLEMENTED, f"The TF-Serving stand-in does not implement :{verb} "
                                              "(only :predict)")
        if not name:
            raise ServingError(INVALID_ARGUMENT, "Missing model name in request.")
        if verb and verb.lower() == "metadata":
            return self.metadata(name, version, label)
        # GetModelStatus: a label is not a version, so all versions are listed (as TF Serving does)
        return json.dumps(_to_json(self.core.model_status(name, version), preserve_names=False), indent=1)

    def metadata(self, name, version, label) -> str:
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = version
        if label:
            spec.version_label = label
        resp = self.core.model_metadata(spec)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sig_map)
        return json.dumps({"model_spec": _to_json(resp.model_spec, True),
                           "metadata": {"signature_def": _to_json(sig_map, True)}}, indent=1)

    def predict(self, name, version, label, body: bytes) -> str:
        # as TF Serving: the JSON document and signature_name are parsed before the servable is looked up
        held = []

        def input_dtypes(signature_name):
            held.append(self.core.servable(name, version, label))
            return held[-1].input_dtypes(signature_name)
        try:
            sig_name, inputs, fmt = tensors.parse_predict_json(body, input_dtypes)
            log.debug("[stand-in] predict over REST: model %s, signature %s, inputs %s", name,
                      sig_name or "serving_default", {k: list(v.shape) for k, v in inputs.items()})
            _, outputs = held[-1].run(sig_name, inputs, (), self.timeout_ms)
            return tensors.outputs_to_json(outputs, fmt)
        finally:
            for s in held:
                s.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TF-Serving-stand-in"
    api: RestApi = None  # set by make_server

    def log_message(self, fmt, *args):  # quiet: errors are logged below
        pass

    def _handle(self) -> None:
        t0 = time.monotonic()
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status = 200
        if not _V1_RE.fullmatch(path):
            status, out = 404, json.dumps({"error": f"Not found: {path}"})
        else:
            try:
                out = self.api.process(self.command, path, body)
            except ServingError as err:
                status, out = err.http_status, json.dumps({"error": err.message})
                log.debug("[stand-in] REST %s %s -> %d %s", self.command, path, status, err)
            except Exception as exc:  # noqa: BLE001
                log.exception("[stand-in] REST %s %s failed", self.command, path)
                status, out = 500, json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        data = out.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        log.debug("[stand-in] REST %s %s %d %.1f ms", self.command, path, status, (time.monotonic() - t0) * 1e3)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(api: RestApi, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"api": api})
    cls = _Server
    if ":" in host:
        import socket
        cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    return cls((host, port), handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="rest", daemon=True)
    t.start()
    return t
