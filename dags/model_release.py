"""Release DAGs: one per model in config/models.yaml, DAG id ``release__<model>``.

    newest_checkpoint -> is_new (short-circuit) -> export -> validate -> publish (Asset event)

Light steps (finding the checkpoint, publishing) call ``registry/`` here with an S3 client from the
model's Airflow connection (``conn_id`` in the config, default ``aws_default``). Export and
validation run as the worker-env step command (``bin/tfs-release``, TensorFlow) with the same
connection's settings in its environment, through an operator chosen here, when the DAG is built
(``plugins/tfs_release_airflow/operators.py``): a local subprocess, or the worker image through
DockerOperator; either way Airflow's kill path (``on_kill``) stops the step and its containers.
Parsing this file imports no TensorFlow and touches no object storage: it reads the config only.

Every task has an ``execution_timeout`` and the run a ``dagrun_timeout`` (the model's ``timeouts``);
validate takes a slot of the ``serving_pool`` Airflow pool (one temporary serving container each).
A model whose config entry is invalid gets a DAG of the same id that cannot release: its only task
fails with the error naming the key, and its description says it; the other models are unaffected.

Alerts (a model's ``alerts`` config): every task's ``on_failure_callback`` and, with ``on_success``,
publish's ``on_success_callback`` send one message through the Slack-webhook and SMTP provider
notifiers (``plugins/tfs_release_airflow/alerts.py``); the DAG's own ``on_failure_callback`` alerts a
run that fails with no failed task to alert (its ``dagrun_timeout``, e.g. while ``approve`` waits).
The validate task has a "Validation report" extra link (``report_link.py``): ``report_base_url``
when configured, else the report endpoint on Airflow's API server (``report_app.py``).

Environment: ``TFS_RELEASE_CONFIG`` (default ``<repo>/config/models.yaml``),
``TFS_RELEASE_STEP_COMMAND`` (default ``<repo>/bin/tfs-release``), ``TFS_RELEASE_STEP_IMAGE`` (run
the steps in that worker image through DockerOperator instead; see plugins/.../step_image.py).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "plugins")):  # registry/ and plugins/ wherever Airflow runs
    if _path not in sys.path:
        sys.path.append(_path)

from airflow.sdk import (  # noqa: E402
    Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param, dag, task, teardown)

from registry import config as config_mod  # noqa: E402
from tfs_release_airflow.alerts import release_alert, reports_root, run_failure_alert  # noqa: E402
from tfs_release_airflow.operators import step_operator  # noqa: E402
from tfs_release_airflow.report_link import attach as attach_report_link  # noqa: E402
from tfs_release_airflow.run_notes import record_failure  # noqa: E402
from tfs_release_airflow.step_image import StepImage  # noqa: E402

log = logging.getLogger("tfs_release.model_release")  # __name__ is mangled by Airflow

CONFIG = os.environ.get("TFS_RELEASE_CONFIG") or os.path.join(ROOT, "config", "models.yaml")
START = _dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc)
LAUNCHERS = ["docker", "process"]


def schedules_on() -> bool:
    """``TFS_RELEASE_SCHEDULES=off``: every release DAG is manual-only (REST/UI/CLI triggers), e.g.
    in a staging stack or a test where unpausing must not start a scheduled run."""
    value = os.environ.get("TFS_RELEASE_SCHEDULES", "on").strip().lower()
    if value not in ("on", "off", "true", "false", "1", "0", ""):
        raise ValueError(f"TFS_RELEASE_SCHEDULES={value!r}: use on or off")
    return value in ("on", "true", "1", "")


def step_command() -> str:
    return os.environ.get("TFS_RELEASE_STEP_COMMAND") or os.path.join(ROOT, "bin", "tfs-release")


def pulled(task_id: str, key: str) -> str:
    """A template for one key of an upstream task's XCom result."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}')['{key}'] }}}}"


def seconds(s: float) -> _dt.timedelta:
    return _dt.timedelta(seconds=s)


