"""The text of a release alert: one plain-text message, identical in Slack and in the e-mail body.

    [tfs-release] shapes-classifier: release FAILED at validate: 2 absolute check(s) failed (golden, parity)
    model:       shapes-classifier
    checkpoint:  s3://training/shapes-classifier/checkpoints/ckpt-9 (step 9)
    failed task: validate (try 1)
    cause:       2 absolute check(s) failed (golden, parity)
    reason:      tfs-release validate failed (exit 1, a check failed): 2 check(s) failed: ...
    production:  nothing was published; production still serves v3
    next:        the report shows each failed image with the model's answer; ...
    next:        to validate it again (e.g. after a fix): trigger release__shapes-classifier with ...
    failed checks (2 of 17):
      - parity: REST serving_default vs exporter: ... [max_abs_diff=0.4213, atol=0.001]
      - golden: 0001.png: label 2 not in top-1 [0] [label=2, top_k=[0], p_label=0.3102]
    report:      https://reports.internal/serving/shapes-classifier/_reports/<run>/index.html
    airflow run: http://airflow.internal:8080/dags/release__shapes-classifier/runs/manual__...

A candidate blocked by the regression gate (``verdict["regression"]``, validation/regression.py)
says so, against which baseline, with the metric deltas and the worst images:

    [tfs-release] shapes-classifier: release FAILED at validate: blocked by the regression gate vs v3 (every absolute check passed)
    ...
    regression:  BLOCKED by the regression gate against baseline v3 (registry)
    summary:     blocked: accuracy 1.000 -> 0.927 (-0.073 > 0.02); 11 of 150 images regressed ...
    metric deltas (baseline -> candidate):
      - accuracy: 1 -> 0.927 (-0.073) REGRESSED
    flips:       11 of 150 images regressed, 0 fixed (rate 0.0733, limit 0)
    worst images (5 of 11):
      - 0097.png: label circle -> square; p(label) 0.99 -> 0.12

An accepted regression (the ``accept_regression`` param) says so with its reason.

A run that ended failed without a failed task's alert (``event="run_failure"``: the DAG's own
``on_failure_callback``, e.g. its ``dagrun_timeout`` passed, so Airflow skipped the unfinished
tasks) says how the run ended, which task it was waiting on and what was published:

    [tfs-release] shapes-classifier: release run TIMED OUT at approve (awaiting input); nothing published
    model:       shapes-classifier
    checkpoint:  s3://training/shapes-classifier/checkpoints/ckpt-9 (step 9)
    run:         timed out: the run's timeout (timeouts.run, 14400s) passed; Airflow skipped the unfinished tasks
    waiting:     approve (try 1): awaiting input (Approve / Reject), no decision yet
    published:   nothing (the run ended before publish)
    ...

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
MAX_METRICS = 8  # metric deltas listed (regressed ones first); the report has every one
MAX_WORST = 5    # worst regressed images listed
_URL = re.compile(r"(https?://[^\s<>\"']+)")


@dataclass(frozen=True)
class Alert:
    """What happened to one release run (a failure, or a published version)."""
    event: str                      # "failure" | "success" | "run_failure" (the run's own callback)
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
    regression: dict | None = None  # the verdict's "regression" (the gate against the baseline)
    # run_failure: Airflow's reason ("timed_out", "all_tasks_deadlocked", ...), the run's timeout,
    # whether task_id awaited a person's input, and what was published ("nothing ..." / "version N ...")
    run_reason: str | None = None
    run_timeout_s: float | None = None
    awaiting_input: bool = False
    published: str | None = None


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


def _baseline_version(reg: dict) -> str:
    return str((reg.get("baseline") or {}).get("version", "?"))


def run_outcome(a: Alert) -> str:
    """How the run ended, for the ``run:`` line."""
    if a.run_reason == "timed_out":
        limit = f" (timeouts.run, {a.run_timeout_s:g}s)" if a.run_timeout_s else ""
        return f"timed out: the run's timeout{limit} passed; Airflow skipped the unfinished tasks"
    if a.run_reason == "all_tasks_deadlocked":
        return "failed: no task could run any more (all unfinished tasks deadlocked)"
    return f"failed ({a.run_reason or 'no reason given'})"


GATE_CHECKS = ("regression:", "compatibility:")  # the regression gate's checks; every other one is absolute
NOT_SERVED = ("served:", "contract:")
UNTRAINED_SHARE = 0.5  # at least this share of the golden images wrong: the model did not learn
UNTRAINED_MIN = 10     # ... of a golden set at least this big (a few wrong images prove nothing)


@dataclass(frozen=True)
class Cause:
    """The primary cause of a failed validation, what it means and what would change the outcome."""
    kind: str        # "not served" | "untrained" | "absolute" | "regression"
    headline: str    # the subject's tail
    next: list[str]  # one or two things to do


def _metric(checks: list[dict], name: str):
    for c in checks:
        if c.get("name", "").startswith(f"metrics: {name} "):
            return (c.get("numbers") or {}).get(name)
    return None


def cause(a: Alert) -> Cause | None:
    """Why a validation failed, the most basic reason first: a candidate TF Serving cannot load or
    answer; a model that did not learn (most golden images wrong); absolute checks (golden images,
    floors, parity); only then the regression gate against what production serves. None when the
    failure is not a validation's verdict (the reason line says what it is)."""
    if a.event != "failure" or not a.checks:
        return None
    failed = [c for c in a.checks if not c.get("passed", True)]
    absolute = [c for c in failed if not c.get("name", "").startswith(GATE_CHECKS)]
    golden = [c for c in a.checks if c.get("name", "").startswith("golden: ")]
    golden_failed = [c for c in golden if not c.get("passed", True)]
    ck = a.checkpoint or "<checkpoint uri>"
    retry = f"to validate it again (e.g. after a fix): trigger release__{a.model} with checkpoint={ck} and force=true"
    if any(c.get("name", "").startswith(NOT_SERVED) for c in absolute):
        return Cause("not served", "the candidate does not load or answer in TF Serving",
                     ["the served/contract checks below say what TF Serving did; the export task's log "
                      "shows the SavedModel's signatures", retry])
    if len(golden) >= UNTRAINED_MIN and len(golden_failed) >= UNTRAINED_SHARE * len(golden):
        acc = _metric(a.checks, "accuracy")
        how = f", accuracy {fmt_number(acc)}" if isinstance(acc, float) else ""
        return Cause("untrained", f"the checkpoint looks untrained ({len(golden_failed)} of {len(golden)} "
                                  f"golden images wrong{how})",
                     [f"check the training job that wrote {ck} (a restart from random weights, a wrong "
                      "checkpoint, a diverged run); thresholds are not the problem",
                      "the next complete checkpoint is released when it lands"])
    if absolute:
        kinds = sorted({c.get("name", "?").split(":", 1)[0] for c in absolute})
        return Cause("absolute", f"{len(absolute)} absolute check(s) failed ({', '.join(kinds)})",
                     ["the report shows each failed image with the model's answer; a better checkpoint is "
                      "released when it lands", retry])
    reg = a.regression or {}
    if reg.get("status") == "blocked":
        return Cause("regression", f"blocked by the regression gate vs v{_baseline_version(reg)} "
                                   "(every absolute check passed)",
                     [f"to publish it anyway: trigger release__{a.model} with checkpoint={ck} and "
                      "accept_regression=\"<why this regression is acceptable>\""])
    return None


