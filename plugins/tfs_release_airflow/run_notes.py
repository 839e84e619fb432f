"""Run notes: every ended release run says in one line what happened, in the UI's grid and run page
(a run's note), so runs can be told apart without opening a task or an XCom:

- failed: the alert's own summary of the primary cause, e.g. "release FAILED at validate: the
  checkpoint looks untrained (95 of 150 golden images wrong); nothing published" (the failed task's
  ``on_failure_callback``, ``record_failure``, computes it in the worker, where the exception is,
  and leaves it in XCom ``failure_summary``); a run that failed with no failed task (its timeout):
  "run failed (timed_out)";
- succeeded: "published v3 (ckpt-40)", "dry run: validated, not published", or "nothing new:
  ckpt-40 is already v3".

The note is written once, by a listener in the process that ends the run (the scheduler, or
``airflow dags test``), only on ``release__*`` runs, and never over a note a person already wrote.
A failure here is logged and never changes the run.
"""
from __future__ import annotations

import logging

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)
KEY = "failure_summary"
PREFIX = "release__"


def record_failure(model: str):
    """The task callback that leaves the failure's one-line summary in XCom (``failure_summary``)."""

    def callback(context) -> None:
        ti = context.get("ti")
        task = context.get("task") or getattr(ti, "task", None)
        if ti is None or getattr(task, "is_teardown", False):
            return  # a teardown does not decide the run's state
        try:
            from tfs_release_airflow.alerts import ReleaseAlert
            subject, _ = ReleaseAlert(model=model, alerts=None).message(context)
            ti.xcom_push(key=KEY, value=summary(subject, model))
        except Exception:  # noqa: BLE001 - the note is a convenience; the failure stands without it
            log.exception("run note: could not record the failure summary")

    callback.__name__ = f"record_failure__{model}"
    return callback


def summary(subject: str, model: str) -> str:
    """The alert subject without its ``[tfs-release] <model>: `` prefix."""
    head = f"[tfs-release] {model}: "
    return subject[len(head):] if subject.startswith(head) else subject


def _xcoms(dag_run, session) -> dict[tuple[str, str], object]:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select
    rows = session.scalars(select(XComModel).where(XComModel.dag_id == dag_run.dag_id,
                                                   XComModel.run_id == dag_run.run_id,
                                                   XComModel.map_index == -1))
    return {(x.task_id, x.key): XComModel.deserialize_value(x) for x in rows}


def _checkpoint_name(ck: dict | None) -> str:
    uri = (ck or {}).get("uri") or ""
    return uri.rstrip("/").rsplit("/", 1)[-1] or "?"


def failure_note(xcoms: dict, msg: str) -> str:
    for (_task, key), value in xcoms.items():
        if key == KEY and value:
            return str(value)
    return f"run failed ({msg})"


def success_note(xcoms: dict, dry_run: bool) -> str:
    ck = xcoms.get(("newest_checkpoint", "return_value")) or {}
    published = xcoms.get(("publish", "return_value")) or {}
    if published.get("version") is not None:
        labels = published.get("labels") or {}
        canary = f" as canary beside stable v{labels['stable']}" if labels.get("canary") == published["version"] else ""
        return f"published v{published['version']}{canary} ({_checkpoint_name(ck)})"
    if dry_run:
        return f"dry run: {_checkpoint_name(ck)} validated, not published"
    if ck.get("published_as") is not None:
        return f"nothing new: {_checkpoint_name(ck)} is already v{ck['published_as']}"
    return "succeeded, nothing published"


def note_for(dag_run, state: str, msg: str, session) -> str | None:
    xcoms = _xcoms(dag_run, session)
    if state == "failed":
        return failure_note(xcoms, msg)
    return success_note(xcoms, bool((dag_run.conf or {}).get("dry_run")))


class RunNotes:
    """Listener: the note of an ended release run."""

    def _note(self, dag_run, state: str, msg: str) -> None:
        if not str(getattr(dag_run, "dag_id", "")).startswith(PREFIX):
            return
        try:
            from sqlalchemy.orm import object_session
            session = object_session(dag_run)
            if session is not None:  # the scheduler: its session commits the note with the state
                if not dag_run.note:
                    dag_run.note = note_for(dag_run, state, msg, session)[:1000]
                return
            # `airflow dags test` hands over a run detached from any session; it works in the thread's
            # scoped session and commits it right after this call: the note goes in there, uncommitted
            # here (a commit or close of our own would end its transaction under it)
            from airflow import settings
            from airflow.models.dagrun import DagRun
            from sqlalchemy import select
            scoped = settings.Session()
            run = scoped.scalar(select(DagRun).where(DagRun.dag_id == dag_run.dag_id, DagRun.run_id == dag_run.run_id))
            if run is not None and not run.note:
                run.note = note_for(run, state, msg, scoped)[:1000]
        except Exception:  # noqa: BLE001 - never break the scheduler's loop for a note
            log.exception("run note for %s %s failed", getattr(dag_run, "dag_id", "?"), getattr(dag_run, "run_id", "?"))

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str):
        self._note(dag_run, "failed", msg)

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str):
        self._note(dag_run, "success", msg)


class TfsReleaseRunNotesPlugin(AirflowPlugin):
    name = "tfs_release_run_notes"
    listeners = [RunNotes()]
