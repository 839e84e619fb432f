"""The schema of ``config/models.yaml`` as typed pydantic models: every key's type, bounds, default
and meaning in one place. ``registry/config.py`` validates with it and turns the first problem into
one specific ``ConfigError`` naming the key (``problem``); ``docs/configuration.md``'s reference
tables are generated from it (``reference``; ``python -m registry.config_schema`` prints them,
``--write`` puts them in the page; a unit test keeps the page in step).

Each field carries, besides its description:
- ``must``: what a valid value is, for the error "models.m.<key> must be <must>, got <value>";
- or ``tail``: the error's text after the key's path, with ``{value}`` (e.g. "is 'x'; use one of ...");
- ``section``: the docs table it is listed in; ``shown_default`` when the default is not a literal.
Rules between keys (a floor for another task, an approval that does not fit in the run, ...) are
model validators raising ``ValueError`` with the text after the path of the key they name.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
POOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+$")
HTTP_BASE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
TASKS = ("detection", "segmentation", "classification")
INPUT_TYPES = ("image_tensor", "image_bytes", "tf_example")
# golden-set metric floors: config key -> the task whose set metric it bounds (validation/metrics.py)
METRIC_FLOORS = {"min_map": "detection", "min_ap50": "detection", "min_accuracy": "classification",
                 "min_miou_set": "segmentation"}
DEFAULT_CHECKPOINT_POLL_S = 5.0
DEFAULT_VALIDATION_BATCH_SIZE = 32  # golden images per predict request (validator and exporter)
DEFAULT_LATENCY_SAMPLES = 20  # single-image requests per protocol and signature for p50/p95
# approval_timeout_s when unset: what the run's timeout leaves after the decision, at most a day
MAX_DEFAULT_APPROVAL_TIMEOUT_S = 86400.0

Seconds = Annotated[float, Field(gt=0)]


def _f(default: Any = None, *, description: str, must: str | None = None, tail: str | None = None,
       section: str | None = None, shown_default: str | None = None, missing: str | None = None, **kw):
    extra = {k: v for k, v in (("must", must), ("tail", tail), ("section", section),
                               ("shown_default", shown_default), ("missing", missing)) if v is not None}
    return Field(default, description=description, json_schema_extra=extra, **kw)


class _Block(BaseModel):
    """A mapping of settings: unknown keys are refused, types are not coerced ("8" is not 8)."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)
    # the errors of the block as a whole: {value}, {unknown}, {known} are filled in
    shape_error: ClassVar[str] = "must be a mapping, got {value!r}"
    unknown_error: ClassVar[str] = "has unknown key(s) {unknown}; known keys: {known}"


class Timeouts(_Block):
    shape_error = ("must map export, validate, publish, other, run to seconds, e.g. {{export: 3600, "
                   "validate: 3600, run: 14400}}; got {value!r}")
    unknown_error = ("has unknown key(s) {unknown}; known: ['export', 'validate', 'publish', 'other', 'run'] "
                     "(other: newest_checkpoint, is_new, clean_staging; run: the whole DAG run)")
    export: Seconds = _f(3600.0, description="the `export` task", must="a number of seconds > 0")
    validate_: Seconds = _f(3600.0, description="the `validate` task, and the life of its temporary serving "
                                                "container", must="a number of seconds > 0", alias="validate")
    publish: Seconds = _f(1800.0, description="the `publish` task", must="a number of seconds > 0")
    other: Seconds = _f(600.0, description="`newest_checkpoint`, `is_new`, `clean_staging`",
                        must="a number of seconds > 0")
    run: Seconds = _f(14400.0, description="the whole run; at least each task's", must="a number of seconds > 0")

    @model_validator(mode="after")
    def _run_is_longest(self):
        tasks = self.model_dump(by_alias=True)
        longest = max(("export", "validate", "publish", "other"), key=lambda k: tasks[k])
        if self.run < tasks[longest]:
            raise ValueError(f".run ({self.run:g}s) is shorter than timeouts.{longest} ({tasks[longest]:g}s): "
                             f"the run would be cut before that task could time out; raise run or lower {longest}.")
        return self


ConnId = Annotated[str, Field(pattern=CONN_ID.pattern)]


