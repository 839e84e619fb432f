"""A human decision before ``publish``, where a model's config asks for one (``approval``):

- ``required``: every release waits for a decision;
- ``on_regression``: only a release whose regression gate found a regression that the trigger
  accepted (``accept_regression``) waits; others go on without asking;
- ``none`` (default): no approval task.

Built on Airflow 3's human-in-the-loop ``ApprovalOperator`` (standard provider): the request shows
the verdict, the metric deltas against production and the report link, and is announced on the
model's alert channels. Approve: ``publish`` goes on, and the approver and their comment go into the
version's manifest. Reject: the run ends **failed** (the stock operator would mark a rejection as a
success and skip downstream, which looks green), saying who rejected it and why. No decision within
``approval_timeout_s`` fails it too (nothing is published by default).
"""
from __future__ import annotations

import datetime as _dt
import logging

from airflow.providers.standard.exceptions import HITLTimeoutError
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param, ParamsDict
from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

log = logging.getLogger(__name__)
MODES = ("required", "on_regression", "none")


class ReleaseRejected(SystemExit):
    """A person rejected the release (or nobody decided in time): an expected outcome, so the task
    log ends in one line, ``Task exited exit_code='release of M rejected by X: why; nothing was
    published'`` (Airflow's task runner logs a ``SystemExit`` that way, any other exception, even
    ``AirflowFailException``, with its traceback). The task fails without a retry (``NO_RETRY``; its
    retries are only for a decision Airflow lost, see model_release.py)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = message


# a decision (or its timeout) is final: never asked again
NO_RETRY = ExceptionRetryPolicy(rules=[RetryRule(exception=ReleaseRejected, action=RetryAction.FAIL,
                                                 reason="the approval was decided (or timed out)")])


def request_body(model: str, verdict: dict, report_link: str | None) -> str:
    """Markdown for the approval request: verdict, regression gate, metric deltas, report."""
    gate = verdict.get("regression") or {}
    lines = [f"**{model}** candidate `{verdict.get('candidate', '?')}` from `{verdict.get('checkpoint', '?')}`",
             f"- validation: **{'PASSED' if verdict.get('passed') else 'FAILED'}**"
             + (f" ({verdict['reason']})" if verdict.get("reason") else "")]
    if gate:
        lines.append(f"- regression gate: **{gate.get('status')}**: {gate.get('summary')}")
        if gate.get("accepted_reason"):
            lines.append(f"- regression accepted by the trigger: _{gate['accepted_reason']}_")
        base = (gate.get("baseline") or {}).get("version")
        for row in gate.get("metrics") or []:
            lines.append(f"  - {row['name']}: v{base} {row['baseline']:.3f} -> candidate {row['candidate']:.3f} "
                         f"({row['delta']:+.3f}){' **REGRESSED**' if row.get('regressed') else ''}")
    for k, v in (verdict.get("metrics") or {}).items():
        if k in ("accuracy", "map", "ap50", "miou_set"):
            lines.append(f"- {k}: {v}")
    if report_link:
        lines.append(f"- report: {report_link}")
    lines.append("\nApprove to publish it as the next version; Reject (with a comment) to stop this release.")
    return "\n".join(lines)


class ReleaseApprovalOperator(ApprovalOperator):
    """Approve / Reject before publish; a rejection or a timeout fails the task (and the run)."""

    def __init__(self, *, model: str, mode: str, announce=None, report_link=None, **kwargs):
        if mode not in MODES:
            raise ValueError(f"approval must be one of {', '.join(MODES)}, got {mode!r}")
        kwargs.setdefault("subject", f"Approve the release of {model}?")
        # The form's Comment field. Airflow has already put the DAG's params into kwargs["params"]
        # (source "dag", which HITLOperator drops), so a setdefault would never add it: the request then
        # had no Comment field in the UI (the REST API took a comment anyway, unchecked).
        params = kwargs.pop("params", None)
        params = params if isinstance(params, ParamsDict) else ParamsDict(params or {})
        if "comment" not in params or params.get_param("comment").source != "task":
            params["comment"] = Param(None, type=["null", "string"], title="Comment", source="task",
                                      description="why (recorded with the decision)")
        kwargs["params"] = params
        kwargs.setdefault("retry_policy", NO_RETRY)
        super().__init__(fail_on_reject=True, **kwargs)
        self.model, self.mode, self.announce, self.report_link = model, mode, announce, report_link

    def execute(self, context):
        ti = context["ti"]
        verdict = ti.xcom_pull(task_ids="validate") or {}
        gate = (verdict.get("regression") or {}).get("status")
        if self.mode == "on_regression" and gate != "accepted":
            self.log.info("approval: on_regression, and the regression gate says %r (no accepted regression): "
                          "no decision needed", gate)
            return {"approved": True, "needed": False, "approved_by": None, "comment": None}
        link = self.report_link(verdict) if self.report_link else verdict.get("report")
        self.body = request_body(self.model, verdict, link)
        if getattr(ti, "try_number", 1) > 1:
            self.body = (f"_Asked again (try {ti.try_number}): the previous request ended without a decision "
                         "this run could use._\n\n" + self.body)
        if self.announce is not None:
            try:
                self.announce(context, self.subject, self.body)
            except Exception:  # noqa: BLE001 - the request stands in the UI even if a channel fails
                self.log.exception("approval request for %s could not be announced", self.model)
        return super().execute(context)

    def execute_complete(self, context, event):
        try:
            ret = HITLOperator.execute_complete(self, context=context, event=event)
        except HITLTimeoutError:
            raise ReleaseRejected(f"release of {self.model}: no decision within the approval timeout "
                                  f"({self.response_timeout}); nothing was published") from None
        chosen = ret["chosen_options"][0]
        user = ret.get("responded_by_user") or {}
        who = user.get("name") or user.get("id") or "someone"
        comment = (ret.get("params_input") or {}).get("comment") or ""
        if chosen != self.APPROVE:
            raise ReleaseRejected(f"release of {self.model} rejected by {who}"
                                  + (f": {comment}" if comment else " (no comment)") + "; nothing was published")
        self.log.info("release of %s approved by %s%s", self.model, who, f": {comment}" if comment else "")
        return {"approved": True, "needed": True, "approved_by": who, "comment": comment,
                "decided": _dt.datetime.now(_dt.timezone.utc).isoformat()}
