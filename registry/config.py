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
    "input_size", "batch_size", "schedule", "output_normalized_coordinates", "timeouts",
    "class_dtype", "latency_budget_ms", "conn_id", "owner", "tags", "launcher",
    "tolerance", "alerts", "serving_image", "validation_deadline_s", "report_base_url",
    "staging_keep_days", "validation_batch_size", "latency_samples", "regression", "production",
    "on_failed_rollout", "on_unknown_rollout", "approval", "approval_timeout_s", "rollout",
    "min_map", "min_ap50", "min_accuracy", "min_miou_set", "trigger", "checkpoint_poll_s",
}
# keys that were accepted once but nothing reads: refused with what to use instead
UNREAD_KEYS = {
    "keep": "retention is not a per-model setting: run `tfs-release retention MODEL --keep K` for the "
            "serving bucket (it leaves tombstones; never the newest or a rollback target) and give the "
            "sync sidecar `--keep K` for the local volume",
    "labels": "class names come from the golden set (golden.json 'classes'); TF Serving version labels "
              "(stable/canary) are not set from this file",
}
# release DAG timeouts (seconds): execution_timeout per task, and the run's dagrun_timeout
TIMEOUT_KEYS = ("export", "validate", "publish", "other", "run")
TOP_LEVEL_KEYS = ("models", "serving_pool")
POOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
# golden-set metric floors: config key -> the task whose set metric it bounds (validation/metrics.py)
METRIC_FLOORS = {"min_map": "detection", "min_ap50": "detection", "min_accuracy": "classification",
                 "min_miou_set": "segmentation"}
ALERT_KEYS = {"slack_conn_id", "smtp_conn_id", "email_to", "email_from", "on_success", "report_link"}
REPORT_LINK_MODES = ("airflow", "presigned")
DEFAULT_VALIDATION_BATCH_SIZE = 32  # golden images per predict request (validator and exporter)
DEFAULT_LATENCY_SAMPLES = 20  # single-image requests per protocol and signature for p50/p95
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
# what starts a release run: a new complete checkpoint (the triggerer watches the checkpoints prefix,
# and/or training posts an Asset event), or only the cron ``schedule``
TRIGGERS = ("checkpoint-event", "schedule")
DEFAULT_CHECKPOINT_POLL_S = 5.0
# approval_timeout_s when unset: what the run's timeout leaves after the decision, at most a day
MAX_DEFAULT_APPROVAL_TIMEOUT_S = 86400.0
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
    for key in sorted(set(raw) & set(UNREAD_KEYS)):
        raise ConfigError(f"models.{name}.{key} is not supported (nothing would read it): {UNREAD_KEYS[key]}. "
                          f"Remove it from models.{name}.")
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
    for key in ("batch_size",):
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
    if raw.get("regression") is not None:
        kw["extra"]["regression"] = parse_regression(name, raw["regression"])
    if raw.get("production") is not None:
        kw["extra"]["production"] = parse_production(name, raw["production"])
    if raw.get("rollout") is not None and raw["rollout"] not in ("all", "canary"):
        raise ConfigError(f"models.{name}.rollout must be all (the newest version takes all traffic) or canary "
                          f"(a new version is the canary label beside stable until promoted), got {raw['rollout']!r}")
    if raw.get("approval") is not None and raw["approval"] not in ("required", "on_regression", "none"):
        raise ConfigError(f"models.{name}.approval must be required (a person approves every release), "
                          f"on_regression (only a release whose accepted regression the gate found) or none, "
                          f"got {raw['approval']!r}")
    if raw.get("approval_timeout_s") is not None:
        v = raw["approval_timeout_s"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"models.{name}.approval_timeout_s must be a number of seconds > 0 (how long a "
                              f"release waits for a decision before it fails), got {v!r}")
    if raw.get("on_failed_rollout") is not None and raw["on_failed_rollout"] not in ("rollback", "alert"):
        raise ConfigError(f"models.{name}.on_failed_rollout must be rollback (publish the previous good version "
                          f"again) or alert (only alert), got {raw['on_failed_rollout']!r}")
    if raw.get("on_unknown_rollout") is not None and raw["on_unknown_rollout"] not in ("alert", "rollback"):
        raise ConfigError(f"models.{name}.on_unknown_rollout must be alert (production could not be observed: "
                          f"alert, roll nothing back; the default) or rollback (treat it as failed), "
                          f"got {raw['on_unknown_rollout']!r}")
    if raw.get("validation_deadline_s") is not None:
        v = raw["validation_deadline_s"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"models.{name}.validation_deadline_s must be a number of seconds > 0 (how long "
                              f"validation waits for the server to say AVAILABLE), got {v!r}")
    kw.update(parse_trigger(name, raw, kw.get("schedule")))
    for key in ("trigger", "checkpoint_poll_s"):
        kw["extra"].pop(key, None)
    kw.pop("timeouts", None)
    kw["extra"].pop("timeouts", None)
    if raw.get("timeouts") is not None:
        kw["timeouts"] = parse_timeouts(name, raw["timeouts"])
    kw["extra"]["approval_timeout_s"] = approval_timeout(name, raw, kw.get("timeouts") or Timeouts())
    return ModelConfig(**kw)