class Alerts(_Block):
    shape_error = ("must be a mapping, e.g. {{slack_conn_id: slack_alerts, smtp_conn_id: smtp_alerts, "
                   "email_to: [ml-oncall@example.com]}}; got {value!r}")
    slack_conn_id: ConnId | None = _f(description="an Airflow `slackwebhook` connection",
                                      must="an Airflow connection id (letters, digits, '_', '-', '.')")
    smtp_conn_id: ConnId | None = _f(description="an Airflow `smtp` connection; needs `email_to`",
                                     must="an Airflow connection id (letters, digits, '_', '-', '.')")
    email_to: Union[str, list[str], None] = _f(description="an address or a list: who gets the e-mail; needs `smtp_conn_id`",
                                               must="an e-mail address or a non-empty list of them")
    email_from: str | None = _f(description="the sender; needs `smtp_conn_id`", shown_default="the SMTP connection's extra `from_email`",
                                must="an e-mail address")
    on_success: bool = _f(False, description="also announce each published version", must="true or false")
    report_link: Literal["airflow", "presigned"] = _f(
        "airflow", description="`airflow`: the report through Airflow's API server, behind its login; `presigned`: an S3 "
                               "presigned URL valid 7 days ([airflow.md](airflow.md#report-link))",
        must="one of ['airflow', 'presigned'] (airflow: the report through Airflow's API server, behind its login; "
             "presigned: an S3 presigned URL valid 7 days)")

    @field_validator("email_to", mode="before")
    @classmethod
    def _addresses(cls, v):
        to = [v] if isinstance(v, str) else v
        if v is not None and (not isinstance(to, list) or not to
                              or not all(isinstance(a, str) and EMAIL.match(a) for a in to)):
            raise ValueError(f" must be an e-mail address or a non-empty list of them, got {v!r}")
        return to

    @field_validator("email_from", mode="before")
    @classmethod
    def _sender(cls, v):
        if v is not None and (not isinstance(v, str) or not EMAIL.match(v.rsplit("<", 1)[-1].rstrip(">").strip())):
            raise ValueError(f" must be an e-mail address, got {v!r}")
        return v

    @model_validator(mode="after")
    def _channels(self):
        if (self.email_to or self.email_from) and not self.smtp_conn_id:
            raise ValueError(" has email_to/email_from but no smtp_conn_id: name the Airflow SMTP connection that "
                             "sends the e-mail.")
        if self.smtp_conn_id and not self.email_to:
            raise ValueError(".smtp_conn_id is set but email_to is missing: list who gets the e-mail.")
        if not self.slack_conn_id and not self.smtp_conn_id:
            raise ValueError(" names no channel: set slack_conn_id and/or smtp_conn_id (with email_to), or remove "
                             "the alerts key.")
        return self


HTTP_MUST = "an http(s):// URL (e.g. an internal HTTPS proxy over the serving bucket)"
HttpBase = Annotated[str, Field(pattern=HTTP_BASE.pattern)]


class Endpoint(_Block):
    shape_error = "must be {{rest: http://host:8501, grpc: host:8500}} (either or both), got {value!r}"
    unknown_error = shape_error
    rest: HttpBase | None = _f(description="TF Serving's REST address", must=HTTP_MUST)
    grpc: str | None = _f(description="TF Serving's gRPC host:port", must="host:port (e.g. tf-serving:8500)")

    @field_validator("grpc", mode="before")
    @classmethod
    def _host_port(cls, g):
        host, _, port = str(g).rpartition(":")
        if g is not None and (not isinstance(g, str) or not host or not port.isdigit() or "/" in g):
            raise ValueError(f" must be host:port (e.g. tf-serving:8500), got {g!r}")
        return g

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, raw):
        if raw == {}:
            raise ValueError(" " + cls.shape_error.format(value=raw))
        return raw


PRODUCTION_SHAPE = ("{{endpoints: [{{rest: http://host:8501, grpc: host:8500}}, ...], confirm_deadline_s: 600, "
                    "conn_id: tfs_production (optional)}}")


