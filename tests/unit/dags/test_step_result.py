"""plugins/tfs_release_airflow/step_result.py: the one place that turns a step's exit code, result
file and output into the XCom value or StepFailed (both step modes use it). Hand-written cases."""
from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "plugins"))
from tfs_release_airflow.step_result import StepFailed, StepSaidNo, last_line, outcome, parse_result, reason  # noqa: E402


@pytest.mark.parametrize("data, parsed", [
    (b'{"candidate": "s3://b/c/"}', {"candidate": "s3://b/c/"}),
    ('{"a": 1}', {"a": 1}),
    (b"[1, 2]", None),      # not an object
    (b"{broken", None),
    (b"", None),
    (None, None),
])
def test_parse_result(data, parsed):
    assert parse_result(data) == parsed


def test_last_line_skips_blank_lines_and_decodes_bytes():
    assert last_line([b"INFO start\n", b"RuntimeError: boom\n", b"  \n"]) == "RuntimeError: boom"
    assert last_line(["a", "b"]) == "b"
    assert last_line([]) == last_line(None) == "(no output)"


def test_reason_prefers_the_results_first_line():
    assert reason({"reason": "2 check(s) failed\nmore"}, ["x"]) == "2 check(s) failed"
    assert reason({"error": "no checkpoint"}, ["x"]) == "no checkpoint"
    assert reason({"passed": False}, ["last words"]) == "last words"


def test_outcome():
    assert outcome("export", 0, {"candidate": "c", "report_url": "https://x?X-Amz-Signature=s"}) == {"candidate": "c"}
    with pytest.raises(StepFailed, match="wrote no result file; last output: done"):
        outcome("export", 0, None, ["done"])
    with pytest.raises(StepFailed) as err:
        outcome("validate", 1, {"passed": False, "reason": "top-1 0.3 < 0.9", "report_url": "u"}, [])
    assert err.value.exit_code == 1 and err.value.result == {"passed": False, "reason": "top-1 0.3 < 0.9"}
    assert "exit 1, a check failed" in str(err.value)
    with pytest.raises(StepFailed, match=r"exit 143, terminated\): \(no output\)"):
        outcome("validate", 143, None)


def test_an_expected_outcome_is_a_one_line_exit_and_a_crash_keeps_its_traceback():
    """Exit 1 (a check said no) and 2 (bad input) are StepSaidNo: a SystemExit whose code is the
    message (Airflow's task runner logs it as one line, "Task exited exit_code=..."), still caught
    as StepFailed and as Exception; a crash or a kill stays a plain StepFailed (logged with its
    traceback)."""
    for code in (1, 2):
        with pytest.raises(StepSaidNo) as err:
            outcome("validate", code, {"passed": False, "reason": "2 check(s) failed"}, [])
        e = err.value
        assert isinstance(e, SystemExit) and isinstance(e, StepFailed) and isinstance(e, Exception)
        assert e.code == str(e) and str(e).startswith(f"tfs-release validate failed (exit {code}, ")
        assert e.code.endswith("2 check(s) failed")
    for code in (3, 137, -9, 143):
        with pytest.raises(StepFailed) as err:
            outcome("validate", code, None, ["Traceback (most recent call last):", "MemoryError"])
        assert not isinstance(err.value, SystemExit), code
    try:  # an `except Exception` around a step (the CLI, a test) still catches it: no exit
        outcome("export", 2, {"error": "no checkpoint under s3://t/m/"})
    except Exception as exc:  # noqa: BLE001
        assert exc.exit_code == 2