def default_approval_timeout(t: Timeouts) -> float:
    """``approval_timeout_s`` when unset: what the run leaves after publish and the other tasks
    (``timeouts.run - timeouts.publish - timeouts.other``), at most a day."""
    return min(MAX_DEFAULT_APPROVAL_TIMEOUT_S, t.run - t.publish - t.other)


def approval_timeout(name: str, raw: dict, t: Timeouts) -> float:
    """The seconds the ``approve`` task waits for a decision. It must fit in the run with room for the
    rest of the release after the decision (``approval_timeout_s + timeouts.publish + timeouts.other
    <= timeouts.run``): else the run's ``dagrun_timeout`` ends it first, ``approve`` is skipped instead
    of failing, and its alert never goes out."""
    room = t.run - t.publish - t.other
    v = raw.get("approval_timeout_s")
    if v is None:
        if raw.get("approval") in ("required", "on_regression") and room <= 0:
            raise ConfigError(f"models.{name}.timeouts leave no time for approval: run ({t.run:g}s) minus publish "
                              f"({t.publish:g}s) and other ({t.other:g}s) is {room:g}s. Raise timeouts.run, or "
                              f"lower timeouts.publish/other.")
        return default_approval_timeout(t)
    if v + t.publish + t.other > t.run:
        raise ConfigError(f"models.{name}.approval_timeout_s ({v:g}s) does not fit in timeouts.run ({t.run:g}s): "
                          f"after the decision publish ({t.publish:g}s) and the other tasks ({t.other:g}s) still "
                          f"need time, so the run would time out before the approval does (approve skipped, not "
                          f"failed with its reason). " + (f"Lower approval_timeout_s to at most {room:g}, or raise" if room > 0
                                         else "Raise") + f" timeouts.run to at least {v + t.publish + t.other:g}.")
    return float(v)