class Production(_Block):
    shape_error = "must be " + PRODUCTION_SHAPE + ", got {value!r}"
    unknown_error = shape_error
    endpoints: list[Endpoint] = _f(
        ..., description="one per TF Serving replica: `{rest: http://host:8501, grpc: host:8500}`, either or both",
        tail=" must be a non-empty list of {{rest: http://host:8501, grpc: host:8500}} (one per TF Serving replica), "
             "got {value!r}", min_length=1, shown_default="required in the block")
    confirm_deadline_s: Seconds = _f(600.0, description="seconds production may take to load a new version",
                                     must="a number of seconds > 0")
    conn_id: ConnId | None = _f(description="an Airflow connection with the endpoints' credentials and TLS settings ([production.md](production.md#credentials-and-tls))",
                                must="an Airflow connection id (letters, digits, _ . -)")


class Regression(_Block):
    shape_error = ("must be a mapping of limits (max_metric_drop, max_flip_rate, max_latency_ratio, "
                   "max_memory_ratio, serving_memory_limit_mb), got {value!r}")
    unknown_error = (": unknown key(s) {unknown_joined}; the limits are max_metric_drop, max_flip_rate, "
                     "max_latency_ratio, max_memory_ratio, serving_memory_limit_mb")
    max_metric_drop: float = _f(0.02, ge=0, description="the largest absolute drop of a gated golden-set metric "
                                                        "(accuracy, AP@0.5, mAP, set mIoU), >= 0",
                                must="a number >= 0 (the largest drop of a gated golden-set metric (accuracy, "
                                     "AP@0.5, mAP, set mIoU), e.g. 0.02)")
    max_flip_rate: float = _f(0.0, ge=0, le=1, description="the largest share of golden images the baseline passes "
                                                           "and the candidate fails, 0 to 1",
                              must="a number from 0 to 1 (the largest share of golden images the baseline passes "
                                   "and the candidate fails, e.g. 0.0)")
    max_latency_ratio: float = _f(1.5, gt=0, description="the largest p50 latency of the candidate over the "
                                                         "baseline's (blocks only when also more than 1 ms slower)",
                                  must="a number > 0 (the largest p50 latency of the candidate over the "
                                       "baseline's, e.g. 1.5)")
    max_memory_ratio: float = _f(2.0, gt=0, description="the largest memory of the candidate over the baseline's",
                                 must="a number > 0 (the largest memory of the candidate over the baseline's, "
                                      "e.g. 2.0)")
    serving_memory_limit_mb: float | None = _f(None, gt=0, description="the memory (MB) baseline and candidate may "
                                                                      "take together in one server",
                                               must="a number > 0 (the memory (MB) baseline and candidate may take "
                                                    "together in one server)", shown_default="null (none)")


class ServingPool(_Block):
    shape_error = ("must be a mapping with name and/or slots, e.g. {{name: tfs_release_serving, slots: 4}}; "
                   "got {value!r}")
    unknown_error = shape_error
    name: Annotated[str, Field(pattern=POOL_NAME.pattern)] = _f(
        "tfs_release_serving", description="the Airflow pool every validate task takes a slot of",
        must="an Airflow pool name (letters, digits, '_', '-', '.')")
    slots: int = _f(4, ge=1, le=1000, description="temporary serving containers at once, 1 to 1000",
                    must="an integer from 1 to 1000 (temporary serving containers at once)")


S3_MUST = "an s3:// URI string"


