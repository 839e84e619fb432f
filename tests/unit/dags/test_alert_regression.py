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
        "baseline": {"version": 3, "source": "registry", "checkpoint": "s3://training/m/checkpoints/ckpt-1500"},
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
    assert am.subject(a) == ("[tfs-release] shapes-classifier: release FAILED at validate "
                             "(blocked by the regression gate vs v3)")
    lines = am.text(a).splitlines()
    i = lines.index("regression:  BLOCKED by the regression gate against baseline v3 (registry)")
    assert lines[i - 1].startswith("reason:") and lines[0] == am.subject(a)
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
    assert "regression:  a regression against baseline v3 (registry) was ACCEPTED\n" in text
    assert "accepted:    new label map agreed with the product team (REL-42)\n" in text
    assert "  - accuracy: 1 -> 0.927 (-0.073) REGRESSED\n" in text
    assert "BLOCKED" not in text and "blocked because" not in text and "worst images" not in text
    # a later failure of the same run (publish) still says the regression was accepted
    failed = am.text(alert(task_id="publish", reason="StorageError: claim refused", regression=reg))
    assert "accepted:    new label map agreed with the product team (REL-42)" in failed


def test_passed_no_baseline_and_old_verdicts():
    passed = am.text(alert(event="success", version=4, reason=None, regression=regression(
        "passed", summary="passed", failures=[], worst=[])))
    assert "regression:  passed against baseline v3 (registry)\n" in passed and "metric deltas" not in passed
    first = alert(event="success", version=1, reason=None, regression={
        "status": "no baseline", "summary": "no baseline", "baseline": None, "limits": {}})
    assert "regression:  no baseline (first release of this model)\n" in am.text(first)
    assert am.subject(first) == "[tfs-release] shapes-classifier: version 1 published"
    old = alert()
    assert "regression:  " not in am.text(old)
    assert am.subject(old) == "[tfs-release] shapes-classifier: release FAILED at validate"
