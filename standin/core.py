"""The request logic shared by the stand-in's REST and gRPC front ends (TF Serving's ServerCore,
GetModelStatusImpl, GetModelMetadataImpl and TensorflowPredictor, for the models it manages)."""
from __future__ import annotations

from .errors import INVALID_ARGUMENT, NOT_FOUND, ServingError
from .manager import STATE_NUMBERS, ModelManager
from .servable import Servable

SIGNATURE_DEF_FIELD = "signature_def"


class Core:
    def __init__(self, managers: dict[str, ModelManager]):
        self.managers = managers

    def manager(self, name: str) -> ModelManager | None:
        return self.managers.get(name)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """ServerCore::GetServableHandle (acquired: release() it)."""
        if label:
            raise ServingError(INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        m = self.managers.get(name)
        if m is None:
            what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError(NOT_FOUND, f"Servable not found for request: {what}")
        return m.get(version)

    def servable_for_spec(self, spec) -> Servable:
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return self.servable(spec.name, spec.version.value)
        if choice == "version_label":
            return self.servable(spec.name, label=spec.version_label)
        return self.servable(spec.name)

    def model_status(self, name: str, version: int | None = None):
        from tensorflow_serving.apis import get_model_status_pb2
        m = self.managers.get(name)
        if m is None:
            if version is not None:
                raise ServingError(NOT_FOUND, f"Could not find version {version} of model {name}")
            raise ServingError(NOT_FOUND, f"Could not find any versions of model {name}")
        resp = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in m.status(version):
            s = resp.model_version_status.add()
            s.version = v
            s.state = STATE_NUMBERS[state]
            s.status.SetInParent()
            s.status.error_code = code
            s.status.error_message = message
        return resp

    def model_metadata(self, spec, fields=(SIGNATURE_DEF_FIELD,)):
        from tensorflow_serving.apis import get_model_metadata_pb2
        if not fields:
            raise ServingError(INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != SIGNATURE_DEF_FIELD:
                raise ServingError(INVALID_ARGUMENT, f"Metadata field {f} is not supported")
        servable = self.servable_for_spec(spec)
        try:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.signature_defs().items():
                sig_map.signature_def[key].CopyFrom(sig)
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            resp.model_spec.name = servable.name
            resp.model_spec.version.value = servable.version
            resp.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
            return resp
        finally:
            servable.release()