class Model(_Block):
    """One entry of ``models:``. Only ``serving`` is required; a command checks the keys it needs."""
    unknown_error = "has unknown key(s) {unknown}; known keys: {known}"
    # sources
    serving: str = _f(..., description="`s3://<bucket>/<model>/`: where versions are published ([storage.md](storage.md#layout))", must=S3_MUST,
                      section="sources", shown_default="required",
                      missing=" has no 'serving' URI (s3://BUCKET/{name}/): every command needs it.")
    checkpoints: str | None = _f(description="`s3://` prefix the training job writes checkpoints to; a model with "
                                             "it gets a release DAG", must=S3_MUST, section="sources")
    task: Literal["detection", "segmentation", "classification"] | None = _f(
        description="`detection`, `segmentation` or `classification`: the signature contract and the golden checks",
        tail=" is {value!r}; use one of detection, segmentation, classification.", section="sources")
    golden: str | None = _f(description="the golden set: a local folder or `s3://` prefix ([validation.md](validation.md#golden-sets))", must="a string",
                            section="sources")
    experiment: str | None = _f(description="the Model Garden experiment that rebuilds the network ([export.md](export.md))",
                                must="a string", section="sources")
    params_override: str | None = _f(description="a Model Garden params YAML applied on top of the experiment",
                                     must="a string", section="sources")
    input_types: dict[str, Literal["image_tensor", "image_bytes", "tf_example"]] = _f(
        {"serving_default": "image_tensor"}, min_length=1,
        description="signature name -> `image_tensor`, `image_bytes` or `tf_example`: the contract (validation "
                    "ignores the signatures a candidate declares)",
        tail=" must map signature names to input types, e.g. {{serving_default: image_tensor}}; got {value!r}",
        section="sources", shown_default="`{serving_default: image_tensor}`")
    input_size: list[Annotated[int, Field(gt=0)]] | None = _f(
        description="`[height, width]` of the exported model's input", min_length=2, max_length=2,
        must="[height, width] positive integers", section="sources")
    batch_size: int | None = _f(description="a fixed batch dimension for the exported signatures; it also caps "
                                            "`validation_batch_size`", gt=0, must="a positive integer",
                                section="sources", shown_default="none (any)")
    conn_id: ConnId | None = _f(description="the Airflow connection with the S3 endpoint and credentials (DAG "
                                            "tasks, the checkpoint watcher, the report endpoint, presigned links; "
                                            "the CLI reads the `AWS_*` variables instead)",
                                must="an Airflow connection id (letters, digits, '_', '-', '.')", section="sources",
                                shown_default="`aws_default`")
    # what starts a release
    trigger: Literal["checkpoint-event", "schedule"] = _f(
        "checkpoint-event", description="`checkpoint-event`: a run starts when a new complete checkpoint lands; "
                                        "`schedule`: only the cron `schedule` starts one ([airflow.md](airflow.md#event-driven-releases))",
        must="checkpoint-event (a release starts when a new complete checkpoint lands; a cron 'schedule' beside it "
             "is a safety net) or schedule (only the cron 'schedule' starts one)", section="trigger")
    checkpoint_poll_s: float = _f(
        DEFAULT_CHECKPOINT_POLL_S, description="seconds between two polls of the checkpoints prefix by the "
                                               "watcher on the triggerer (a conditional GET of the `checkpoint` state "
                                               "file; a listing when it changed), 1 to 86400; `0`: no watcher (the "
                                               "checkpoint relay, `tfs-release checkpoint-relay`, or the training job "
                                               "posts the Asset event; the repo's config sets it for every model in "
                                               "`defaults`). Refused with `trigger: schedule`",
        must="a number of seconds from 1 to 86400 (how often the triggerer polls the checkpoints), or 0 (no watcher: "
             "the checkpoint relay or the training job posts the Asset event)", section="trigger")
    schedule: str | None = _f(description="a cron expression or preset. Required with `trigger: schedule`; beside "
                                          "`checkpoint-event` a safety net (`@once` and `@continuous` are refused "
                                          "there)", must="a string", section="trigger")
    # the release DAG
    owner: str | None = _f(description="the DAG's owner", must="a string", section="dag",
                           shown_default="`tfs-release`")
    tags: list[str] | None = _f(description="extra DAG tags, added to `tfs-release`, `release` and the task",
                                must="a list of strings", section="dag")
    launcher: Literal["docker", "process"] | None = _f(description="the default of the DAG's `launcher` param",
                                                      must="docker or process", section="dag",
                                                      shown_default="`docker`")
    timeouts: Timeouts | None = _f(description="seconds: each task's `execution_timeout` and the run's "
                                               "`dagrun_timeout` (table below)", section="dag",
                                   shown_default="below")
    staging_keep_days: float | None = _f(description="days a failed or dry run's staged candidate is kept before "
                                                     "`clean_staging` removes it", ge=0,
                                         must="a number of days >= 0 (how long a failed or dry run's staged "
                                              "candidate is kept)", section="dag", shown_default="`7`")
    # validation
    serving_image: str | None = _f(description="the docker launcher's image ([validation.md](validation.md#the-serving-image))", must="a string", section="validation",
                                   shown_default="the `tensorflow/serving` release of the exporting TensorFlow")
    tolerance: float | None = _f(description="the largest difference between served answers and the exporter's "
                                             "(parity; also rollout smoke tests)", ge=0, must="a number >= 0",
                                 section="validation", shown_default="`1e-3`")
    latency_budget_ms: float | None = _f(description="a budget on each p95 latency", gt=0, must="a number of ms > 0",
                                         section="validation")
    validation_deadline_s: float | None = _f(
        description="seconds validation waits for the server to say AVAILABLE (`--deadline` overrides)", gt=0,
        must="a number of seconds > 0 (how long validation waits for the server to say AVAILABLE)",
        section="validation", shown_default="`180`")
    validation_batch_size: int | None = _f(
        description="golden images per predict request, 1 to 1000 (`1`: one at a time); the exporter's reference "
                    "answers use it too", ge=1, le=1000,
        must="an integer from 1 to 1000 (golden images per predict request (1: one at a time))",
        section="validation", shown_default=f"`{DEFAULT_VALIDATION_BATCH_SIZE}`")
    latency_samples: int | None = _f(
        description="single-image requests timed per protocol and signature, 1 to 1000", ge=1, le=1000,
        must="an integer from 1 to 1000 (single-image requests timed per protocol and signature)",
        section="validation", shown_default=f"`{DEFAULT_LATENCY_SAMPLES}`")
    output_normalized_coordinates: bool | None = _f(
        description="detection: boxes in [0, 1] instead of pixels (export and contract)", must="true or false",
        section="validation", shown_default="false")
    class_dtype: Literal["int32", "float32"] | None = _f(
        description="detection: `int32`, or `float32` as TF Object Detection API clients expect (export and "
                    "contract)", must="int32 or float32", section="validation", shown_default="`int32`")
    min_map: float | None = _f(description="detection: the lowest COCO mAP@[.5:.95] on the golden set, 0 to 1",
                               ge=0, le=1, section="validation",
                               must="a number from 0 to 1 (the lowest golden-set metric that passes validation)")
    min_ap50: float | None = _f(description="detection: the lowest AP@0.5", ge=0, le=1, section="validation",
                                must="a number from 0 to 1 (the lowest golden-set metric that passes validation)")
    min_accuracy: float | None = _f(description="classification: the lowest top-1 accuracy", ge=0, le=1,
                                    section="validation", must="a number from 0 to 1 (the lowest golden-set metric "
                                                               "that passes validation)")
    min_miou_set: float | None = _f(description="segmentation: the lowest set mIoU", ge=0, le=1, section="validation",
                                    must="a number from 0 to 1 (the lowest golden-set metric that passes validation)")
    report_base_url: HttpBase | None = _f(description="an http(s) base URL serving the serving bucket "
                                                      "(`<report_base_url>/<bucket>/<key>`), used for report links "
                                                      "instead", must=HTTP_MUST, section="alerts")
    # the regression gate, production, approval
    regression: Regression | None = _f(description="the regression gate's limits (table below)", section="gate",
                                       shown_default="below")
    production: Production | None = _f(description="the production TF Serving replicas (table below)",
                                       section="production", shown_default="none")
    on_failed_rollout: Literal["rollback", "alert"] | None = _f(
        description="a failed rollout: `rollback` (production serves the previous good version again) or `alert` "
                    "(only alert)",
        must="rollback (publish the previous good version again) or alert (only alert)", section="production",
        shown_default="`rollback`")
    on_unknown_rollout: Literal["alert", "rollback"] | None = _f(
        description="production could not be observed: `alert` (roll nothing back) or `rollback` (treat it as "
                    "failed)",
        must="alert (production could not be observed: alert, roll nothing back; the default) or rollback (treat it "
             "as failed)", section="production", shown_default="`alert`")
    rollout: Literal["all", "canary"] | None = _f(
        description="`all`: the newest version takes all traffic; `canary`: a new version is the `canary` label "
                    "beside `stable` until promoted ([production.md](production.md#canary-releases-version-labels-promote-or-abort))", section="production", shown_default="`all`",
        must="all (the newest version takes all traffic) or canary (a new version is the canary label beside stable "
             "until promoted)")
    approval: Literal["required", "on_regression", "none"] | None = _f(
        description="`required`: a person approves every release; `on_regression`: only a release whose "
                    "regression the gate accepted; `none`", section="approval", shown_default="`none`",
        must="required (a person approves every release), on_regression (only a release whose accepted regression "
             "the gate found) or none")
    approval_timeout_s: float | None = _f(
        description="seconds the `approve` task waits for a decision before the run fails", gt=0,
        section="approval",
        must="a number of seconds > 0 (how long a release waits for a decision before it fails)",
        shown_default="`timeouts.run - timeouts.publish - timeouts.other`, at most 86400")
    signing_conn_id: ConnId | None = _f(
        description="an Airflow connection whose password (or extra `private_key`) is the ECDSA private key (PEM) "
                    "that signs every version `publish` and a rollback publish; set, the CLI refuses to publish "
                    "or roll back this model without `--signing-key` ([storage.md](storage.md#signed-versions))",
        must="an Airflow connection id (letters, digits, '_', '-', '.')", section="signing",
        shown_default="none: versions are published unsigned")
    alerts: Alerts | None = _f(description="where failures (and, with `on_success`, releases) are announced "
                                           "(table below)", section="alerts")

    @field_validator("serving", "checkpoints", mode="before")
    @classmethod
    def _s3(cls, v):
        from registry.errors import BadInput
        from registry.s3 import S3Uri
        if v is None:
            return v
        if not isinstance(v, str):
            raise ValueError(f" must be an s3:// URI string, got {v!r}")
        try:
            S3Uri.parse(v)
        except BadInput as exc:
            raise ValueError(f": {exc}") from None
        return v

    @field_validator("input_types", mode="before")
    @classmethod
    def _input_types(cls, it):
        if isinstance(it, dict) and it:
            for sig, typ in it.items():
                if typ not in INPUT_TYPES:
                    raise ValueError(f".{sig} is {typ!r}; use one of {', '.join(INPUT_TYPES)}.")
        return it

    @field_validator("checkpoint_poll_s", mode="after")
    @classmethod
    def _poll(cls, v):
        if not (v == 0 or 1 <= v <= 86400):
            raise ValueError(f" must be a number of seconds from 1 to 86400 (how often the triggerer lists the "
                             f"checkpoints), or 0 (no watcher: the training job posts the Asset event itself), got {v!r}")
        return v

    @model_validator(mode="after")
    def _between_keys(self):
        for key, floor_task in METRIC_FLOORS.items():
            if getattr(self, key) is not None and self.task is not None and self.task != floor_task:
                others = ", ".join(k for k, t in METRIC_FLOORS.items() if t == self.task)
                raise ValueError(f".{key} is a {floor_task} metric floor but the model's task is {self.task}: remove "
                                 f"it (floors for {self.task}: {others}).")
        if self.trigger == "schedule" and not self.schedule:
            raise ValueError(".trigger is schedule but the model has no 'schedule': add one (e.g. schedule: "
                             "\"@hourly\"), or use trigger: checkpoint-event.")
        if self.trigger == "checkpoint-event" and self.schedule in ("@once", "@continuous"):
            raise ValueError(f".schedule {self.schedule!r} cannot be a safety net beside trigger: checkpoint-event: "
                             f"use a cron expression (e.g. \"@daily\"), or remove it.")
        if self.trigger == "schedule" and "checkpoint_poll_s" in self.model_fields_set:
            raise ValueError(".checkpoint_poll_s is set but trigger is schedule: nothing watches the checkpoints. "
                             "Remove it, or use trigger: checkpoint-event.")
        t = self.timeouts or Timeouts()
        room = t.run - t.publish - t.other
        v = self.approval_timeout_s
        if v is None and self.approval in ("required", "on_regression") and room <= 0:
            raise ValueError(f".timeouts leave no time for approval: run ({t.run:g}s) minus publish ({t.publish:g}s) "
                             f"and other ({t.other:g}s) is {room:g}s. Raise timeouts.run, or lower "
                             f"timeouts.publish/other.")
        if v is not None and v + t.publish + t.other > t.run:
            raise ValueError(
                f".approval_timeout_s ({v:g}s) does not fit in timeouts.run ({t.run:g}s): after the decision publish "
                f"({t.publish:g}s) and the other tasks ({t.other:g}s) still need time, so the run would time out "
                f"before the approval does (approve skipped, not failed with its reason). "
                + (f"Lower approval_timeout_s to at most {room:g}, or raise" if room > 0 else "Raise")
                + f" timeouts.run to at least {v + t.publish + t.other:g}.")
        return self