def task_headline(a: Alert) -> str | None:
    """The cause of a failure outside validation, from its task and reason: an approval rejected or
    timed out, a rollout production did not confirm (failed) or could not be observed (unknown)."""
    reason = a.reason or ""
    if a.task_id == "approve":
        m = re.search(r"rejected by ([^:;]+)", reason)
        if m:
            return f"rejected by {m.group(1).strip()}; nothing was published"
        if "approval timeout" in reason:
            return "no approval decision within the approval timeout; nothing was published"
    m = re.search(r"rollout of \S+ version \d+ (unknown|failed|rolled back):", reason)  # cli confirm's reason
    if a.task_id in ("wait_for_rollout", "confirm_rollout") and m:
        if m.group(1) == "unknown":
            return "production could not be observed (rollout unknown; nothing rolled back)"
        return "production did not serve the new version (rollout failed)"
    return None


def production_line(a: Alert) -> str | None:
    """What production serves after a failed validation: nothing was published, so what it served
    before; its version when the gate's baseline was read from production."""
    if a.event != "failure" or a.task_id not in ("newest_checkpoint", "is_new", "export", "validate"):
        return None
    reg = a.regression or {}
    if reg.get("status") == "no baseline":
        return "nothing was published; production serves no version of this model yet"
    base = reg.get("baseline") or {}
    if base.get("version") is not None and str(base.get("source", "")).startswith("production"):
        return f"nothing was published; production still serves v{base['version']}"
    # a baseline not read from production (baseline=newest_confirmed) says nothing about what it serves
    return "nothing was published; production serves what it served before"


