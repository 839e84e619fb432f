"""config/models.yaml parsed once into typed objects, validated on load.

Only ``serving`` is needed by every command; other keys are checked by the command that needs them
(``ModelConfig.require``), so e.g. ``publish`` works for a model that has no ``checkpoints`` key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from registry import config_schema as schema
from registry.config_schema import (  # noqa: F401 - DEFAULT_*: read from here by the packages above
    DEFAULT_CHECKPOINT_POLL_S, DEFAULT_LATENCY_SAMPLES, DEFAULT_VALIDATION_BATCH_SIZE, MAX_DEFAULT_APPROVAL_TIMEOUT_S,
    METRIC_FLOORS, MODEL_NAME, UNREAD_KEYS)
from registry.errors import ConfigError
from registry.s3 import S3Uri

# every key a model entry may have, and the keys of its blocks (registry/config_schema.py is the schema)
KNOWN_KEYS = set(schema.keys(schema.Model))
TIMEOUT_KEYS = tuple(schema.keys(schema.Timeouts))
TOP_LEVEL_KEYS = ("models", "defaults", "serving_pool")
PER_MODEL_KEYS = ("serving", "checkpoints")  # never the same for two models: refused in defaults
ALERT_KEYS = set(schema.keys(schema.Alerts))
REPORT_LINK_MODES = ("airflow", "presigned")
# what starts a release: a new complete checkpoint (the triggerer watches the checkpoints prefix,
# and/or training posts an Asset event), or only the cron ``schedule``
TRIGGERS = ("checkpoint-event", "schedule")
REGRESSION_LIMITS = {k: f.description for k, f in schema.keys(schema.Regression).items()}


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
class Timeouts:
    """``timeouts:`` of a model, in seconds: each release task's ``execution_timeout`` (``other``:
    newest_checkpoint, is_new, clean_staging) and the run's ``dagrun_timeout`` (``run``). A task
    that runs out is killed like a task marked failed: its step process and containers go too."""
    export: float = 3600
    validate: float = 3600
    publish: float = 1800
    other: float = 600
    run: float = 4 * 3600


@dataclass(frozen=True)
class ServingPool:
    """Top-level ``serving_pool:``: the Airflow pool every validate task takes a slot of, so at most
    ``slots`` temporary serving containers run at once (created by the plugin when missing)."""
    name: str = "tfs_release_serving"
    slots: int = 4


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
    timeouts: Timeouts = field(default_factory=Timeouts)
    # checkpoint-event: a release starts when a new complete checkpoint lands (``schedule``, when set,
    # is a safety net beside it); schedule: only the cron ``schedule`` starts one
    trigger: str = "checkpoint-event"
    # seconds between two listings of the checkpoints prefix by the watcher on the triggerer;
    # 0: no watcher (the training job posts the Asset event itself)
    checkpoint_poll_s: float = DEFAULT_CHECKPOINT_POLL_S
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def validation_batch_size(self) -> int:
        return self.extra.get("validation_batch_size") or DEFAULT_VALIDATION_BATCH_SIZE

    @property
    def latency_samples(self) -> int:
        return self.extra.get("latency_samples") or DEFAULT_LATENCY_SAMPLES

    @property
    def approval_timeout_s(self) -> float:
        """Seconds the ``approve`` task waits for a decision (fits in ``timeouts.run``, see
        ``approval_timeout``)."""
        v = self.extra.get("approval_timeout_s")
        return float(v) if v is not None else default_approval_timeout(self.timeouts)

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
    serving_pool: ServingPool = field(default_factory=ServingPool)
    # models whose entry is invalid (``load(strict=False)``): name -> the error naming the key
    errors: dict[str, str] = field(default_factory=dict)

    def model(self, name: str) -> ModelConfig:
        if name in self.errors:
            raise ConfigError(self.errors[name])
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(f"model {name!r} is not in {self.path} (configured: {known}).")
        return self.models[name]


def _validate(block: type, raw: Any, where: str):
    """``raw`` checked against a schema block; ConfigError with the first problem, naming the key."""
    from pydantic import ValidationError
    try:
        return block.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(schema.problem(block, exc, where, raw)) from None


def _alerts(a) -> AlertsConfig:
    return AlertsConfig(slack_conn_id=a.slack_conn_id, smtp_conn_id=a.smtp_conn_id,
                        email_to=tuple(a.email_to or ()), email_from=a.email_from, on_success=a.on_success,
                        report_link=a.report_link)


def parse_alerts(name: str, raw: Any) -> AlertsConfig:
    """Validate ``models.<name>.alerts`` (no Airflow here: connection ids are checked by shape only)."""
    return _alerts(_validate(schema.Alerts, raw, f"models.{name}.alerts"))


def parse_model(name: str, raw: Any, *, base_dir: str = ".") -> ModelConfig:
    """One ``models:`` entry, validated against ``config_schema.Model``, as the ModelConfig the
    commands use (``extra``: the entry's other keys, typed)."""
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise ConfigError(f"model name {name!r} is not valid: use lowercase letters, digits and '-' "
                          "(it becomes the TF Serving model name and a folder name).")
    if not isinstance(raw, dict):
        raise ConfigError(f"models.{name} must be a mapping of settings, got {type(raw).__name__}")
    for key in sorted(set(raw) & set(UNREAD_KEYS)):
        raise ConfigError(f"models.{name}.{key} is not supported (nothing would read it): {UNREAD_KEYS[key]}. "
                          f"Remove it from models.{name}.")
    m = _validate(schema.Model, raw, f"models.{name}")
    kw: dict[str, Any] = {"name": name, "serving": S3Uri.parse(m.serving), "task": m.task}
    if m.checkpoints is not None:
        kw["checkpoints"] = S3Uri.parse(m.checkpoints)
    for key in ("golden", "experiment", "schedule"):
        if getattr(m, key) is not None:
            kw[key] = getattr(m, key)
    if m.params_override is not None:
        kw["params_override"] = m.params_override if os.path.isabs(m.params_override) \
            else os.path.join(base_dir, m.params_override)
    if kw.get("golden") and not kw["golden"].startswith("s3://") and not os.path.isabs(kw["golden"]):
        kw["golden"] = os.path.join(base_dir, kw["golden"])
    if "input_types" in raw:
        kw["input_types"] = dict(m.input_types)
    if m.input_size is not None:
        kw["input_size"] = (m.input_size[0], m.input_size[1])
    if m.batch_size is not None:
        kw["batch_size"] = m.batch_size
    kw["trigger"] = m.trigger
    if "checkpoint_poll_s" in m.model_fields_set:
        kw["checkpoint_poll_s"] = float(m.checkpoint_poll_s)
    if m.timeouts is not None:
        kw["timeouts"] = Timeouts(**m.timeouts.model_dump(by_alias=True))
    extra = {k: raw[k] for k in raw if k not in kw and k not in ("params_override", "timeouts")}
    if m.alerts is not None:
        extra["alerts"] = _alerts(m.alerts)
    for key in METRIC_FLOORS:
        if getattr(m, key) is not None:
            extra[key] = float(getattr(m, key))
    if m.report_base_url is not None:
        extra["report_base_url"] = m.report_base_url.rstrip("/")
    if m.regression is not None:
        extra["regression"] = {k: (None if v is None else float(v))
                               for k, v in m.regression.model_dump(exclude_unset=True).items()}
    if m.production is not None:
        p = m.production
        extra["production"] = {
            "endpoints": [{k: (v.rstrip("/") if k == "rest" else v)
                           for k, v in e.model_dump(exclude_none=True).items()} for e in p.endpoints],
            "confirm_deadline_s": float(p.confirm_deadline_s), **({"conn_id": p.conn_id} if p.conn_id else {})}
    extra["approval_timeout_s"] = (float(m.approval_timeout_s) if m.approval_timeout_s is not None
                                   else default_approval_timeout(kw.get("timeouts") or Timeouts()))
    return ModelConfig(**kw, extra=extra)


def default_approval_timeout(t: Timeouts) -> float:
    """``approval_timeout_s`` when unset: what the run leaves after publish and the other tasks
    (``timeouts.run - timeouts.publish - timeouts.other``), at most a day. (That an explicit one fits
    in the run is the schema's rule: ``config_schema.Model``.)"""
    return min(MAX_DEFAULT_APPROVAL_TIMEOUT_S, t.run - t.publish - t.other)


def parse_defaults(path: str, raw: Any) -> dict:
    """``defaults:``: model keys every model gets unless it sets them (each is then checked as the
    model's own). A wrong key here is an error of the file, not of one model."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: defaults must be a mapping of model keys, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: defaults has unknown key(s) {unknown}; known keys: {sorted(KNOWN_KEYS)}")
    own = sorted(set(raw) & set(PER_MODEL_KEYS))
    if own:
        raise ConfigError(f"config file {path}: defaults.{own[0]} would give every model the same location; "
                          f"set {', '.join(own)} in each model instead")
    return dict(raw)


def parse_serving_pool(raw: Any) -> ServingPool:
    if raw is None:
        return ServingPool()
    p = _validate(schema.ServingPool, raw, "serving_pool")
    return ServingPool(name=p.name, slots=p.slots)


OVERLAY_ENV = "TFS_RELEASE_CONFIG_OVERLAY"
# the overlay's text itself: how a DAG's step container gets the overlay the Airflow side read (the
# file need not be baked into the worker image; the step sees what decided the run). Wins over the path.
OVERLAY_TEXT_ENV = "TFS_RELEASE_CONFIG_OVERLAY_YAML"


def overlay_env() -> dict[str, str]:
    """The deployment's overlay as a step container gets it: the text of the file this side reads now
    (``TFS_RELEASE_CONFIG_OVERLAY``), so the step decides with the same config as the DAG and the
    worker image needs no copy of it. {} without an overlay."""
    path = os.environ.get(OVERLAY_ENV, "").strip()
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            return {OVERLAY_ENV: path, OVERLAY_TEXT_ENV: fh.read()}
    except OSError as exc:
        raise ConfigError(f"{OVERLAY_ENV}={path}: cannot read it ({exc}): fix the path or unset it") from None


def apply_overlay(data: dict, path: str, text: str | None = None) -> None:
    """A deployment's additions to the models config (``TFS_RELEASE_CONFIG_OVERLAY``: a YAML file
    ``models: {<name>: {key: value}}``; or its ``text``): each key given replaces the model's own.
    For settings only one deployment has, e.g. the compose stack's production endpoints
    (config/compose.overlay.yaml)."""
    try:
        if text is not None:
            extra = yaml.safe_load(text)
        else:
            with open(path, encoding="utf-8") as fh:
                extra = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{OVERLAY_ENV}={path}: no such file (unset it, or fix the path)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{OVERLAY_ENV}={path} is not valid YAML: {exc}") from None
    if not isinstance(extra, dict) or set(extra) != {"models"} or not isinstance(extra["models"], dict):
        raise ConfigError(f"{OVERLAY_ENV}={path} must be a 'models:' mapping of model names to settings")
    for name, keys in extra["models"].items():
        if name not in data["models"]:
            raise ConfigError(f"{OVERLAY_ENV}={path} names model {name!r}, which the models config does not have "
                              f"(models: {', '.join(map(str, data['models']))})")
        if not isinstance(keys, dict) or not isinstance(data["models"][name], dict):
            raise ConfigError(f"{OVERLAY_ENV}={path}: models.{name} must be a mapping of settings")
        data["models"][name] = {**data["models"][name], **keys}


def load(path: str, *, strict: bool = True) -> Config:
    """Parse and validate ``path``. ``strict`` (the CLI): the first invalid model entry raises.
    Otherwise (the DAG files) invalid entries land in ``Config.errors`` and the rest load, so one bad
    model does not take the others down; a broken file or top-level key still raises."""
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
    overlay, text = os.environ.get(OVERLAY_ENV, "").strip(), os.environ.get(OVERLAY_TEXT_ENV)
    if text is not None:
        apply_overlay(data, overlay or OVERLAY_TEXT_ENV, text)
    elif overlay:
        apply_overlay(data, overlay)
    unknown = set(data) - set(TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"config file {path} has unknown top-level key(s) {sorted(map(str, unknown))}; "
                          f"known: {list(TOP_LEVEL_KEYS)}")
    base_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))  # config/ lives in the repo root
    defaults = parse_defaults(path, data.get("defaults"))
    models, errors = {}, {}
    for name, raw in data["models"].items():
        if defaults and isinstance(raw, dict):
            merged = {**defaults, **raw}
            if merged.get("trigger") == "schedule" and "checkpoint_poll_s" not in raw:
                merged.pop("checkpoint_poll_s", None)   # a default watcher setting is not this model's mistake
            raw = merged
        try:
            models[name] = parse_model(name, raw, base_dir=base_dir)
        except ConfigError as exc:
            if strict:
                raise
            errors[str(name)] = str(exc)
    return Config(path=path, models=models, serving_pool=parse_serving_pool(data.get("serving_pool")),
                  errors=errors)
