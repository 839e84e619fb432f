"""gRPC API of the TF-Serving stand-in, with tensorflow-serving-api's generated stubs:
PredictionService.Predict / GetModelMetadata and ModelService.GetModelStatus /
HandleReloadConfigRequest. Other methods (Classify, Regress, MultiInference) answer UNIMPLEMENTED."""
from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import (model_service_pb2_grpc, prediction_service_pb2_grpc)

from .core import Core
from .errors import INVALID_ARGUMENT, ServingError

log = logging.getLogger("standin")


def _timeout_ms(context) -> int | None:
    remaining = context.time_remaining()
    if remaining is None or remaining > 10 ** 7:
        return None
    return max(1, int(remaining * 1000))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: Core):
        self.core = core

    def Predict(self, request, context):
        try:
            servable = self.core.servable_for_spec(request.model_spec)
            log.debug("[stand-in] predict over gRPC: model %s, signature %s, inputs %s", request.model_spec.name,
                      request.model_spec.signature_name or "serving_default",
                      {k: [d.size for d in v.tensor_shape.dim] for k, v in request.inputs.items()})
            try:
                return servable.predict_proto(request, _timeout_ms(context))
            finally:
                servable.release()
        except ServingError as err:
            context.abort(err.grpc_code, err.message)

    def GetModelMetadata(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise ServingError(INVALID_ARGUMENT, "Missing ModelSpec")
            return self.core.model_metadata(request.model_spec, list(request.metadata_field))
        except ServingError as err:
            context.abort(err.grpc_code, err.message)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: Core):
        self.core = core

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise ServingError(INVALID_ARGUMENT, "Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
            return self.core.model_status(spec.name, version)
        except ServingError as err:
            context.abort(err.grpc_code, err.message)

    def HandleReloadConfigRequest(self, request, context):
        """ModelServiceImpl::HandleReloadConfigRequest: ServerCore::ReloadConfig with the given
        config (it replaces the running one; a later poll of --model_config_file may replace it again)."""
        from tensorflow_serving.apis import model_management_pb2
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise ServingError(INVALID_ARGUMENT, "ServerModelConfig type not supported by HandleReloadConfigRequest."
                                                     " Only ModelConfigList is currently supported")
            for index, c in enumerate(request.config.model_config_list.config):
                log.info("[stand-in] Config entry index : %d path : %s name : %s platform : %s", index, c.base_path,
                         c.name, c.model_platform)
            self.core.reload_config(request.config)
        except ServingError as err:
            log.error("[stand-in] ReloadConfig failed: %s", err.message)
            context.abort(err.grpc_code, err.message)
        resp = model_management_pb2.ReloadConfigResponse()
        resp.status.error_code = 0
        return resp


SSL_FIELDS = {"server_key": str, "server_cert": str, "custom_ca": str, "client_verify": bool}


def read_ssl_config(path: str) -> dict:
    """TF Serving's ``--ssl_config_file``: a text-format ``SSLConfig`` (tensorflow_serving/config/
    ssl_config.proto: ``server_key``, ``server_cert``, ``custom_ca`` PEM strings, ``client_verify``)."""
    import ast
    import re
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    out: dict = {}
    token = re.compile(r'\s*(#[^\n]*|(\w+)\s*:\s*((?:"(?:[^"\\]|\\.)*"\s*)+|\w+))', re.S)
    pos = 0
    while pos < len(text.rstrip()):
        m = token.match(text, pos)
        if not m:
            raise ValueError(f"{path}: invalid SSLConfig text near {text[pos:pos + 40]!r}")
        pos = m.end()
        if m.group(1).startswith("#"):
            continue
        key, raw = m.group(2), m.group(3).strip()
        if key not in SSL_FIELDS:
            raise ValueError(f"{path}: SSLConfig has no field {key!r}")
        if SSL_FIELDS[key] is bool:
            if raw not in ("true", "false"):
                raise ValueError(f"{path}: {key} must be true or false")
            out[key] = raw == "true"
        else:
            out[key] = "".join(ast.literal_eval(part) for part in re.findall(r'"(?:[^"\\]|\\.)*"', raw))
    if not out.get("server_key") or not out.get("server_cert"):
        raise ValueError(f"{path}: SSLConfig needs server_key and server_cert")
    return out


def make_server(core: Core, host: str, port: int, max_threads: int,
                ssl: dict | None = None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(1, max_threads), thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", 2 ** 31 - 1),
                                  ("grpc.max_send_message_length", 2 ** 31 - 1),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if ssl:  # as TF Serving: the key pair, and client certificates checked against custom_ca when asked
            creds = grpc.ssl_server_credentials(
                [(ssl["server_key"].encode(), ssl["server_cert"].encode())],
                root_certificates=ssl["custom_ca"].encode() if ssl.get("custom_ca") else None,
                require_client_auth=bool(ssl.get("client_verify")))
            bound = server.add_secure_port(addr, creds)
        else:
            bound = server.add_insecure_port(addr)
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot bind the gRPC port {addr}")
    return server, bound
