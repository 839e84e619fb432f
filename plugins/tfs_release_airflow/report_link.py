"""The "Validation report" extra link of the validate task.

How Airflow 3 evaluates it: links defined on an operator are computed by the *worker* when the
task ends (``finalize``, on success and on failure) and stored in XCom under ``_link_ReportLink``;
the serialized DAG keeps only {link name: XCom key}, and the API server / UI reads the XCom value.
So whatever the link is ends up in XCom: it must not be a secret. A presigned URL carries the
access key id and a signature, so it is never used here: the link is ``report_base_url`` +
``/<bucket>/<key>`` (an internal HTTPS proxy or console over the serving bucket). Without
``report_base_url`` in the model's config the link stays empty (the UI shows it disabled); the
alert message still carries a presigned URL, made at alert time.

No plugin registration is needed: the link is set on the task (``attach``), and the API server
only needs the XCom key from the serialized DAG.
"""
from __future__ import annotations

import attrs
from airflow.sdk import BaseOperatorLink

from tfs_release_airflow.alert_message import report_url

NAME = "Validation report"


@attrs.define()
class ReportLink(BaseOperatorLink):
    """``report_base_url/<bucket>/<key>`` of the report of this validate try (empty if none)."""

    report_base_url: str | None = None

    @property
    def name(self) -> str:
        return NAME

    def get_link(self, operator, *, ti_key) -> str:
        if not self.report_base_url:
            return ""
        from airflow.sdk.execution_time.xcom import XCom
        verdict = (XCom.get_value(ti_key=ti_key, key="verdict")
                   or XCom.get_value(ti_key=ti_key, key="return_value") or {})
        report = verdict.get("report") if isinstance(verdict, dict) else None
        return report_url(report, self.report_base_url) if report else ""


def attach(operator, report_base_url: str | None) -> None:
    """Give one task (e.g. the TaskFlow ``validate``) the report link."""
    operator.operator_extra_links = [*operator.operator_extra_links, ReportLink(report_base_url=report_base_url)]