def parse_trigger(name: str, raw: dict, schedule: str | None) -> dict:
    """``trigger`` and ``checkpoint_poll_s`` of a model (see ModelConfig)."""
    trigger = raw.get("trigger", "checkpoint-event")
    if trigger not in TRIGGERS:
        raise ConfigError(f"models.{name}.trigger must be checkpoint-event (a release starts when a new complete "
                          f"checkpoint lands; a cron 'schedule' beside it is a safety net) or schedule (only the "
                          f"cron 'schedule' starts one), got {trigger!r}")
    if trigger == "schedule" and not schedule:
        raise ConfigError(f"models.{name}.trigger is schedule but the model has no 'schedule': add one (e.g. "
                          f"schedule: \"@hourly\"), or use trigger: checkpoint-event.")
    if trigger == "checkpoint-event" and schedule in ("@once", "@continuous"):
        raise ConfigError(f"models.{name}.schedule {schedule!r} cannot be a safety net beside trigger: "
                          f"checkpoint-event: use a cron expression (e.g. \"@daily\"), or remove it.")
    out: dict = {"trigger": trigger}
    poll = raw.get("checkpoint_poll_s")
    if poll is not None:
        if trigger == "schedule":
            raise ConfigError(f"models.{name}.checkpoint_poll_s is set but trigger is schedule: nothing watches "
                              f"the checkpoints. Remove it, or use trigger: checkpoint-event.")
        if (not isinstance(poll, (int, float)) or isinstance(poll, bool)
                or not (poll == 0 or 1 <= poll <= 86400)):
            raise ConfigError(f"models.{name}.checkpoint_poll_s must be a number of seconds from 1 to 86400 (how "
                              f"often the triggerer lists the checkpoints), or 0 (no watcher: the training job "
                              f"posts the Asset event itself), got {poll!r}")
        out["checkpoint_poll_s"] = float(poll)
    return out


REGRESSION_LIMITS = {
    "max_metric_drop": "the largest drop of a gated golden-set metric (accuracy, AP@0.5, mAP, set mIoU), e.g. 0.02",
    "max_flip_rate": "the largest share of golden images the baseline passes and the candidate fails, e.g. 0.0",
    "max_latency_ratio": "the largest p50 latency of the candidate over the baseline's, e.g. 1.5",
    "max_memory_ratio": "the largest memory of the candidate over the baseline's, e.g. 2.0",
    "serving_memory_limit_mb": "the memory (MB) baseline and candidate may take together in one server",
}


def parse_production(name: str, raw: Any) -> dict:
    """``models.<name>.production``: the production TF Serving replicas,
    ``{endpoints: [{rest: http://host:8501, grpc: host:8500}, ...], confirm_deadline_s: 600,
    conn_id: <Airflow connection with their credentials/TLS, optional>}``."""
    where = f"models.{name}.production"
    shape = ("{endpoints: [{rest: http://host:8501, grpc: host:8500}, ...], confirm_deadline_s: 600, "
             "conn_id: tfs_production (optional)}")
    if not isinstance(raw, dict) or set(raw) - {"endpoints", "confirm_deadline_s", "conn_id"}:
        raise ConfigError(f"{where} must be {shape}, got {raw!r}")
    conn_id = raw.get("conn_id")
    if conn_id is not None and (not isinstance(conn_id, str) or not CONN_ID.match(conn_id)):
        raise ConfigError(f"{where}.conn_id must be an Airflow connection id (letters, digits, _ . -), "
                          f"got {conn_id!r}")
    eps = raw.get("endpoints")
    if not isinstance(eps, list) or not eps:
        raise ConfigError(f"{where}.endpoints must be a non-empty list of {{rest: http://host:8501, grpc: "
                          f"host:8500}} (one per TF Serving replica), got {eps!r}")
    out = []
    for i, ep in enumerate(eps):
        if not isinstance(ep, dict) or not ep or set(ep) - {"rest", "grpc"}:
            raise ConfigError(f"{where}.endpoints[{i}] must be {{rest: http://host:8501, grpc: host:8500}} "
                              f"(either or both), got {ep!r}")
        e = {}
        if ep.get("rest") is not None:
            e["rest"] = _http_base(name, f"production.endpoints[{i}].rest", ep["rest"])
        if ep.get("grpc") is not None:
            g = ep["grpc"]
            host, _, port = str(g).rpartition(":")
            if not isinstance(g, str) or not host or not port.isdigit() or "/" in g:
                raise ConfigError(f"{where}.endpoints[{i}].grpc must be host:port (e.g. tf-serving:8500), got {g!r}")
            e["grpc"] = g
        out.append(e)
    deadline = raw.get("confirm_deadline_s", 600)
    if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or deadline <= 0:
        raise ConfigError(f"{where}.confirm_deadline_s must be a number of seconds > 0, got {deadline!r}")
    return {"endpoints": out, "confirm_deadline_s": float(deadline), **({"conn_id": conn_id} if conn_id else {})}


