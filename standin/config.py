"""TF Serving's model server config for the stand-in: ``--model_config_file`` (a text-format
``ModelServerConfig``, parsed with tensorflow-serving-api's own protobufs), the single-model config
that ``--model_name``/``--model_base_path`` build, and the checks TF Serving makes on every
(re)load (server_core.cc: ReloadConfig, ValidateModelConfigList, ValidateNoModelsChangePlatforms,
GetPlatform, UpdateModelVersionLabelMap; file_system_storage_path_source.cc for version policies).

Pure logic: nothing here loads a model or imports TensorFlow.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from .errors import (FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNIMPLEMENTED, UNKNOWN,
                     ServingError)

log = logging.getLogger("standin")

TENSORFLOW_PLATFORM = "tensorflow"          # the only platform in TF Serving's platform_config_map
SUPPORTED_PLATFORMS = (TENSORFLOW_PLATFORM,)
AVAILABLE = "AVAILABLE"
_URI_SCHEME = re.compile(r"[A-Za-z][0-9A-Za-z.]*://")

# config kinds (ModelServerConfig's `config` oneof)
NOT_SET, MODEL_CONFIG_LIST, CUSTOM_MODEL_CONFIG = "not set", "model_config_list", "custom_model_config"


@dataclass(frozen=True)
class VersionPolicy:
    """FileSystemStoragePathSourceConfig.ServableVersionPolicy: which versions on disk are aspired."""
    kind: str = "latest"                 # latest | all | specific
    num_versions: int = 1                # latest only
    versions: tuple[int, ...] = ()       # specific only, as listed

    @classmethod
    def from_proto(cls, policy) -> "VersionPolicy":
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            return cls("all")
        if choice == "specific":
            return cls("specific", versions=tuple(int(v) for v in policy.specific.versions))
        # unset -> latest; latest.num_versions 0 -> 1 (std::max(num_versions, 1U))
        n = policy.latest.num_versions if choice == "latest" else 0
        return cls("latest", num_versions=max(int(n), 1))

    def aspired(self, on_disk: Iterable[int]) -> tuple[set[int], list[int]]:
        """(aspired versions, versions a `specific` policy asks for that are not on disk)."""
        found = set(on_disk)
        if self.kind == "all":
            return found, []
        if self.kind == "specific":
            wanted = set(self.versions)
            return found & wanted, sorted(wanted - found)
        return set(sorted(found)[-self.num_versions:]), []

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + ", ".join(str(v) for v in self.versions)
        return self.kind


@dataclass(frozen=True)
class ModelConfig:
    """One ``model_config_list.config`` entry, checked."""
    name: str
    base_path: str
    platform: str = TENSORFLOW_PLATFORM
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: tuple[tuple[str, int], ...] = ()   # (label, version), sorted by label

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)


@dataclass(frozen=True)
class ServerConfig:
    """A ModelServerConfig as the stand-in applies it; ``proto`` is the message it came from."""
    kind: str
    models: tuple[ModelConfig, ...] = ()
    proto: object = field(default=None, compare=False, repr=False)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


EMPTY = ServerConfig(NOT_SET)


# ------------------------------------------------------------------------------------ reading
def _proto_module():
    from tensorflow_serving.config import model_server_config_pb2
    return model_server_config_pb2


def _invalid(source: str, problem) -> ServingError:
    """ParseProtoTextFile's error; ``detail`` is what protobuf's C++ text parser would log."""
    err = ServingError(INVALID_ARGUMENT, f"Invalid protobuf file: '{source}'")
    err.detail = f"Error parsing text-format tensorflow.serving.ModelServerConfig: {problem}"
    return err


def parse_text(text: str, source: str = "<text>"):
    """Text-format ModelServerConfig -> proto, or INVALID_ARGUMENT "Invalid protobuf file: '<source>'"
    (the parser's complaint in the error's ``detail``)."""
    from google.protobuf import text_format
    msg = _proto_module().ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise _invalid(source, exc) from None
    return msg


def read_config_file(path: str):
    """ParseProtoTextFile<ModelServerConfig>(path): a missing or unreadable file keeps TF's file
    error ("<path>; No such file or directory"), a malformed one is "Invalid protobuf file"."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ServingError(NOT_FOUND, f"{path}; No such file or directory") from None
    except IsADirectoryError:
        raise ServingError(FAILED_PRECONDITION, f"{path}; Is a directory") from None
    except PermissionError:
        raise ServingError(PERMISSION_DENIED, f"{path}; Permission denied") from None
    except OSError as exc:
        raise ServingError(UNKNOWN, f"{path}; {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(path, exc) from None
    return parse_text(text, path)


def single_model_proto(name: str, base_path: str):
    """BuildSingleModelConfig: what --model_name/--model_base_path mean (platform tensorflow,
    default version policy: latest 1)."""
    msg = _proto_module().ModelServerConfig()
    c = msg.model_config_list.config.add()
    c.name, c.base_path, c.model_platform = name, base_path, TENSORFLOW_PLATFORM
    return msg


# --------------------------------------------------------------------------------- checking
def _uri_is_relative_path(uri: str) -> bool:
    """UriIsRelativePath: no scheme://host and not starting with '/'."""
    return not _URI_SCHEME.match(uri) and not uri.startswith("/")


def platform_of(model) -> str:
    """GetPlatform: model_platform, or the deprecated model_type TENSORFLOW."""
    model_type = int(model.model_type)
    if model_type != 0:  # MODEL_TYPE_UNSPECIFIED
        log.warning("[stand-in] Deprecated ModelServerConfig::model_type field used. "
                    "Prefer ModelServerConfig::model_platform.")
        if model.model_platform:
            raise ServingError(INVALID_ARGUMENT, "Illegal setting both ModelServerConfig::model_type (deprecated) "
                                                 f"and ModelServerConfig::model_platform, model name is {model.name}")
        if model_type == 1:  # TENSORFLOW
            return TENSORFLOW_PLATFORM
        raise ServingError(INVALID_ARGUMENT, f"ModelServerConfig::model_type choice {model_type} not supported.")
    if not model.model_platform:
        raise ServingError(INVALID_ARGUMENT, "Illegal setting neither ModelServerConfig::model_type (deprecated) "
                                             f"nor ModelServerConfig::model_platform, model name is {model.name}")
    return model.model_platform


def check(proto, old: ServerConfig = EMPTY) -> ServerConfig:
    """ServerCore::ReloadConfig's checks of a new config against the current one; returns the
    typed config or raises ServingError with TF Serving's code and text."""
    kind = proto.WhichOneof("config") or NOT_SET
    same = old.proto is not None and old.proto == proto
    if not (old.kind == NOT_SET or same or (old.kind == MODEL_CONFIG_LIST and kind == MODEL_CONFIG_LIST)):
        raise ServingError(FAILED_PRECONDITION, "Cannot transition to requested config. It is only legal to "
                                                "transition from one ModelConfigList to another.")
    if kind == NOT_SET:
        return ServerConfig(NOT_SET, (), proto)
    if kind == CUSTOM_MODEL_CONFIG:
        # TF Serving's LoadCustomModelConfig is a LOG(FATAL): the process aborts
        raise ServingError(UNIMPLEMENTED, "ModelServer does not yet support custom model config.")
    entries = list(proto.model_config_list.config)
    seen: set[str] = set()
    for m in entries:
        if m.name in seen:
            raise ServingError(INVALID_ARGUMENT, f"Illegal to list model {m.name} multiple times in config list")
        seen.add(m.name)
    for m in entries:
        if _uri_is_relative_path(m.base_path):
            raise ServingError(INVALID_ARGUMENT, f"Expected model {m.name} to have an absolute path or URI; "
                                                 f"got base_path()={m.base_path}")
    old_platforms = {m.name: m.platform for m in old.models}
    models = []
    for m in entries:
        platform = platform_of(m)
        if m.name in old_platforms and old_platforms[m.name] != platform:
            raise ServingError(INVALID_ARGUMENT, f"Illegal to change a model's platform. For model {m.name} "
                                                 f"platform was {old_platforms[m.name]} and new platform requested "
                                                 f"is {platform}")
        models.append(ModelConfig(m.name, m.base_path, platform, VersionPolicy.from_proto(m.model_version_policy),
                                  tuple(sorted((k, int(v)) for k, v in m.version_labels.items()))))
    for m in models:  # CreateStoragePathRoutes
        if m.platform not in SUPPORTED_PLATFORMS:
            raise ServingError(INVALID_ARGUMENT, f"Model {m.name} requests unsupported platform {m.platform}")
    return ServerConfig(MODEL_CONFIG_LIST, tuple(models), proto)


def label_map(models: Iterable[ModelConfig], state_of: Callable[[str, int], str | None],
              current: Mapping[str, Mapping[str, int]], allow_unavailable: bool = False) -> dict[str, dict[str, int]]:
    """UpdateModelVersionLabelMap: every label must point at an AVAILABLE version of its model,
    except with --allow_version_labels_for_unavailable_models for a label that is new or keeps its
    version (a label already pointing elsewhere may only move to an AVAILABLE version).
    ``state_of(model, version)`` is the version's state name (None if never seen)."""
    new: dict[str, dict[str, int]] = {}
    for m in models:
        for label, version in m.labels:
            allowed = False
            if allow_unavailable:
                existing = current.get(m.name, {}).get(label)
                allowed = existing is None or existing == version
            if not allowed and state_of(m.name, version) != AVAILABLE:
                raise ServingError(FAILED_PRECONDITION, f"Request to assign label to version {version} of model "
                                                        f"{m.name}, which is not currently available for inference")
            new.setdefault(m.name, {})[label] = version
    return new


def describe(model: ModelConfig) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in model.labels)
    return (f"{model.name}: base_path {model.base_path}, platform {model.platform}, policy {model.policy}"
            + (f", labels {labels}" if labels else ""))