def subject(a: Alert) -> str:
    status = (a.regression or {}).get("status")
    if a.event == "run_failure":
        how = "TIMED OUT" if a.run_reason == "timed_out" else "FAILED"
        at = f" at {a.task_id}" + (" (awaiting input)" if a.awaiting_input else "") if a.task_id else ""
        tail = "; nothing published" if (a.published or "").startswith("nothing") else ""
        return f"[tfs-release] {a.model}: release run {how}{at}{tail}"
    if a.event == "success":
        tail = " (regression accepted)" if status == "accepted" else ""
        return f"[tfs-release] {a.model}: version {a.version} published{tail}"
    c = cause(a)
    headline = c.headline if c is not None else task_headline(a)
    if headline:
        return f"[tfs-release] {a.model}: release FAILED at {a.task_id or 'the run'}: {headline}"
    tail = f" (blocked by the regression gate vs v{_baseline_version(a.regression)})" if status == "blocked" else ""
    return f"[tfs-release] {a.model}: release FAILED at {a.task_id or 'the run'}{tail}"


def fmt_delta(m: dict) -> str:
    """``name: baseline -> candidate (delta)``, marked when the gate counts it as a regression."""
    delta = m.get("delta")
    if delta is None and isinstance(m.get("baseline"), (int, float)) and isinstance(m.get("candidate"), (int, float)):
        delta = m["candidate"] - m["baseline"]
    d = "n/a" if delta is None else (f"{delta:+.4g}" if isinstance(delta, float) else f"{delta:+d}"
                                     if isinstance(delta, int) else str(delta))
    return (f"{m.get('name', '?')}: {fmt_number(m.get('baseline'))} -> {fmt_number(m.get('candidate'))} ({d})"
            + (" REGRESSED" if m.get("regressed") else ""))


