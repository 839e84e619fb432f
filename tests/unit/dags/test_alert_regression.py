"""The alert text for the regression gate (issue 12): a candidate blocked against baseline vN says so,
with the metric deltas and the worst images; an accepted regression says so with its reason; old
verdicts (no "regression") give the same message as before. Pure formatting (alert_message.py is
stdlib only): hand-built ``verdict["regression"]`` dicts of the shape validation/regression.py writes."""
from __future__ import annotations

import os
import sys

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "plugins"))
from tfs_release_airflow import alert_message as am  # noqa: E402

WORST = [{"image": f"{i:04d}.png", "summary": f"label circle -> square; p(label) 0.99 -> 0.{i:02d}"}
         for i in (97, 12, 45, 3, 60, 88, 71)]


def regression(status="blocked", **kw) -> dict:
    reg = {
        "status": status,
        "summary": "blocked: accuracy 1.000 -> 0.927 (-0.073 > 0.02); 11 of 150 images regressed (rate 0.073 > 0.0)",
        "baseline": {"version": 3, "source": "production", "checkpoint": "s3://training/m/checkpoints/ckpt-1500"},
        "accepted_reason": None,
        "failures": ["accuracy 1 -> 0.927 (-0.073 > max_metric_drop 0.02)",
                     "11 of 150 images regressed (rate 0.0733 > max_flip_rate 0)"],
        "limits": {"max_metric_drop": 0.02, "max_flip_rate": 0.0, "max_latency_ratio": 1.5,
                   "max_memory_ratio": 2.0, "serving_memory_limit_mb": None},
        "metrics": [
            {"name": "top2_accuracy", "baseline": 1.0, "candidate": 1.0, "delta": 0.0, "higher_is_better": True,
             "regressed": False},
            {"name": "accuracy", "baseline": 1.0, "candidate": 0.927, "delta": -0.073, "higher_is_better": True,
             "regressed": True},
            {"name": "images_failed", "baseline": 0, "candidate": 11, "delta": 11, "higher_is_better": False,
             "regressed": False},
        ],
        "flips": {"images": 150, "regressed": 11, "fixed": 0, "changed": 11, "rate": 0.0733},
        "worst": WORST,
    }
    reg.update(kw)
    return reg


def alert(**kw) -> am.Alert:
    base = dict(event="failure", model="shapes-classifier", dag_id="release__shapes-classifier", run_id="r1",
                run_url="http://airflow.internal/dags/release__shapes-classifier/runs/r1",
                checkpoint="s3://training/shapes-classifier/checkpoints/ckpt-300", step=300, task_id="validate",
                try_number=1, reason="tfs-release validate failed (exit 1, a check failed): 1 check(s) failed",
                checks=[{"name": "regression: against baseline v3", "passed": False, "detail": "blocked", "numbers": {}}],
                report_link="https://reports.internal/r1/index.html")
    return am.Alert(**{**base, **kw})


