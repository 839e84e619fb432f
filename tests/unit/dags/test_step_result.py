"""plugins/tfs_release_airflow/step_result.py: the one place that turns a step's exit code, result
file and output into the XCom value or StepFailed (both step modes use it). Hand-written cases."""
from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "plugins"))
from tfs_release_airflow.step_result import StepFailed, last_line, outcome, parse_result, reason  # noqa: E402


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
