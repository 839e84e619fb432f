"""Release alerts: a thin notifier that builds one message from the Airflow context and hands it to
the provider notifiers (Slack incoming webhook, SMTP), so Slack and e-mail carry the same text.

    alerts:                              # in config/models.yaml, per model (optional)
      slack_conn_id: slack_alerts        # an Airflow "slackwebhook" connection
      smtp_conn_id: smtp_alerts          # an Airflow "smtp" connection
      email_to: [ml-oncall@example.com]
      email_from: tfs-release@example.com  # else the SMTP connection's extra from_email
      on_success: false                  # also announce published versions
      report_link: airflow               # or "presigned" (see below)

The message (``alert_message.py``): model, checkpoint, the failed task and its reason, each failed
validation check with its numbers (from the validate task's ``verdict`` XCom), the report link and
the Airflow run link (``[api] base_url`` + /dags/<dag_id>/runs/<run_id>). The report link is the
same one the validate task's "Validation report" extra link opens:

- ``report_base_url`` + /bucket/key when the model configures one (a proxy over the bucket);
- else the report endpoint on Airflow's API server (``report_app.py``): ``[api] base_url`` +
  /tfs-release/reports/<model>/<run>/index.html, behind Airflow's login and the DAG's read access.
  Only names are in it, so a Slack channel or a forwarded e-mail leaks nothing;
- ``report_link: presigned`` instead: an S3 presigned URL (7 days) made here with the model's
  connection, for readers without an Airflow login. Anyone holding the message can open it for
  those 7 days and it carries the access key id (never the secret), so it goes to Slack/e-mail
  only, never to XCom or logs.

A run that ends failed without a failed task (its ``dagrun_timeout``: Airflow marks the unfinished
tasks skipped, so no task callback fires; or a deadlock) alerts once through the DAG's own
``on_failure_callback`` (``RunFailureAlert``): timed out or failed, the task it was waiting on (e.g.
``approve`` awaiting input) and what was published (nothing, before ``publish``).

Sending never raises: a channel that fails is logged and the others still go, so an alert problem
never hides the failure it reports. The provider notifiers are imported when an alert is sent, not
when the DAG file is parsed. Their ``notify`` is called directly (not ``__call__``): the text is
not a Jinja template (an exception message with ``{{`` in it is sent as is).
"""
from __future__ import annotations

import logging

from airflow.sdk import BaseNotifier

from tfs_release_airflow import alert_message
from tfs_release_airflow.alert_message import Alert
from tfs_release_airflow.report_link import endpoint_link, ui_base_url

log = logging.getLogger("tfs_release.alerts")
PRESIGN_SECONDS = 7 * 86400           # the S3 SigV4 maximum


def _pull(ti, task_id: str, key: str = "return_value"):
    if ti is None:
        return None
    try:
        return ti.xcom_pull(task_ids=task_id, key=key)
    except Exception as exc:  # noqa: BLE001 - e.g. no XCom access where the callback runs
        log.warning("alert: cannot read XCom %s/%s: %s", task_id, key, exc)
        return None


def report_link(report_uri: str | None, *, base_url: str | None, conn_id: str, mode: str = "airflow",
                model: str | None = None, reports_root: str | None = None) -> str | None:
    """What a human opens: ``base_url/bucket/key``; else the API server's report endpoint
    (``mode="airflow"``) or a presigned GET URL valid 7 days (``mode="presigned"``). None when there
    is no link to make (the message then shows the s3:// URI)."""
    if not report_uri or not report_uri.startswith("s3://"):
        return report_uri
    if base_url:
        return alert_message.report_url(report_uri, base_url)
    if mode != "presigned":
        if not (model and reports_root):
            return None
        return endpoint_link(report_uri, model=model, reports_root=reports_root, base_url=ui_base_url()) or None
    try:
        from tfs_release_airflow.connection import s3_settings
        bucket, _, key = report_uri[len("s3://"):].partition("/")
        return s3_settings(conn_id).client().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the s3:// uri is still in the message
        log.warning("alert: cannot presign the report link with connection %r: %s", conn_id, exc)
        return None