def asset_for(model: config_mod.ModelConfig) -> Asset:
    uri = f"s3://{model.serving.bucket}/{model.serving.prefix.rstrip('/')}"
    # named by its URI (Airflow's default): a model whose serving location changes gets a new
    # Asset instead of a name clash with the old one (Airflow deactivates a reused name)
    return Asset(uri=uri)


def checkpoints_asset(model: config_mod.ModelConfig) -> Asset:
    """``s3://<training>/<model>/checkpoints``: the Asset a new complete checkpoint updates, through
    the watcher on the triggerer (``checkpoint_poll_s`` > 0: one trigger per model), or the
    checkpoint relay (``tfs-release checkpoint-relay``: one process for a fleet) and/or the training
    job posting an event (``POST /api/v2/assets/events``)."""
    uri = f"s3://{model.checkpoints.bucket}/{model.checkpoints.prefix.rstrip('/')}"
    watchers = []
    if model.checkpoint_poll_s > 0:
        from tfs_release_airflow.checkpoint_watch import CheckpointTrigger
        trigger = CheckpointTrigger(model.name, str(model.checkpoints), str(model.serving),
                                    conn_id=model.extra.get("conn_id", "aws_default"), poll_s=model.checkpoint_poll_s)
        watchers.append(AssetWatcher(name=f"checkpoints__{model.name}", trigger=trigger))
    return Asset(uri=uri, watchers=watchers)


def schedule_for(model: config_mod.ModelConfig):
    """trigger: checkpoint-event -> the checkpoints Asset (or it and the cron ``schedule`` as a safety
    net: whichever comes first); trigger: schedule -> the cron only; TFS_RELEASE_SCHEDULES=off -> manual."""
    if not schedules_on():
        return None
    if model.trigger == "schedule":
        return cron_timetable(model.schedule)
    asset = checkpoints_asset(model)
    if model.schedule:
        return AssetOrTimeSchedule(timetable=cron_timetable(model.schedule), assets=[asset])
    return [asset]


def cron_timetable(cron: str) -> CronTriggerTimetable:
    """The cron, from its next point on: unpausing a DAG (which the UI's Trigger does) never starts a
    scheduled run for the cron point just past. (With a start_date, or within 10% of the period
    after a point, Airflow would: a surprise run beside the one the user triggered.) Release DAGs
    therefore have no start_date."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=_dt.timedelta(0))


def trigger_doc(model: config_mod.ModelConfig) -> str:
    if not schedules_on():
        return "Starts: manually only (TFS_RELEASE_SCHEDULES=off)."
    if model.trigger == "schedule":
        return f"Starts: on the schedule `{model.schedule}`."
    how = (f"the triggerer polls `{model.checkpoints}` every {model.checkpoint_poll_s:g}s"
           if model.checkpoint_poll_s > 0 else "the checkpoint relay or the training job posts the Asset event; "
                                                "no watcher on the triggerer")
    net = f"; the schedule `{model.schedule}` is a safety net" if model.schedule else ""
    return f"Starts: when a new complete checkpoint lands ({how}){net}."


def params_for(model: config_mod.ModelConfig) -> dict[str, Param]:
    return {
        "checkpoint": Param(
            None, type=["null", "string"], pattern=r"^s3://[a-z0-9][a-z0-9.-]*/\S+$",
            title="Checkpoint", description=f"s3://.../ckpt-N to release instead of the newest complete "
                                            f"checkpoint under {model.checkpoints} (empty: the newest)"),
        "force": Param(False, type="boolean", title="Force",
                       description="release even if this checkpoint is already published"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="export and validate, but do not publish"),
        "accept_regression": Param(  # null by default: the UI form treats an empty string as missing
            None, type=["null", "string"], maxLength=500, title="Accept a regression (reason)",
            description="empty: a candidate the regression gate blocks (worse than the version production "
                        "serves) is not published. A reason here publishes it anyway; the reason goes "
                        "into the verdict, the version's manifest and the alert. force does not do this."),
        "baseline": Param("production", type="string", enum=["production", "newest_confirmed"],
                          title="Regression gate baseline",
                          description="production: what production serves (its stable label for a canary model); "
                                      "the gate fails closed when production cannot be observed. newest_confirmed: "
                                      "the newest version whose rollout production confirmed, without asking it."),
        "launcher": Param(model.extra.get("launcher", "docker"), type="string", enum=LAUNCHERS,
                          title="Serving launcher",
                          description="where the temporary TF Serving runs during validation"),
    }


def doc_for(model: config_mod.ModelConfig) -> str:
    return f"""### Release `{model.name}` ({model.task})

