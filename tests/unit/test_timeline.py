"""The suite's timeline summary (tests/timeline.py) from hand-written rows."""
from __future__ import annotations

from tests.timeline import summarize


def test_stages_slowest_files_modules_and_workers():
    rows = [
        {"id": "tests/unit/test_a.py::t1", "w": "gw1", "t0": 101, "t1": 103},
        {"id": "tests/integration/d/test_d.py::t1", "w": "gw0", "t0": 101, "t1": 150},
        {"id": "tests/integration/d/test_d.py::t2", "w": "gw0", "t0": 150, "t1": 170},
        {"id": "tests/e2e/test_long.py::t1", "w": "gw1", "t0": 110, "t1": 300},
        {"id": "tests/e2e/test_long.py::t2", "w": "gw1", "t0": 300, "t1": 320},
        {"id": "tests/e2e/test_short.py::t1", "w": "gw0", "t0": 171, "t1": 200},
    ]
    lines = summarize(rows, 100)
    assert lines[0] == "timeline: first test at      1s"
    assert lines[1] == "timeline: unit and integration tests ended at     70s (3 tests, 71s in tests)"
    assert lines[2] == "timeline:  gw0     69s in tests/integration/d/test_d.py"  # slowest file first
    assert lines[3] == "timeline:  gw1      2s in tests/unit/test_a.py"
    assert lines[4] == "timeline:  gw1     10s ->    220s ( 210s) test_long.py"  # modules by start
    assert lines[5] == "timeline:  gw0     71s ->    100s (  29s) test_short.py"
    assert lines[6] == "timeline:  gw0 3 tests, 98s in tests, last ended at    100s"
    assert lines[7] == "timeline:  gw1 3 tests, 212s in tests, last ended at    220s"
    assert lines[8] == "timeline: last test ended at    220s"
    assert summarize([], 0) == []