# keys that were accepted once but nothing reads: refused with what to use instead
UNREAD_KEYS = {
    "keep": "retention is not a per-model setting: run `tfs-release retention MODEL --keep K` for the "
            "serving bucket (it leaves tombstones; never the newest or a rollback target) and give the "
            "sync sidecar `--keep K` for the local volume",
    "labels": "class names come from the golden set (golden.json 'classes'); TF Serving version labels "
              "(stable/canary) are not set from this file",
}


# --- errors -------------------------------------------------------------------------------------------

def _path(where: str, loc: tuple) -> str:
    out = where
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def keys(cls: type[BaseModel]) -> dict:
    """{the key as written in the file (a field's alias, else its name): FieldInfo}."""
    return {(info.alias or name): info for name, info in cls.model_fields.items()}


def _block_of(annotation) -> type[_Block] | None:
    """The _Block class inside an annotation (``Alerts | None``, ``list[Endpoint]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, _Block):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _block_of(arg)
        if found:
            return found
    return None


def _resolve(model: type[_Block], loc: tuple) -> tuple[tuple, type[_Block], Any]:
    """pydantic's error location -> (the location in the user's terms: keys, and positions in a list
    of blocks; without pydantic's union tags or a position inside a list of scalars; the block that
    holds its last key; that key's FieldInfo, or None when the location is a block itself)."""
    out, cls, info, listed = (), model, None, None
    for part in loc:
        if isinstance(part, int):
            if listed is None:
                break               # a position inside a list of scalars: the key is the place
            out += (part,)
            cls, info, listed = listed, None, None
        elif part in keys(cls):
            out += (part,)
            info = keys(cls)[part]
            block = _block_of(info.annotation)
            if block is not None and "list[" in str(info.annotation):
                listed = block
            elif block is not None:
                cls, info = block, None
        # else: a union member's tag ("str", "list[str]", ...): not a place
    return out, cls, info


