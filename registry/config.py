"""config/models.yaml parsed once into typed objects, validated on load.

Only ``serving`` is needed by every command; other keys are checked by the command that needs them
(``ModelConfig.require``), so e.g. ``publish`` works for a model that has no ``checkpoints`` key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from registry.errors import ConfigError
from registry.s3 import S3Uri

MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
TASKS = ("detection", "segmentation", "classification")
INPUT_TYPES = ("image_tensor", "image_bytes", "tf_example")
KNOWN_KEYS = {
    "task", "checkpoints", "serving", "golden", "experiment", "params_override", "input_types",
    "input_size", "batch_size", "schedule", "keep", "output_normalized_coordinates",
    "class_dtype", "labels", "latency_budget_ms", "conn_id", "owner", "tags", "launcher",
    "tolerance", "alerts", "serving_image", "validation_deadline_s",
}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    serving: S3Uri
    task: str | None = None
    checkpoints: S3Uri | None = None
    golden: str | None = None
    experiment: str | None = None
    params_override: str | None = None
    input_types: dict[str, str] = field(default_factory=lambda: {"serving_default": "image_tensor"})
    input_size: tuple[int, int] | None = None
    batch_size: int | None = None
    schedule: str | None = None
    keep: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_prefix(self) -> S3Uri:
        """s3://<serving>/<model>/ as configured (the configured URI already names the model)."""
        return self.serving

    def require(self, *keys: str) -> "ModelConfig":
        missing = [k for k in keys if getattr(self, k) in (None, "", {})]
        if missing:
            raise ConfigError(f"model {self.name!r} in the config has no {', '.join(missing)}: "
                              f"add {' and '.join(repr(k) for k in missing)} under models.{self.name}.")
        return self


@dataclass(frozen=True)
class Config:
    path: str
    models: dict[str, ModelConfig]

    def model(self, name: str) -> ModelConfig:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(f"model {name!r} is not in {self.path} (configured: {known}).")
        return self.models[name]


def _uri(name: str, key: str, value: Any) -> S3Uri:
    if not isinstance(value, str):
        raise ConfigError(f"models.{name}.{key} must be an s3:// URI string, got {value!r}")
    try:
        return S3Uri.parse(value)
    except Exception as exc:  # BadInput from parse
        raise ConfigError(f"models.{name}.{key}: {exc}") from None


def parse_model(name: str, raw: Any, *, base_dir: str = ".") -> ModelConfig:
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise ConfigError(f"model name {name!r} is not valid: use lowercase letters, digits and '-' "
                          "(it becomes the TF Serving model name and a folder name).")
    if not isinstance(raw, dict):
        raise ConfigError(f"models.{name} must be a mapping of settings, got {type(raw).__name__}")
    unknown = set(raw) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"models.{name} has unknown key(s) {sorted(unknown)}; known keys: "
                          f"{sorted(KNOWN_KEYS)}")
    if "serving" not in raw:
        raise ConfigError(f"models.{name} has no 'serving' URI (s3://BUCKET/{name}/): every command needs it.")
    kw: dict[str, Any] = {"name": name, "serving": _uri(name, "serving", raw["serving"])}
    if raw.get("checkpoints") is not None:
        kw["checkpoints"] = _uri(name, "checkpoints", raw["checkpoints"])
    task = raw.get("task")
    if task is not None and task not in TASKS:
        raise ConfigError(f"models.{name}.task is {task!r}; use one of {', '.join(TASKS)}.")
    kw["task"] = task
    for key in ("golden", "experiment", "schedule"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str):
                raise ConfigError(f"models.{name}.{key} must be a string, got {raw[key]!r}")
            kw[key] = raw[key]
    if raw.get("params_override") is not None:
        p = raw["params_override"]
        kw["params_override"] = p if os.path.isabs(p) else os.path.join(base_dir, p)
    if kw.get("golden") and not kw["golden"].startswith("s3://") and not os.path.isabs(kw["golden"]):
        kw["golden"] = os.path.join(base_dir, kw["golden"])
    if "input_types" in raw:
        it = raw["input_types"]
        if not isinstance(it, dict) or not it:
            raise ConfigError(f"models.{name}.input_types must map signature names to input types, "
                              f"e.g. {{serving_default: image_tensor}}; got {it!r}")
        for sig, typ in it.items():
            if typ not in INPUT_TYPES:
                raise ConfigError(f"models.{name}.input_types.{sig} is {typ!r}; use one of "
                                  f"{', '.join(INPUT_TYPES)}.")
        kw["input_types"] = dict(it)
    if raw.get("input_size") is not None:
        s = raw["input_size"]
        if (not isinstance(s, (list, tuple)) or len(s) != 2
                or not all(isinstance(v, int) and v > 0 for v in s)):
            raise ConfigError(f"models.{name}.input_size must be [height, width] positive integers, got {s!r}")
        kw["input_size"] = (s[0], s[1])
    for key in ("batch_size", "keep"):
        if raw.get(key) is not None:
            v = raw[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"models.{name}.{key} must be a positive integer, got {v!r}")
            kw[key] = v
    kw["extra"] = {k: raw[k] for k in raw if k not in kw and k not in ("params_override",)}
    return ModelConfig(**kw)


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: pass --config PATH "
                          "(default config/models.yaml, relative to the current directory).") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError(f"config file {path} must have a top-level 'models:' mapping.")
    base_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))  # config/ lives in the repo root
    models = {name: parse_model(name, raw, base_dir=base_dir) for name, raw in data["models"].items()}
    return Config(path=path, models=models)