def test_blocked_alert_names_the_baseline_the_deltas_and_the_worst_images():
    a = alert(regression=regression())
    assert am.subject(a) == ("[tfs-release] shapes-classifier: release FAILED at validate: "
                             "blocked by the regression gate vs v3 (every absolute check passed)")
    lines = am.text(a).splitlines()
    i = lines.index("regression:  BLOCKED by the regression gate against baseline v3 (production)")
    assert lines[i - 3:i] == [
        "reason:      tfs-release validate failed (exit 1, a check failed): 1 check(s) failed",
        "production:  nothing was published; production still serves v3",
        "next:        to publish it anyway: trigger release__shapes-classifier with "
        "checkpoint=s3://training/shapes-classifier/checkpoints/ckpt-300 and "
        "accept_regression=\"<why this regression is acceptable>\"",
    ]
    assert lines[0] == am.subject(a) and "cause:       blocked by the regression gate vs v3 (every absolute check passed)" in lines
    assert lines[i + 1:i + 17] == [
        "summary:     blocked: accuracy 1.000 -> 0.927 (-0.073 > 0.02); 11 of 150 images regressed (rate 0.073 > 0.0)",
        "metric deltas (baseline -> candidate):",
        "  - accuracy: 1 -> 0.927 (-0.073) REGRESSED",      # the regressed metric first
        "  - top2_accuracy: 1 -> 1 (+0)",
        "  - images_failed: 0 -> 11 (+11)",
        "flips:       11 of 150 images regressed, 0 fixed (rate 0.0733, limit 0)",
        "blocked because:",
        "  - accuracy 1 -> 0.927 (-0.073 > max_metric_drop 0.02)",
        "  - 11 of 150 images regressed (rate 0.0733 > max_flip_rate 0)",
        "worst images (5 of 11):",
        "  - 0097.png: label circle -> square; p(label) 0.99 -> 0.97",
        "  - 0012.png: label circle -> square; p(label) 0.99 -> 0.12",
        "  - 0045.png: label circle -> square; p(label) 0.99 -> 0.45",
        "  - 0003.png: label circle -> square; p(label) 0.99 -> 0.03",
        "  - 0060.png: label circle -> square; p(label) 0.99 -> 0.60",
        "failed checks (1 of 1):",
    ]
    assert "0088.png" not in "\n".join(lines)          # at most 5 worst images
    assert lines[-2:] == ["report:      https://reports.internal/r1/index.html",
                          "airflow run: http://airflow.internal/dags/release__shapes-classifier/runs/r1"]
    # the e-mail body is the same text
    assert "0097.png: label circle -&gt; square" in am.html_body(am.text(a))


def test_many_metrics_are_clipped_and_counted():
    metrics = [{"name": f"m{i}", "baseline": 1.0, "candidate": 0.5, "delta": -0.5, "higher_is_better": True,
                "regressed": i == 11} for i in range(12)]
    text = am.text(alert(regression=regression(metrics=metrics)))
    deltas = [ln for ln in text.splitlines() if ln.startswith("  - m")]
    assert len(deltas) == am.MAX_METRICS and deltas[0] == "  - m11: 1 -> 0.5 (-0.5) REGRESSED"
    assert f"  (+{12 - am.MAX_METRICS} more in the report)" in text


def test_accepted_regression_says_so_with_the_reason():
    reg = regression("accepted", accepted_reason="new label map agreed with the product team (REL-42)")
    a = alert(event="success", version=8, task_id="publish", reason=None, checks=[], regression=reg)
    assert am.subject(a) == "[tfs-release] shapes-classifier: version 8 published (regression accepted)"
    text = am.text(a)
    assert "regression:  a regression against baseline v3 (production) was ACCEPTED\n" in text
    assert "accepted:    new label map agreed with the product team (REL-42)\n" in text
    assert "  - accuracy: 1 -> 0.927 (-0.073) REGRESSED\n" in text
    assert "BLOCKED" not in text and "blocked because" not in text and "worst images" not in text
    # a later failure of the same run (publish) still says the regression was accepted
    failed = am.text(alert(task_id="publish", reason="StorageError: claim refused", regression=reg))
    assert "accepted:    new label map agreed with the product team (REL-42)" in failed


def test_passed_no_baseline_and_old_verdicts():
    passed = am.text(alert(event="success", version=4, reason=None, regression=regression(
        "passed", summary="passed", failures=[], worst=[])))
    assert "regression:  passed against baseline v3 (production)\n" in passed and "metric deltas" not in passed
    first = alert(event="success", version=1, reason=None, regression={
        "status": "no baseline", "summary": "no baseline", "baseline": None, "limits": {}})
    assert "regression:  no baseline (first release of this model)\n" in am.text(first)
    assert am.subject(first) == "[tfs-release] shapes-classifier: version 1 published"
    old = alert()
    assert "regression:  " not in am.text(old)
    assert am.subject(old) == "[tfs-release] shapes-classifier: release FAILED at validate"


# ---- the primary cause first (issue 23) ----------------------------------------------------------

def _golden(n: int, wrong: int) -> list[dict]:
    return [{"name": f"golden: {i:04d}.png", "passed": i >= wrong, "detail": "label 1 not in top-1 [0]",
             "numbers": {}} for i in range(n)]