def _raw_at(raw: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def problem(model: type[_Block], exc: ValidationError, where: str, raw: Any) -> str:
    """The first problem of a failed validation, as one sentence naming the key: unknown keys first
    (all of a block's at once), then the first other error in the schema's order."""
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else errors[0]
    if unknown:
        loc, block, _ = _resolve(model, tuple(first["loc"][:-1]))
        names = sorted(str(e["loc"][-1]) for e in unknown if e["loc"][:-1] == first["loc"][:-1])
        text = block.unknown_error.format(unknown=names, unknown_joined=", ".join(names),
                                          known=sorted(keys(block)), value=_raw_at(raw, loc))
        return _path(where, loc) + ("" if text.startswith(":") else " ") + text
    loc, block, info = _resolve(model, tuple(first["loc"]))
    value = _raw_at(raw, loc)
    if first["type"] == "value_error":   # our own words, after the path of the key they name
        return _path(where, loc) + str(first["ctx"]["error"])
    if info is None:                      # a block of the wrong shape (a list where a mapping goes, ...)
        return f"{_path(where, loc)} {block.shape_error.format(value=value)}"
    extra = info.json_schema_extra or {}
    if first["type"] == "missing" and "missing" in extra:
        return _path(where, loc[:-1]) + extra["missing"].format(name=where.rsplit(".", 1)[-1])
    if "tail" in extra:
        return _path(where, loc) + extra["tail"].format(value=value)
    if "must" in extra:
        return f"{_path(where, loc)} must be {extra['must']}, got {value!r}"
    return f"{_path(where, loc)}: {first['msg']}, got {value!r}"


# --- the docs' reference tables ------------------------------------------------------------------------

# docs/configuration.md, between these markers, is exactly ``reference()`` (a unit test checks it)
BEGIN = "<!-- generated by `python -m registry.config_schema` from registry/config_schema.py: edit there -->"
END = "<!-- end of the generated reference -->"
# (key, title, intro, blocks listed after the model's keys of the section, note after the tables)
SECTIONS = [
    ("sources", "Model and sources", "", [], ""),
    ("trigger", "What starts a release", "", [], ""),
    ("dag", "The release DAG", "", [(Timeouts, "timeouts.")],
     "A task that runs out is killed like a task marked failed: its step process and containers go too "
     "([steps.md](steps.md#steps-die-with-their-task))."),
    ("validation", "Validation", "", [], "A floor for another task than the model's is refused."),
    ("gate", "Regression gate", "`regression` limits the gate ([validation.md](validation.md#the-regression-gate)).",
     [(Regression, "regression.")], ""),
    ("production", "Production", "What production serves, and what a release does about it "
     "([production.md](production.md#the-production-loop)).", [(Production, "production."),
                                                                 (Endpoint, "production.endpoints[].")],
     "Without `production` a release ends at `publish`, and the regression gate's baseline comes from the registry."),
    ("approval", "Approval", "([airflow.md](airflow.md#approval-before-publish))", [],
     "`approval_timeout_s + timeouts.publish + timeouts.other` must fit in `timeouts.run` (else the run's timeout "
     "would end it first and `approve` would be skipped instead of failing with its reason); a config where it "
     "does not, or where `approval` is set and the timeouts leave no room, is refused."),
    ("signing", "Signing", "Who signs what is published; the sync sidecars verify with `--trusted-key` "
     "([storage.md](storage.md#signed-versions)).", [], ""),
    ("alerts", "Alerts", "`alerts` ([airflow.md](airflow.md#alerts)).", [(Alerts, "alerts.")],
     "The block must name at least one channel (`slack_conn_id` and/or `smtp_conn_id` with `email_to`); malformed "
     "addresses or connection ids are refused. No `alerts` key: no alerts."),
]


def _default(info) -> str:
    extra = info.json_schema_extra or {}
    if "shown_default" in extra:
        return extra["shown_default"]
    d = info.default
    if d is None or info.is_required():
        return "required" if info.is_required() else "none"
    if isinstance(d, bool):
        return "`true`" if d else "`false`"
    if isinstance(d, float) and d.is_integer():
        return f"`{int(d)}`"
    return f"`{d}`"


def _rows(cls: type[BaseModel], prefix: str = "", section: str | None = None) -> list[str]:
    rows = []
    for name, info in keys(cls).items():
        extra = info.json_schema_extra or {}
        if section is not None and extra.get("section") != section:
            continue
        rows.append(f"| `{prefix}{name}` | {_default(info)} | {info.description} |")
    return rows


def reference() -> str:
    """Markdown: the top level, then one section per topic: the model's keys of it, then its blocks' keys."""
    head = "| key | default | meaning |\n|---|---|---|\n"
    out = ["## Top level", head + "\n".join([
        "| `models` | required | model name -> settings. A name is lowercase letters, digits and `-` (it becomes the "
        "TF Serving model name and a folder name) |",
        "| `defaults` | none | model keys every model gets unless it sets them (e.g. `{checkpoint_poll_s: 0, conn_id: "
        "training}` for a fleet); any model key but `serving` and `checkpoints`. A block given in a model replaces "
        "the default block whole |"] + _rows(ServingPool, "serving_pool."))
        + "\n\nThe project's plugin creates the serving pool, or sets its slots, when the API server or scheduler "
          "starts."]
    for key, title, intro, blocks, note in SECTIONS:
        out.append(f"## {title}")
        if intro:
            out.append(intro)
        out.append(head + "\n".join(_rows(Model, section=key)))
        for block, prefix in blocks:
            out.append(head + "\n".join(_rows(block, prefix)))
        if note:
            out.append(note)
    return "\n\n".join(out) + "\n"


def write_docs(path: str) -> bool:
    """Put ``reference()`` between the markers of ``path``; True when the file changed."""
    text = open(path, encoding="utf-8").read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"
    if new != text:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return new != text


if __name__ == "__main__":
    import os
    import sys
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "configuration.md")
    if sys.argv[1:] == ["--write"]:
        print(f"{docs}: {'updated' if write_docs(docs) else 'already up to date'}")
    else:
        print(reference(), end="")