Newest complete checkpoint under `{model.checkpoints}` → skip when already published (unless
**force**) → export a SavedModel (Model Garden `{model.experiment}`) → validate it in a temporary
TF Serving (golden set `{model.golden}`) → publish the next version under `{model.serving}` and
emit an Asset event for it (extra: `version`). {trigger_doc(model)}

Validation compares the candidate with the version production serves (the regression gate): a
candidate that is worse is not published.

Trigger with params: **checkpoint** (a `s3://.../ckpt-N`, empty for the newest), **force**,
**dry_run** (validate, publish nothing), **accept_regression** (a reason: publish although the
regression gate blocks it; recorded), **baseline** (`production`: what production serves, the gate
fails closed when it cannot be observed; `newest_confirmed`), **launcher** (`docker` or `process`). S3 connection:
`{model.extra.get("conn_id", "aws_default")}`. Same steps without Airflow:
`tfs-release release {model.name}`.
"""


def alerts_doc(model: config_mod.ModelConfig) -> str:
    a = model.extra.get("alerts")
    if a is None:
        return "\nAlerts: none configured (add `alerts` to the model's config).\n"
    where = []
    if a.slack_conn_id:
        where.append(f"Slack (`{a.slack_conn_id}`)")
    if a.smtp_conn_id:
        where.append(f"e-mail (`{a.smtp_conn_id}` to {', '.join(a.email_to)})")
    base = model.extra.get("report_base_url")
    if base:
        link = f"`{base}/<bucket>/<key>` (also the validate task's extra link)"
    elif a.report_link == "presigned":
        link = "presigned for 7 days in the alert; the validate task's extra link opens it through Airflow"
    else:
        link = "through Airflow's API server (`/tfs-release/reports/...`, as the validate task's extra link)"
    return (f"\nAlerts: on failure{' and on publish' if a.on_success else ''} via {' and '.join(where)}; "
            f"report link: {link}.\n")


def build_dag(model: config_mod.ModelConfig, config_path: str,
              pool: config_mod.ServingPool = config_mod.ServingPool(), image: StepImage | None = None):
    conn_id = model.extra.get("conn_id", "aws_default")
    serving_asset = asset_for(model)
    keep_days = float(model.extra.get("staging_keep_days", 7))
    on_failure, on_success = release_alert(model, "failure"), release_alert(model, "success")
    # the run's own: a run that fails with no failed task to alert (dagrun_timeout skips the unfinished)
    on_run_failure = run_failure_alert(model)
    t = model.timeouts

    def s3():
        from tfs_release_airflow.connection import s3_settings
        return s3_settings(conn_id)

    approval_mode = model.extra.get("approval", "none")

    def announce_request(context, subject: str, body: str) -> None:
        """The approval request on the model's alert channels (Slack webhook, e-mail)."""
        alerts = model.extra.get("alerts")
        if alerts is None:
            return
        from tfs_release_airflow import alert_message
        from tfs_release_airflow.alerts import provider_notifiers
        from tfs_release_airflow.report_link import ui_base_url
        url = alert_message.run_url(ui_base_url(), f"release__{model.name}", context.get("run_id"))
        text = f"{subject}\n{body}\n\nDecide in Airflow (task `approve` of this run): {url}"
        for name, notifier in provider_notifiers(alerts, f"[tfs-release] {subject}", text):
            notifier.notify(context)
            log.info("approval request for %s announced via %s", model.name, name)

    def request_report_link(verdict: dict) -> str | None:
        """The report in the approval request: the same link as validate's "Validation report"
        (the request is stored in Airflow's database and shown in the UI: never a presigned URL)."""
        from tfs_release_airflow.alerts import report_link
        return report_link(verdict.get("report"), base_url=model.extra.get("report_base_url"), conn_id=conn_id,
                           mode="airflow", model=model.name, reports_root=reports_root(model)) or verdict.get("report")

    def step(name: str, *args: str, **kwargs):
        """The step command's operator: the worker image when configured, else a local subprocess."""
        return step_operator(name, model.name, *args, config=config_path, conn_id=conn_id,
                             command=step_command(), cwd=ROOT, image=image, **kwargs)

    @dag(
        dag_id=f"release__{model.name}",
        schedule=schedule_for(model),
        catchup=False,  # and no start_date: see cron_timetable
        max_active_runs=1,
        tags=["tfs-release", "release", *([model.task] if model.task else []), *model.extra.get("tags", [])],
        doc_md=doc_for(model) + alerts_doc(model),
        params=params_for(model),
        dagrun_timeout=seconds(t.run),
        **({"on_failure_callback": on_run_failure} if on_run_failure else {}),
        default_args={"owner": model.extra.get("owner", "tfs-release"), "retries": 0,
                      "execution_timeout": seconds(t.other),
                      # the run's note (plugins/.../run_notes.py) and, with alerts, the alert
                      "on_failure_callback": [record_failure(model.name), *([on_failure] if on_failure else [])]},
    )
    def release():
        @task
        def newest_checkpoint(params=None) -> dict:
            """The checkpoint to release (newest complete, or the override) and whether it is published."""
            from registry import checkpoints
            from registry.versions import published_from
            client = s3().client()
            ck, _ = checkpoints.resolve(client, model.checkpoints, params["checkpoint"] or None)
            done = published_from(client, model.serving, ck.uri, ck.files)
            log.info("checkpoint %s (step %s): %s", ck.uri, ck.step,
                     f"already published as version {done}" if done is not None else "not published yet")
            return {"uri": ck.uri, "step": ck.step, "published_as": done}

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def is_new(ck: dict, params=None) -> bool:
            """Skip the rest (not a failure) when the checkpoint is already published and not forced."""
            if ck["published_as"] is None:
                return True
            if params["force"]:
                log.info("force: releasing %s again (already version %s)", ck["uri"], ck["published_as"])
                return True
            log.info("nothing new: %s is already published as version %s (trigger with force to "
                     "release it again)", ck["uri"], ck["published_as"])
            return False

        # export -> validate: the step command, as an operator (its kill path stops the step)
        exported = step("export", "--checkpoint", pulled("newest_checkpoint", "uri"),
                        "--run-id", "{{ run_id }}-t{{ ti.try_number }}", execution_timeout=seconds(t.export),
                        doc_md="Export the checkpoint to a staged candidate SavedModel (worker env).")
        verdict = step("validate", "--candidate", pulled("export", "candidate"), "--launcher", "{{ params.launcher }}",
                       "--accept-regression={{ params.accept_regression or '' }}",
                       "--baseline", "{{ params.baseline }}",
                       execution_timeout=seconds(t.validate), pool=pool.name, pool_slots=1,
                       failed_result_key="verdict",  # a failed verdict (checks, report) for the alerts
                       # which version production serves (the regression gate's baseline)
                       production_conn_id=(model.extra.get("production") or {}).get("conn_id"),
                       doc_md="Validate the candidate in a temporary TF Serving (worker env; one slot of "
                              f"the `{pool.name}` pool); fails on a failed verdict.")

        # with production endpoints the Asset event (and the success alert) waits for production to
        # serve the version (task `released`); without, publishing is the end of the release
        confirmed_end = bool(model.extra.get("production"))

        @task(outlets=[] if confirmed_end else [serving_asset], execution_timeout=seconds(t.publish),
              **({"on_success_callback": on_success} if on_success and not confirmed_end else {}))
        def publish(exported: dict, verdict: dict, params=None, outlet_events=None, ti=None) -> dict:
            """Publish the validated candidate as the next version; the Asset event carries it."""
            if params["dry_run"]:
                from airflow.sdk.exceptions import AirflowSkipException
                raise AirflowSkipException(f"dry run: {exported['candidate']} validated, not published; "
                                           f"report {verdict.get('report')}")
            from registry.publish import publish as publish_candidate
            from tfs_release_airflow.connection import signing_key
            decision = ti.xcom_pull(task_ids="approve") if approval_mode != "none" else None
            res = publish_candidate(s3().client(), model.serving, model.name, exported["candidate"],
                                    approval=decision if decision and decision.get("needed") else None,
                                    signer=signing_key(model.extra.get("signing_conn_id")))
            out = res.to_json()
            from production.lifecycle import on_publish
            state = on_publish(s3().client(), model, res.version)  # rollout: canary -> the canary label
            if state:
                out["labels"] = {"stable": state["stable"], "canary": state["canary"]}
            out["asset_extra"] = {
                "model": model.name, "version": res.version, "uri": out["uri"], "manifest": out["manifest"],
                "checkpoint": exported.get("checkpoint"), "report": verdict.get("report"),
                "signed_by": res.signed_by}
            if not confirmed_end:
                outlet_events[serving_asset].extra = out["asset_extra"]
            return out

        @task(outlets=[serving_asset], execution_timeout=seconds(t.other),
              **({"on_success_callback": on_success} if on_success else {}))
        def released(ti=None, outlet_events=None) -> dict:
            """Production serves the new version (confirm_rollout passed): the Asset event, with the
            rollout record."""
            pub = ti.xcom_pull(task_ids="publish") or {}
            rec = ti.xcom_pull(task_ids="confirm_rollout") or {}
            extra = {**(pub.get("asset_extra") or {}), "rollout": rec.get("outcome"), "rollout_record": rec.get("record"),
                     "served_after_s": rec.get("served_after_s")}
            outlet_events[serving_asset].extra = extra
            return extra

        @teardown
        def clean_staging(ti=None) -> dict:
            """Remove this run's staged candidate once published; keep it after a failure or a dry
            run (for inspection) and sweep those older than ``staging_keep_days`` (default 7).
            A teardown: it runs whatever happened upstream and does not decide the run's state."""
            from registry.staging import remove, sweep
            exported, published = ti.xcom_pull(task_ids="export"), ti.xcom_pull(task_ids="publish")
            client = s3().client()
            removed = None
            if exported and published:
                remove(client, exported["candidate"])
                removed = exported["candidate"]
            elif exported:
                log.info("keeping %s for %s days (not published)", exported["candidate"], keep_days)
            swept = sweep(client, model.serving, older_than_s=keep_days * 86400)
            return {"removed": removed, "swept": [x["uri"] for x in swept]}

        ck = newest_checkpoint()
        [ck, is_new(ck)] >> exported >> verdict
        if approval_mode != "none":  # a person decides before publish (plugins/.../approval.py)
            from tfs_release_airflow.approval import ReleaseApprovalOperator
            approve = ReleaseApprovalOperator(
                task_id="approve", model=model.name, mode=approval_mode, announce=announce_request,
                report_link=request_report_link,
                response_timeout=seconds(model.approval_timeout_s),  # fits in timeouts.run (registry/config.py)
                # Airflow 3.3 race: a decision that lands before the scheduler has processed the parked
                # task's exit gets the resumed task marked failed (the executor's late "success" finds it
                # queued). A retry asks again (two: a busy scheduler lost two decisions in a row once in
                # the compose e2e test); a rejection or a timeout never retries.
                retries=2, retry_delay=seconds(5),
                doc_md="A person approves or rejects the release (Airflow's human-in-the-loop: the task waits "
                       "for input in the UI or the REST API). Reject or no decision in time: the run fails.")
            verdict >> approve
        # never a presigned URL (extra links live in XCom): report_base_url, else the API server's
        # report endpoint (plugins/tfs_release_airflow/report_app.py)
        attach_report_link(verdict, model.extra.get("report_base_url"), model=model.name,
                           reports_root=reports_root(model))
        published = publish(exported.output, verdict.output)
        if approval_mode != "none":
            approve >> published
        prod = model.extra.get("production")
        if prod:  # the release ends when production serves it (or it was rolled back)
            from tfs_release_airflow.rollout import WaitForRolloutOperator
            rest = [e["rest"] for e in prod["endpoints"] if e.get("rest")]
            deadline = prod["confirm_deadline_s"]
            # after wait_for_rollout spent the deadline without seeing N served, a short re-check (the
            # rollback version still gets the whole deadline)
            waited = ("{{ 10 if (ti.xcom_pull(task_ids='wait_for_rollout') or {}).get('outcome') != 'served' "
                      f"else {deadline} }}}}") if rest else str(deadline)
            confirm = step("confirm", "--version", pulled("publish", "version"), "--deadline", str(deadline),
                           "--wait", waited, task_id="confirm_rollout", production_conn_id=prod.get("conn_id"),
                           signing_conn_id=model.extra.get("signing_conn_id"),  # its rollback publishes a copy
                           execution_timeout=seconds(2 * deadline + 600),
                           doc_md="Production serves the new version and answers as in validation (smoke test); "
                                  "a failed rollout is rolled back (worker env). Fails unless confirmed.")
            if rest:
                wait = WaitForRolloutOperator(
                    task_id="wait_for_rollout", model=model.name, endpoints=rest, version=pulled("publish", "version"),
                    deadline_s=deadline, execution_timeout=seconds(deadline + 300), conn_id=prod.get("conn_id"),
                    retries=1, retry_delay=seconds(10),  # a deferral race in Airflow (apache/airflow#72716)
                    doc_md="Deferred on the triggerer (no worker slot) until every production endpoint reports "
                           "the new version AVAILABLE, failed, or the deadline passes.")
                published >> wait >> confirm
            else:
                published >> confirm
            confirm >> released() >> clean_staging()
        else:
            published >> clean_staging()

    return release()