def test_the_subject_names_the_primary_cause_of_each_failure_kind():
    reg_blocked = regression()
    first = {"status": "no baseline", "baseline": None}
    acc = [{"name": "metrics: accuracy >= 0.97", "passed": False, "numbers": {"accuracy": 0.367, "min_accuracy": 0.97}}]
    served = [{"name": "served: version AVAILABLE", "passed": False, "detail": "not AVAILABLE within 60 s",
               "numbers": {}}]
    gate = [{"name": "regression: vs baseline v3 (production)", "passed": False, "detail": "blocked", "numbers": {}}]
    cases = {
        # a random-weight model: most golden images wrong -> untrained, even with the gate also blocking
        "validate: the checkpoint looks untrained (95 of 150 golden images wrong, accuracy 0.367)":
            alert(checks=_golden(150, 95) + acc + gate, regression=reg_blocked),
        "validate: the candidate does not load or answer in TF Serving": alert(checks=served + _golden(150, 150)),
        "validate: 2 absolute check(s) failed (golden, metrics)":
            alert(checks=_golden(150, 1) + acc + gate, regression=reg_blocked),
        "validate: blocked by the regression gate vs v3 (every absolute check passed)":
            alert(checks=_golden(150, 0) + gate, regression=reg_blocked),
        "approve: rejected by alice; nothing was published":
            alert(task_id="approve", checks=[], reason="release of m rejected by alice: wait for REL-9; nothing was published"),
        "approve: no approval decision within the approval timeout; nothing was published":
            alert(task_id="approve", checks=[], reason="release of m: no decision within the approval timeout (1:00:00); "
                                                       "nothing was published"),
        "confirm_rollout: production did not serve the new version (rollout failed)":
            alert(task_id="confirm_rollout", checks=[], reason="rollout of m version 4 rolled back: NOT_FOUND by the deadline; "
                                                               "published a copy of version 3 as version 5"),
        "confirm_rollout: production could not be observed (rollout unknown; nothing rolled back)":
            alert(task_id="confirm_rollout", checks=[], reason="rollout of m version 4 unknown: production could not be "
                                                               "observed (connection refused)"),
        # a confirm step that failed for another reason (bad input) is not called a failed rollout
        "confirm_rollout": alert(task_id="confirm_rollout", checks=[],
                                 reason="tfs-release confirm failed (exit 2, bad input or configuration): no endpoints"),
    }
    for tail, a in cases.items():
        assert am.subject(a) == f"[tfs-release] shapes-classifier: release FAILED at {tail}", (tail, am.subject(a))
    untrained = am.text(next(iter(cases.values()))).splitlines()
    # the absolute failures come before the gate's lines; production and what to do are said
    assert untrained.index("failed checks (97 of 152):") < untrained.index(
        "regression:  BLOCKED by the regression gate against baseline v3 (production)")
    assert "production:  nothing was published; production still serves v3" in untrained
    assert any(ln.startswith("next:        check the training job that wrote s3://training/shapes-classifier/"
                             "checkpoints/ckpt-300 ") for ln in untrained)
    # a baseline chosen without asking production (baseline=newest_confirmed) names no served version
    chosen = regression(baseline={"version": 2, "source": "newest confirmed"})
    assert ("production:  nothing was published; production serves what it served before"
            in am.text(alert(checks=_golden(150, 0) + gate, regression=chosen)).splitlines())
    first_release = am.text(alert(checks=_golden(150, 2), regression=first)).splitlines()
    assert "production:  nothing was published; production serves no version of this model yet" in first_release
    # not a validation verdict: no cause line (the reason says it); still nothing published
    export = am.text(alert(task_id="export", checks=[], reason="tfs-release export failed (exit 2): NaN weights"))
    assert not [ln for ln in export.splitlines() if ln.startswith(("cause:", "next:"))], export
    assert "production:  nothing was published; production serves what it served before" in export.splitlines()
    assert export.splitlines()[0] == "[tfs-release] shapes-classifier: release FAILED at export"
