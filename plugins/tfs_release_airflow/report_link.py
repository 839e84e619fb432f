"""The "Validation report" extra link of the validate task.

How Airflow 3 evaluates it: links defined on an operator are computed by the *worker* when the
task ends (``finalize``, on success and on failure) and stored in XCom under ``_link_ReportLink``;
the serialized DAG keeps only {link name: XCom key}, and the API server / UI reads the XCom value.
So whatever the link is ends up in XCom: it must not be a secret. A presigned URL carries the
access key id and a signature, so it is never used here. The link is, for the report of this try:

- with ``report_base_url`` in the model's config: ``report_base_url`` + ``/<bucket>/<key>`` (an
  internal HTTPS proxy or console over the serving bucket);
- otherwise: ``[api] base_url`` + ``/tfs-release/reports/<model>/<run>/index.html``, the report
  endpoint this project's plugin mounts on Airflow's API server (``report_app.py``: it checks the
  caller's Airflow login and streams the object from the serving bucket with the model's
  connection). Only names are in it, no credential.

No plugin registration is needed for the link itself: it is set on the task (``attach``), and the
API server only needs the XCom key from the serialized DAG.
"""
from __future__ import annotations

from urllib.parse import quote

import attrs
from airflow.sdk import BaseOperatorLink

from tfs_release_airflow.alert_message import report_url

NAME = "Validation report"
DEFAULT_UI = "http://localhost:8080"  # Airflow's own default when [api] base_url is not set
URL_PREFIX = "/tfs-release"         # where report_app.py is mounted on the API server
REPORTS_ROUTE = "/reports"          # ... and its route: /reports/<model>/<run>/<path>


def endpoint_url(base_url: str, model: str, run: str, path: str = "index.html") -> str:
    """``<[api] base_url>/tfs-release/reports/<model>/<run>/<path>`` (each part URL-quoted; run ids
    such as ``manual__2026-01-02T03:04:05+00:00-t1`` keep their ``:`` and ``+`` as %3A, %2B)."""
    return (f"{base_url.rstrip('/')}{URL_PREFIX}{REPORTS_ROUTE}/{quote(model, safe='')}/"
            f"{quote(run, safe='')}/{quote(path)}")


def endpoint_link(report_uri: str, *, model: str, reports_root: str, base_url: str) -> str:
    """The endpoint URL of ``s3://<serving>/<model>/_reports/<run>/<path>``; "" when the report is not
    under ``reports_root`` (``s3://<serving>/<model>/_reports/``)."""
    if not report_uri.startswith(reports_root):
        return ""
    run, _, path = report_uri[len(reports_root):].partition("/")
    return endpoint_url(base_url, model, run, path or "index.html") if run else ""


def ui_base_url() -> str:
    """``[api] base_url`` as this process sees it (Airflow's own default when unset)."""
    try:
        from airflow.sdk.configuration import conf
        return conf.get("api", "base_url", fallback=None) or DEFAULT_UI
    except Exception:  # noqa: BLE001 - a link is better than no alert
        return DEFAULT_UI


@attrs.define()
class ReportLink(BaseOperatorLink):
    """The report of this validate try: ``report_base_url/<bucket>/<key>``, else the API server's
    report endpoint (empty when the try left no report, e.g. it failed before validating)."""

    report_base_url: str | None = None
    model: str | None = None
    reports_root: str | None = None     # s3://<serving>/<model>/_reports/

    @property
    def name(self) -> str:
        return NAME

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom
        verdict = (XCom.get_value(ti_key=ti_key, key="verdict")
                   or XCom.get_value(ti_key=ti_key, key="return_value") or {})
        report = verdict.get("report") if isinstance(verdict, dict) else None
        return self.link_for(report) if report else ""

    def link_for(self, report_uri: str) -> str:
        """The link to ``s3://<serving>/<model>/_reports/<run>/index.html``."""
        if self.report_base_url:
            return report_url(report_uri, self.report_base_url)
        if not (self.model and self.reports_root):
            return ""
        return endpoint_link(report_uri, model=self.model, reports_root=self.reports_root, base_url=ui_base_url())


def attach(operator, report_base_url: str | None, *, model: str | None = None,
           reports_root: str | None = None) -> None:
    """Give one task (e.g. the TaskFlow ``validate``) the report link."""
    operator.operator_extra_links = [*operator.operator_extra_links, ReportLink(
        report_base_url=report_base_url, model=model, reports_root=reports_root)]