def broken_dag_id(name: str) -> str:
    """``release__<name>``; a name that cannot be a DAG id gets a stable stand-in id."""
    if re.match(r"^[A-Za-z0-9_.-]{1,200}$", name):
        return f"release__{name}"
    return f"release__invalid-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def build_broken_dag(name: str, error: str, config_path: str):
    """A model whose config entry is invalid: a manual DAG that says so and cannot release (its only
    task fails with the error), instead of an import error that would hide every release DAG."""
    log.error("release DAG of %r not built: %s", name, error)

    @dag(dag_id=broken_dag_id(name), schedule=None, start_date=START, catchup=False, max_active_runs=1,
         tags=["tfs-release", "release", "config-error"], is_paused_upon_creation=True,
         doc_md=f"### Release `{name}`: invalid configuration\n\nIts entry in `{config_path}` is invalid, so "
                f"this DAG cannot release anything until it is fixed:\n\n> {error}\n\nThe other models' DAGs "
                "are not affected.\n",
         default_args={"owner": "tfs-release", "retries": 0})
    def broken():
        @task(task_id="config_error")
        def config_error():
            """Fails with the configuration error."""
            from registry.errors import ConfigError
            raise ConfigError(f"models.{name} in {config_path} is invalid: {error}")
        config_error()
    return broken()


def build_all(config_path: str = CONFIG) -> dict:
    cfg = config_mod.load(config_path, strict=False)  # one bad model must not hide the others
    image = StepImage.from_env()  # the step operator is chosen here, at parse time
    dags = {}
    for name, model in sorted(cfg.models.items()):
        if model.checkpoints is None:
            log.info("no release DAG for %s: it has no 'checkpoints' in %s", name, config_path)
            continue
        dags[f"release__{name}"] = build_dag(model, os.path.abspath(config_path), cfg.serving_pool, image)
    for name, error in sorted(cfg.errors.items()):
        dags[broken_dag_id(name)] = build_broken_dag(name, error, os.path.abspath(config_path))
    return dags


globals().update(build_all())
