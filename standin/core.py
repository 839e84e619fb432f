"""The request logic shared by the stand-in's REST and gRPC front ends, and its model config:
TF Serving's ServerCore (ReloadConfig, the version-label map, GetServableHandle),
GetModelStatusImpl, GetModelMetadataImpl and TensorflowPredictor, for the models it manages."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from . import config as cfg
from .errors import INVALID_ARGUMENT, NOT_FOUND, UNKNOWN, ServingError
from .manager import STATE_NUMBERS, ModelManager
from .servable import Servable

log = logging.getLogger("standin")

SIGNATURE_DEF_FIELD = "signature_def"

# (model config, fast initial load) -> a ModelManager, not started
ManagerFactory = Callable[[cfg.ModelConfig, bool], ModelManager]


class Core:
    def __init__(self, make_manager: ManagerFactory, stop: threading.Event, *,
                 allow_version_labels_for_unavailable_models: bool = False):
        self.make_manager = make_manager
        self.stop = stop
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self.managers: dict[str, ModelManager] = {}   # every model ever configured (removed ones keep states)
        self.config: cfg.ServerConfig = cfg.EMPTY
        self.labels: dict[str, dict[str, int]] = {}   # model -> label -> version (replaced whole)
        self._config_lock = threading.Lock()

    def manager(self, name: str) -> ModelManager | None:
        return self.managers.get(name)

    # ------------------------------------------------------------------------------ config
    def reload_config(self, proto, *, wait: bool = True) -> list[ModelManager]:
        """ServerCore::ReloadConfig: check the new config, update the label map, add/update/remove
        models, then (``wait``) wait until every newly added model has a version AVAILABLE or
        failed. Returns the added models' managers. Raises ServingError with TF Serving's texts;
        a config refused by a check (or by the label rules) changes nothing."""
        with self._config_lock:
            old = self.config
            new = cfg.check(proto, old)
            if new.kind == cfg.NOT_SET:
                log.info("[stand-in] Taking no action for empty config.")
                return []
            labels = cfg.label_map(new.models, self._state_of, self.labels, self.allow_unavailable_labels)
            self.labels = labels
            first = old.kind == cfg.NOT_SET
            log.info("[stand-in] Adding/updating models.")
            old_names = set(old.names)
            added: list[ModelManager] = []
            for model in new.models:
                log.info("[stand-in]  (Re-)adding model: %s", cfg.describe(model))
                m = self.managers.get(model.name)
                if m is None:
                    m = self.make_manager(model, first)
                    self.managers[model.name] = m
                    m.start(self.stop)
                    added.append(m)
                else:
                    m.configure(model.base_path, model.policy)
                    if model.name not in old_names:
                        added.append(m)
            for name in old_names - {m.name for m in new.models}:
                self.managers[name].configure(None, None)
            self.config = new
            if wait and added:
                errors = self.wait_until_reached(added)
                if errors:
                    raise ServingError(UNKNOWN, unavailable_message(errors, "servable(s)" if first else "model(s)"))
            log.info("[stand-in] Finished adding/updating models")
            log.info("[stand-in] Finished reloading config")
            return added

    def wait_until_reached(self, managers: list[ModelManager]) -> list[str] | None:
        """Blocks until each model has a version AVAILABLE or failed (ServableStateMonitor's
        Latest(model) reaching AVAILABLE or END); returns the failures, None when stopped."""
        for m in managers:
            while not m.reached.wait(0.2):
                if self.stop.is_set():
                    return None
        return [m.reached_error for m in managers if m.reached_error]

    def _state_of(self, name: str, version: int) -> str | None:
        m = self.managers.get(name)
        return m.state_of(version) if m is not None else None

    def same_config(self, proto) -> bool:
        return self.config.proto is not None and self.config.proto == proto

    # ------------------------------------------------------------------------------ requests
    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """ServerCore::GetServableHandle (acquired: release() it)."""
        if not name:
            raise ServingError(INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if label is not None:  # GetModelVersionForLabel
            version = self.labels.get(name, {}).get(label)
            if version is None:
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


def unavailable_message(errors: list[str], what: str) -> str:
    """TF Serving's "N servable(s) did not become available: {{...}, }" (startup) or
    "N model(s) ..." (new models on a reload)."""
    return f"{len(errors)} {what} did not become available: {{" + "".join(f"{{{e}}}, " for e in errors) + "}"
