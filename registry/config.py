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
    "tolerance", "alerts", "serving_image", "validation_deadline_s", "report_base_url",
    "staging_keep_days", "validation_batch_size", "latency_samples",
    "min_map", "min_ap50", "min_accuracy", "min_miou_set",
}
# golden-set metric floors: config key -> the task whose set metric it bounds (validation/metrics.py)
METRIC_FLOORS = {"min_map": "detection", "min_ap50": "detection", "min_accuracy": "classification",
                 "min_miou_set": "segmentation"}
ALERT_KEYS = {"slack_conn_id", "smtp_conn_id", "email_to", "email_from", "on_success", "report_link"}
REPORT_LINK_MODES = ("airflow", "presigned")
DEFAULT_VALIDATION_BATCH_SIZE = 32  # golden images per predict request (validator and exporter)
DEFAULT_LATENCY_SAMPLES = 20  # single-image requests per protocol and signature for p50/p95
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+$")


@dataclass(frozen=True)
class AlertsConfig:
    """``alerts:`` of a model: where the release DAG's notifiers send (Airflow connection ids)."""
    slack_conn_id: str | None = None
    smtp_conn_id: str | None = None
    email_to: tuple[str, ...] = ()
    email_from: str | None = None
    on_success: bool = False
    # how the alert links the report when no report_base_url is set: "airflow" (the report endpoint
    # on Airflow's API server: needs an Airflow login) or "presigned" (an S3 presigned URL, 7 days:
    # anyone holding the message can open it, and it carries the access key id)
    report_link: str = "airflow"


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
    def validation_batch_size(self) -> int:
        return self.extra.get("validation_batch_size") or DEFAULT_VALIDATION_BATCH_SIZE

    @property
    def latency_samples(self) -> int:
        return self.extra.get("latency_samples") or DEFAULT_LATENCY_SAMPLES

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


def parse_alerts(name: str, raw: Any) -> AlertsConfig:
    """Validate ``models.<name>.alerts`` (no Airflow here: connection ids are checked by shape only)."""
    where = f"models.{name}.alerts"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, e.g. {{slack_conn_id: slack_alerts, smtp_conn_id: "
                          f"smtp_alerts, email_to: [ml-oncall@example.com]}}; got {raw!r}")
    unknown = set(raw) - ALERT_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {sorted(unknown)}; known keys: {sorted(ALERT_KEYS)}")
    kw: dict[str, Any] = {}
    for key in ("slack_conn_id", "smtp_conn_id"):
        v = raw.get(key)
        if v is not None:
            if not isinstance(v, str) or not CONN_ID.match(v):
                raise ConfigError(f"{where}.{key} must be an Airflow connection id (letters, digits, "
                                  f"'_', '-', '.'), got {v!r}")
            kw[key] = v
    to = raw.get("email_to")
    if to is not None:
        to = [to] if isinstance(to, str) else to
        if not isinstance(to, list) or not to or not all(isinstance(a, str) and EMAIL.match(a) for a in to):
            raise ConfigError(f"{where}.email_to must be an e-mail address or a non-empty list of them, "
                              f"got {raw['email_to']!r}")
        kw["email_to"] = tuple(to)
    frm = raw.get("email_from")
    if frm is not None:
        if not isinstance(frm, str) or not EMAIL.match(frm.rsplit("<", 1)[-1].rstrip(">").strip()):
            raise ConfigError(f"{where}.email_from must be an e-mail address, got {frm!r}")
        kw["email_from"] = frm
    if ("email_to" in kw or "email_from" in kw) and "smtp_conn_id" not in kw:
        raise ConfigError(f"{where} has email_to/email_from but no smtp_conn_id: name the Airflow SMTP "
                          "connection that sends the e-mail.")
    if "smtp_conn_id" in kw and "email_to" not in kw:
        raise ConfigError(f"{where}.smtp_conn_id is set but email_to is missing: list who gets the e-mail.")
    if "slack_conn_id" not in kw and "smtp_conn_id" not in kw:
        raise ConfigError(f"{where} names no channel: set slack_conn_id and/or smtp_conn_id (with "
                          "email_to), or remove the alerts key.")
    on_success = raw.get("on_success", False)
    if not isinstance(on_success, bool):
        raise ConfigError(f"{where}.on_success must be true or false, got {on_success!r}")
    report_link = raw.get("report_link", "airflow")
    if report_link not in REPORT_LINK_MODES:
        raise ConfigError(f"{where}.report_link must be one of {list(REPORT_LINK_MODES)} (airflow: the "
                          f"report through Airflow's API server, behind its login; presigned: an S3 "
                          f"presigned URL valid 7 days), got {report_link!r}")
    return AlertsConfig(**kw, on_success=on_success, report_link=report_link)


def _http_base(name: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ConfigError(f"models.{name}.{key} must be an http(s):// URL (e.g. an internal HTTPS proxy "
                          f"over the serving bucket), got {value!r}")
    return value.rstrip("/")


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
    if raw.get("alerts") is not None:  # typed: AlertsConfig
        kw["extra"]["alerts"] = parse_alerts(name, raw["alerts"])
    if raw.get("staging_keep_days") is not None:
        v = raw["staging_keep_days"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"models.{name}.staging_keep_days must be a number of days >= 0 (how long "
                              f"a failed or dry run's staged candidate is kept), got {v!r}")
    for key, what in (("validation_batch_size", "golden images per predict request (1: one at a time)"),
                      ("latency_samples", "single-image requests timed per protocol and signature")):
        if raw.get(key) is not None:
            v = raw[key]
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1000:
                raise ConfigError(f"models.{name}.{key} must be an integer from 1 to 1000 ({what}), got {v!r}")
    for key, floor_task in METRIC_FLOORS.items():
        if raw.get(key) is not None:
            v = raw[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise ConfigError(f"models.{name}.{key} must be a number from 0 to 1 (the lowest golden-set "
                                  f"metric that passes validation), got {v!r}")
            if task is not None and task != floor_task:
                others = ", ".join(k for k, t in METRIC_FLOORS.items() if t == task)
                raise ConfigError(f"models.{name}.{key} is a {floor_task} metric floor but the model's task is "
                                  f"{task}: remove it (floors for {task}: {others}).")
            kw["extra"][key] = float(v)
    if raw.get("report_base_url") is not None:
        kw["extra"]["report_base_url"] = _http_base(name, "report_base_url", raw["report_base_url"])
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
