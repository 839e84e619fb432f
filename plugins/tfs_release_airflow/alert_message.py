"""The text of a release alert: one plain-text message, identical in Slack and in the e-mail body.

    [tfs-release] shapes-classifier: release FAILED at validate
    model:       shapes-classifier
    checkpoint:  s3://training/shapes-classifier/checkpoints/ckpt-9 (step 9)
    failed task: validate (try 1)
    reason:      tfs-release validate failed (exit 1, a check failed): 2 check(s) failed: ...
    failed checks (2 of 17):
      - parity: REST serving_default vs exporter: ... [max_abs_diff=0.4213, atol=0.001]
      - golden: 0001.png: label 2 not in top-1 [0] [label=2, top_k=[0], p_label=0.3102]
    report:      https://reports.internal/serving/shapes-classifier/_reports/<run>/index.html
    airflow run: http://airflow.internal:8080/dags/release__shapes-classifier/runs/manual__...

Stdlib only (no Airflow): ``alerts.py`` gathers the facts from the Airflow context, this module
only formats them, so the format is testable anywhere.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import quote

MAX_CHECKS = 10  # failed checks listed in full; the report has every one
MAX_DETAIL = 300
MAX_REASON = 500
_URL = re.compile(r"(https?://[^\s<>\"']+)")


@dataclass(frozen=True)
class Alert:
    """What happened to one release run (a failure, or a published version)."""
    event: str                      # "failure" | "success"
    model: str
    dag_id: str
    run_id: str
    run_url: str
    checkpoint: str | None = None   # s3://.../ckpt-N
    step: int | None = None
    task_id: str | None = None      # the failed task (failure) or the last one (success)
    try_number: int | None = None
    reason: str | None = None       # the exception / verdict reason, first line
    checks: list[dict] = field(default_factory=list)  # the verdict's checks (all of them)
    report: str | None = None       # s3:// uri of the report
    report_link: str | None = None  # what a human opens (base URL or presigned)
    version: int | None = None      # success: the published version


def one_line(text: object, limit: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def fmt_number(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_number(x) for x in v) + "]"
    return str(v)


def fmt_check(check: dict) -> str:
    """``name: detail [k=v, ...]``: the check's own numbers (tolerances, observed values)."""
    nums = check.get("numbers") or {}
    tail = f" [{', '.join(f'{k}={fmt_number(v)}' for k, v in nums.items())}]" if nums else ""
    return f"{check.get('name', '?')}: {one_line(check.get('detail') or '', MAX_DETAIL)}{tail}"


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of the run (Airflow 3 routes: /dags/<dag_id>/runs/<run_id>)."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def report_url(report_uri: str, base_url: str) -> str:
    """``s3://bucket/key`` -> ``<base>/<bucket>/<key>`` (a proxy or console over the bucket)."""
    bucket, _, key = report_uri[len("s3://"):].partition("/")
    return f"{base_url.rstrip('/')}/{bucket}/{quote(key)}"


def subject(a: Alert) -> str:
    if a.event == "success":
        return f"[tfs-release] {a.model}: version {a.version} published"
    return f"[tfs-release] {a.model}: release FAILED at {a.task_id or 'the run'}"


def text(a: Alert) -> str:
    """The message (Slack text and e-mail body): one fact per line, failed checks with numbers."""
    lines = [subject(a), f"model:       {a.model}"]
    ck = a.checkpoint or "(not resolved)"
    lines.append(f"checkpoint:  {ck}" + (f" (step {a.step})" if a.step is not None else ""))
    if a.event == "success":
        lines.append(f"version:     {a.version}")
    else:
        task = a.task_id or "(unknown)"
        lines.append(f"failed task: {task}" + (f" (try {a.try_number})" if a.try_number else ""))
        if a.reason:
            lines.append(f"reason:      {one_line(a.reason, MAX_REASON)}")
    failed = [c for c in a.checks if not c.get("passed", True)]
    if failed:
        lines.append(f"failed checks ({len(failed)} of {len(a.checks)}):")
        lines += [f"  - {fmt_check(c)}" for c in failed[:MAX_CHECKS]]
        if len(failed) > MAX_CHECKS:
            lines.append(f"  (+{len(failed) - MAX_CHECKS} more in the report)")
    elif a.checks:
        lines.append(f"checks:      all {len(a.checks)} passed")
    if a.report_link:
        lines.append(f"report:      {a.report_link}")
    elif a.report:
        lines.append(f"report:      {a.report}")
    lines.append(f"airflow run: {a.run_url}")
    return "\n".join(lines) + "\n"


def html_body(message: str) -> str:
    """The same text for e-mail: escaped, monospaced, with clickable links."""
    escaped = html.escape(message, quote=False)
    linked = _URL.sub(lambda m: f'<a href="{m.group(1)}">{m.group(1)}</a>', escaped)
    return f'<pre style="font-family: monospace">{linked}</pre>'