def parse_regression(name: str, raw: Any) -> dict:
    """``models.<name>.regression``: the regression gate's limits (validation/regression.py)."""
    where = f"models.{name}.regression"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of limits ({', '.join(REGRESSION_LIMITS)}), got {raw!r}")
    unknown = set(raw) - set(REGRESSION_LIMITS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; the limits are "
                          f"{', '.join(REGRESSION_LIMITS)}")
    out = {}
    for k, v in raw.items():
        if v is None and k == "serving_memory_limit_mb":
            out[k] = None
            continue
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        lo_ok = number and ((v >= 0) if k in ("max_metric_drop", "max_flip_rate") else (v > 0))
        if not lo_ok or (k == "max_flip_rate" and v > 1):
            raise ConfigError(f"{where}.{k} must be a number{' from 0 to 1' if k == 'max_flip_rate' else ' > 0' if not k.startswith('max_metric') else ' >= 0'} "
                              f"({REGRESSION_LIMITS[k]}), got {v!r}")
        out[k] = float(v)
    return out


def parse_timeouts(name: str, raw: Any) -> Timeouts:
    """``models.<name>.timeouts``: seconds > 0 per key; ``run`` at least each task's."""
    where = f"models.{name}.timeouts"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map {', '.join(TIMEOUT_KEYS)} to seconds, e.g. {{export: 3600, "
                          f"validate: 3600, run: 14400}}; got {raw!r}")
    unknown = set(raw) - set(TIMEOUT_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {sorted(map(str, unknown))}; known: {list(TIMEOUT_KEYS)} "
                          "(other: newest_checkpoint, is_new, clean_staging; run: the whole DAG run)")
    for key, v in raw.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{where}.{key} must be a number of seconds > 0, got {v!r}")
    t = Timeouts(**{k: float(v) for k, v in raw.items()})
    longest = max(TIMEOUT_KEYS[:-1], key=lambda k: getattr(t, k))
    if t.run < getattr(t, longest):
        raise ConfigError(f"{where}.run ({t.run:g}s) is shorter than timeouts.{longest} ({getattr(t, longest):g}s): "
                          f"the run would be cut before that task could time out; raise run or lower {longest}.")
    return t


def parse_serving_pool(raw: Any) -> ServingPool:
    if raw is None:
        return ServingPool()
    if not isinstance(raw, dict) or set(raw) - {"name", "slots"}:
        raise ConfigError(f"serving_pool must be a mapping with name and/or slots, e.g. {{name: tfs_release_serving, "
                          f"slots: 4}}; got {raw!r}")
    name, slots = raw.get("name", ServingPool.name), raw.get("slots", ServingPool.slots)
    if not isinstance(name, str) or not POOL_NAME.match(name):
        raise ConfigError(f"serving_pool.name must be an Airflow pool name (letters, digits, '_', '-', '.'), "
                          f"got {name!r}")
    if not isinstance(slots, int) or isinstance(slots, bool) or not 1 <= slots <= 1000:
        raise ConfigError(f"serving_pool.slots must be an integer from 1 to 1000 (temporary serving containers "
                          f"at once), got {slots!r}")
    return ServingPool(name=name, slots=slots)


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
    models, errors = {}, {}
    for name, raw in data["models"].items():
        try:
            models[name] = parse_model(name, raw, base_dir=base_dir)
        except ConfigError as exc:
            if strict:
                raise
            errors[str(name)] = str(exc)
    return Config(path=path, models=models, serving_pool=parse_serving_pool(data.get("serving_pool")),
                  errors=errors)