def regression_lines(reg: dict | None) -> list[str]:
    """The regression gate's part of the message (nothing for verdicts without one)."""
    if not reg:
        return []
    status = reg.get("status")
    base = reg.get("baseline") or {}
    if status == "no baseline" or not base:
        return [f"regression:  {'no baseline (first release of this model)' if status == 'no baseline' else status}"]
    against = f"baseline v{_baseline_version(reg)}" + (f" ({base['source']})" if base.get("source") else "")
    if status == "blocked":
        lines = [f"regression:  BLOCKED by the regression gate against {against}"]
    elif status == "accepted":
        lines = [f"regression:  a regression against {against} was ACCEPTED",
                 f"accepted:    {one_line(reg.get('accepted_reason') or '(no reason given)', MAX_REASON)}"]
    else:
        return [f"regression:  {status} against {against}"]
    if reg.get("summary"):
        lines.append(f"summary:     {one_line(reg['summary'], MAX_REASON)}")
    metrics = sorted(reg.get("metrics") or [], key=lambda m: not m.get("regressed"))
    if metrics:
        lines.append("metric deltas (baseline -> candidate):")
        lines += [f"  - {one_line(fmt_delta(m), MAX_DETAIL)}" for m in metrics[:MAX_METRICS]]
        if len(metrics) > MAX_METRICS:
            lines.append(f"  (+{len(metrics) - MAX_METRICS} more in the report)")
    fl = reg.get("flips")
    if fl:
        lim = (reg.get("limits") or {}).get("max_flip_rate")
        lines.append(f"flips:       {fl.get('regressed', '?')} of {fl.get('images', '?')} images regressed, "
                     f"{fl.get('fixed', '?')} fixed (rate {fmt_number(fl.get('rate'))}"
                     + (f", limit {fmt_number(lim)})" if lim is not None else ")"))
    if status == "blocked":
        failures = reg.get("failures") or []
        if failures:
            lines.append("blocked because:")
            lines += [f"  - {one_line(f, MAX_DETAIL)}" for f in failures[:MAX_CHECKS]]
        worst = reg.get("worst") or []
        if worst:
            n = (fl or {}).get("regressed", len(worst))
            lines.append(f"worst images ({min(len(worst), MAX_WORST)} of {n}):")
            lines += [f"  - {w.get('image', '?')}: {one_line(w.get('summary') or '', MAX_DETAIL)}"
                      for w in worst[:MAX_WORST]]
    return lines


def text(a: Alert) -> str:
    """The message (Slack text and e-mail body): one fact per line, failed checks with numbers."""
    lines = [subject(a), f"model:       {a.model}"]
    ck = a.checkpoint or "(not resolved)"
    lines.append(f"checkpoint:  {ck}" + (f" (step {a.step})" if a.step is not None else ""))
    if a.event == "success":
        lines.append(f"version:     {a.version}")
    elif a.event == "run_failure":
        lines.append(f"run:         {run_outcome(a)}")
        task = a.task_id or "(unknown)"
        state = ("awaiting input (Approve / Reject), no decision yet" if a.awaiting_input
                 else "not finished" if a.task_id else "")
        lines.append(f"waiting:     {task}" + (f" (try {a.try_number})" if a.try_number else "")
                     + (f": {state}" if state else ""))
        if a.published:
            lines.append(f"published:   {one_line(a.published, MAX_REASON)}")
    else:
        task = a.task_id or "(unknown)"
        lines.append(f"failed task: {task}" + (f" (try {a.try_number})" if a.try_number else ""))
        c = cause(a)
        if c is not None:
            lines.append(f"cause:       {c.headline}")
        if a.reason:
            lines.append(f"reason:      {one_line(a.reason, MAX_REASON)}")
        prod = production_line(a)
        if prod:
            lines.append(f"production:  {prod}")
        if c is not None:
            lines += [f"next:        {one_line(n, MAX_REASON)}" for n in c.next]
    # the absolute failures first: the gate only matters for a candidate that passes them
    failed = sorted((c for c in a.checks if not c.get("passed", True)),
                    key=lambda c: c.get("name", "").startswith(GATE_CHECKS))
    absolute_failed = any(not c.get("name", "").startswith(GATE_CHECKS) for c in failed)
    if not absolute_failed:
        lines += regression_lines(a.regression)
    if failed:
        lines.append(f"failed checks ({len(failed)} of {len(a.checks)}):")
        lines += [f"  - {fmt_check(c)}" for c in failed[:MAX_CHECKS]]
        if len(failed) > MAX_CHECKS:
            lines.append(f"  (+{len(failed) - MAX_CHECKS} more in the report)")
    elif a.checks:
        lines.append(f"checks:      all {len(a.checks)} passed")
    if absolute_failed:
        lines += regression_lines(a.regression)
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