def alert_from_context(context, *, model: str, event: str, conn_id: str,
                       report_base_url: str | None, link_mode: str = "airflow",
                       reports_root: str | None = None) -> Alert:
    """The facts of this run, from the callback context and the tasks' XComs."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or f"release__{model}"
    run_id = context.get("run_id") or getattr(ti, "run_id", None) or "?"
    ck = _pull(ti, "newest_checkpoint") or {}
    if event == "success":
        verdict = _pull(ti, "validate") or {}
        published = _pull(ti, "publish") or {}
    else:  # a failed validation pushed its verdict under "verdict"; a later failure (publish) has
        # the passing one as validate's return value: its report link is still worth sending
        verdict = _pull(ti, "validate", key="verdict") or _pull(ti, "validate") or {}
        published = {}
    exc = context.get("exception")
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0] if exc is not None else None
    if reason is None and event == "failure":
        reason = verdict.get("reason") or context.get("reason")
    params = context.get("params") or {}
    return Alert(
        event=event, model=model, dag_id=dag_id, run_id=run_id,
        run_url=alert_message.run_url(ui_base_url(), dag_id, run_id),
        checkpoint=ck.get("uri") or verdict.get("checkpoint") or params.get("checkpoint"),
        step=ck.get("step"), task_id=getattr(ti, "task_id", None),
        try_number=getattr(ti, "try_number", None), reason=reason,
        checks=list(verdict.get("checks") or []), report=verdict.get("report"),
        report_link=report_link(verdict.get("report"), base_url=report_base_url, conn_id=conn_id,
                                mode=link_mode, model=model, reports_root=reports_root),
        version=published.get("version"), regression=verdict.get("regression"))


def provider_notifiers(alerts, subject: str, text: str) -> list[tuple[str, BaseNotifier]]:
    """The provider notifiers for one message: (channel name, notifier)."""
    out: list[tuple[str, BaseNotifier]] = []
    if alerts.slack_conn_id:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
        out.append((f"slack ({alerts.slack_conn_id})", SlackWebhookNotifier(
            slack_webhook_conn_id=alerts.slack_conn_id, text=text, unfurl_links=False, timeout=30)))
    if alerts.smtp_conn_id:
        out.append((f"e-mail ({alerts.smtp_conn_id})", _email_notifier(
            smtp_conn_id=alerts.smtp_conn_id, to=list(alerts.email_to), from_email=alerts.email_from,
            subject=subject, text=text)))
    return out


def _email_notifier(*, smtp_conn_id: str, to: list[str], from_email: str | None, subject: str, text: str):
    """The SMTP provider's notifier, sending multipart/alternative: the text as text/plain (what a
    terminal mail reader, a pager gateway or a mail filter reads) and as HTML (links clickable)."""
    from email.mime.text import MIMEText
    from functools import cached_property

    from airflow.providers.smtp.hooks.smtp import SmtpHook
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    class TextAndHtmlHook(SmtpHook):
        def _build_mime_message(self, *args, **kwargs):
            msg, recipients = super()._build_mime_message(*args, **kwargs)
            # the hook attaches only the HTML part; the plain one goes first (the last is preferred)
            msg.get_payload().insert(0, MIMEText(text, "plain", kwargs.get("mime_charset") or "utf-8"))
            return msg, recipients

    class TextAndHtmlNotifier(SmtpNotifier):
        @cached_property
        def hook(self) -> SmtpHook:
            return TextAndHtmlHook(smtp_conn_id=self.smtp_conn_id, auth_type=self.auth_type)

    return TextAndHtmlNotifier(smtp_conn_id=smtp_conn_id, to=to, from_email=from_email, subject=subject,
                               html_content=alert_message.html_body(text), mime_subtype="alternative")


class ReleaseAlert(BaseNotifier):
    """``on_failure_callback`` / ``on_success_callback`` of a release DAG: one message, every channel."""

    template_fields = ()

    def __init__(self, *, model: str, alerts, event: str = "failure", conn_id: str = "aws_default",
                 report_base_url: str | None = None, reports_root: str | None = None):
        super().__init__()
        if event not in ("failure", "success"):
            raise ValueError(f"event must be 'failure' or 'success', got {event!r}")
        self.model, self.alerts, self.event = model, alerts, event
        self.conn_id, self.report_base_url, self.reports_root = conn_id, report_base_url, reports_root

    def message(self, context) -> tuple[str, str]:
        """(subject, text) for this context; a minimal message if gathering the facts fails."""
        try:
            alert = alert_from_context(context, model=self.model, event=self.event, conn_id=self.conn_id,
                                       report_base_url=self.report_base_url,
                                       link_mode=getattr(self.alerts, "report_link", "airflow"),
                                       reports_root=self.reports_root)
        except Exception as exc:  # noqa: BLE001 - still tell someone
            log.exception("alert: could not gather the run's facts; sending a minimal message")
            ti = context.get("ti")
            alert = Alert(event=self.event, model=self.model, dag_id=f"release__{self.model}",
                          run_id=str(context.get("run_id")), task_id=getattr(ti, "task_id", None),
                          run_url=alert_message.run_url(ui_base_url(), f"release__{self.model}",
                                                        str(context.get("run_id"))),
                          reason=f"{context.get('exception')} (alert details unavailable: {exc})")
        return alert_message.subject(alert), alert_message.text(alert)

    def notify(self, context) -> None:
        task = context.get("task") or getattr(context.get("ti"), "task", None)
        if self.event == "failure" and getattr(task, "is_teardown", False):
            # a clean-up (teardown) does not decide the run's state; alerting on it would send a
            # second alert for a run whose release task already alerted
            log.warning("no alert for the failed teardown %s (see its log)", getattr(task, "task_id", "?"))
            return
        subject, text = self.message(context)
        self.send(context, subject, text)

    def send(self, context, subject: str, text: str) -> None:
        """One message on every configured channel; a channel that fails is logged, never raised."""
        sent, failed = [], []
        try:
            channels = provider_notifiers(self.alerts, subject, text)
        except Exception:  # noqa: BLE001 - e.g. a provider missing from this environment
            log.exception("alert for %s not sent: the provider notifiers could not be created", self.model)
            return
        for name, notifier in channels:
            try:
                notifier.notify(context)
                sent.append(name)
            except Exception as exc:  # noqa: BLE001 - one channel failing must not stop the others
                failed.append(name)
                log.error("alert for %s via %s failed: %s: %s", self.model, name, type(exc).__name__, exc)
        log.info("alert (%s) for %s run %s: sent via %s%s", self.event, self.model, context.get("run_id"),
                 ", ".join(sent) or "nothing", f"; FAILED via {', '.join(failed)}" if failed else "")

    def __call__(self, *args) -> None:
        """Never raises: the failure being reported must stay the task's failure. Nothing to render
        (no template fields), so no Jinja environment is built."""
        context = args[0] if len(args) == 1 else {"dag": args[0]}
        try:
            self.notify(context)
        except Exception:  # noqa: BLE001
            log.exception("alert for %s could not be sent", self.model)


def run_failure_from_context(context, *, model: str, conn_id: str, report_base_url: str | None,
                             link_mode: str = "airflow", reports_root: str | None = None,
                             run_timeout_s: float | None = None) -> Alert:
    """The facts of a run that ended failed by itself (the DAG's callback): Airflow's reason, the task
    it names (timed out: the unfinished task started last; Airflow has already marked it skipped),
    whether that task awaited a person's input, and what this run published."""
    import dataclasses
    base = alert_from_context(context, model=model, event="failure", conn_id=conn_id,
                              report_base_url=report_base_url, link_mode=link_mode, reports_root=reports_root)
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", None)
    task = getattr(ti, "task", None)
    awaiting = task_id == "approve" or any(c.__name__ == "HITLOperator" for c in type(task).__mro__)
    pub = _pull(ti, "publish") or {}
    dag = context.get("dag")
    try:
        before_publish = task_id is not None and task_id in dag.get_task("publish").get_flat_relative_ids(
            upstream=True)
    except Exception:  # noqa: BLE001 - no DAG or no publish task: say what is known
        before_publish = False
    if pub.get("version") is not None:
        published = f"version {pub['version']} (published by this run before it ended; not a complete release)"
    elif before_publish:
        published = "nothing (the run ended before publish)"
    elif task_id == "publish":
        published = f"not known: publish was cut off (`tfs-release versions {model}` lists what is committed)"
    elif task_id is None:
        published = f"not known (no task in the callback's context; `tfs-release versions {model}` lists it)"
    else:
        published = "nothing recorded by this run's publish task"
    return dataclasses.replace(base, event="run_failure", reason=None, version=pub.get("version"),
                               run_reason=context.get("reason"), run_timeout_s=run_timeout_s,
                               awaiting_input=bool(task_id) and awaiting, published=published)


class RunFailureAlert(ReleaseAlert):
    """The release DAG's own ``on_failure_callback``: one alert for a run that ended failed without a
    failed task's alert, e.g. its ``dagrun_timeout`` passed (Airflow then marks the unfinished tasks
    skipped, so no task callback fires), or every unfinished task deadlocked.

    Airflow 3.3 runs it in the DAG processor (``DagCallbackRequest``; ``airflow dags test`` runs it in
    process) with the context of the task Airflow names (``ti``, ``dag_run``, ``params``; XCom reads work)
    and ``reason``: ``timed_out``, ``all_tasks_deadlocked`` or ``task_failure``. A ``task_failure`` run
    has a failed task whose own failure callback (every task has one) already alerted: nothing is sent."""

    def __init__(self, *, run_timeout_s: float | None = None, **kwargs):
        super().__init__(event="failure", **kwargs)
        self.run_timeout_s = run_timeout_s

    def message(self, context) -> tuple[str, str]:
        try:
            alert = run_failure_from_context(context, model=self.model, conn_id=self.conn_id,
                                             report_base_url=self.report_base_url,
                                             link_mode=getattr(self.alerts, "report_link", "airflow"),
                                             reports_root=self.reports_root, run_timeout_s=self.run_timeout_s)
        except Exception as exc:  # noqa: BLE001 - still tell someone
            log.exception("alert: could not gather the run's facts; sending a minimal message")
            run_id = str(context.get("run_id"))
            alert = Alert(event="run_failure", model=self.model, dag_id=f"release__{self.model}", run_id=run_id,
                          run_url=alert_message.run_url(ui_base_url(), f"release__{self.model}", run_id),
                          run_reason=context.get("reason"), run_timeout_s=self.run_timeout_s,
                          published=f"not known (alert details unavailable: {exc})")
        return alert_message.subject(alert), alert_message.text(alert)

    def notify(self, context) -> None:
        reason = context.get("reason")
        if reason == "task_failure":
            ti = context.get("ti")
            log.info("run %s of %s failed at %s, whose failure alert went out: no second alert",
                     context.get("run_id"), self.model, getattr(ti, "task_id", "a task"))
            return
        subject, text = self.message(context)
        self.send(context, subject, text)


def run_failure_alert(model) -> RunFailureAlert | None:
    """The release DAG's ``on_failure_callback`` (DAG level), or None when the model has no ``alerts``."""
    alerts = model.extra.get("alerts")
    if alerts is None:
        return None
    return RunFailureAlert(model=model.name, alerts=alerts, conn_id=model.extra.get("conn_id", "aws_default"),
                           report_base_url=model.extra.get("report_base_url"), reports_root=reports_root(model),
                           run_timeout_s=model.timeouts.run)


def release_alert(model, event: str) -> ReleaseAlert | None:
    """The notifier for a model's release DAG, or None when it has no ``alerts`` (or no on_success).

    Wired as a *task* callback (the worker has the exception; a DAG callback would not): failure on
    every task through ``default_args``, success on ``publish`` only. The DAG is a chain, so a failed
    run has exactly one failed task (the ones after it end upstream_failed and run no callback), and
    a task with retries alerts only after its last try: one alert per failed run. A run that fails
    with no failed task (its timeout) alerts through the DAG's own callback (``run_failure_alert``).
    """
    alerts = model.extra.get("alerts")
    if alerts is None or (event == "success" and not alerts.on_success):
        return None
    return ReleaseAlert(model=model.name, alerts=alerts, event=event,
                        conn_id=model.extra.get("conn_id", "aws_default"),
                        report_base_url=model.extra.get("report_base_url"),
                        reports_root=reports_root(model))


def reports_root(model) -> str:
    """``s3://<serving>/<model>/_reports/``: where the validate step writes this model's reports."""
    from registry.layout import REPORTS
    return f"s3://{model.serving.bucket}/{model.serving.prefix}{REPORTS}"
