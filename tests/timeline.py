"""Where the suite's wall time goes: each worker appends when each test started and ended to one
file, and the session's end prints, as offsets from the session's start: the first test, when the
unit and integration tests ended and their 15 slowest files (with the worker that ran each), each
end-to-end module's start, end and worker, and each worker's time in tests against the wall time.
(The background training's log says when each model was ready.) `--durations` says which tests
are slow; this says whether a worker sat idle. The file is kept; its path is printed.
"""
from __future__ import annotations

import json
import os
import time

import pytest

ENV = "TFSR_TIMELINE"


def _path(config) -> str | None:
    return os.environ.get(ENV) if hasattr(config, "workerinput") else getattr(config, "_tfsr_timeline", None)


def pytest_configure(config):
    if not hasattr(config, "workerinput") and not os.environ.get(ENV):
        import tempfile
        fd, path = tempfile.mkstemp(prefix="tfsr-timeline-", suffix=".jsonl")
        os.close(fd)
        os.environ[ENV] = path  # the xdist workers inherit it
        config._tfsr_timeline = path
        config._tfsr_t0 = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0 = time.time()
    yield
    path = _path(item.config)
    if path:
        worker = getattr(item.config, "workerinput", {}).get("workerid", "main")
        with open(path, "a") as fh:  # one short line per write: appends from two workers do not mix
            fh.write(json.dumps({"id": item.nodeid, "w": worker, "t0": t0, "t1": time.time()}) + "\n")


def summarize(rows: list[dict], t0: float) -> list[str]:
    """The stages as lines of text (offsets in seconds from ``t0``)."""
    if not rows:
        return []
    rel = lambda t: f"{t - t0:6.0f}s"  # noqa: E731
    first = min(r["t0"] for r in rows)
    serial = [r for r in rows if not r["id"].startswith("tests/e2e/")]  # unit and integration
    lines = [f"timeline: first test at {rel(first)}"]
    if serial:
        end = max(r["t1"] for r in serial)
        busy = sum(r["t1"] - r["t0"] for r in serial)
        lines.append(f"timeline: unit and integration tests ended at {rel(end)} "
                     f"({len(serial)} tests, {busy:.0f}s in tests)")
        files: dict[str, list] = {}
        for r in serial:
            f = files.setdefault(r["id"].split("::")[0], [0.0, r["w"]])
            f[0] += r["t1"] - r["t0"]
        for name, (took, w) in sorted(files.items(), key=lambda kv: -kv[1][0])[:15]:
            lines.append(f"timeline: {w:>4} {took:6.0f}s in {name}")
    modules: dict[str, dict] = {}
    for r in rows:
        if r["id"].startswith("tests/e2e/"):
            m = modules.setdefault(r["id"].split("::")[0], {"t0": r["t0"], "t1": r["t1"], "w": r["w"]})
            m["t0"], m["t1"] = min(m["t0"], r["t0"]), max(m["t1"], r["t1"])
    for name, m in sorted(modules.items(), key=lambda kv: kv[1]["t0"]):
        lines.append(f"timeline: {m['w']:>4} {rel(m['t0'])} -> {rel(m['t1'])} "
                     f"({m['t1'] - m['t0']:4.0f}s) {name.removeprefix('tests/e2e/')}")
    for w in sorted({r["w"] for r in rows}):
        mine = [r for r in rows if r["w"] == w]
        lines.append(f"timeline: {w:>4} {len(mine)} tests, {sum(r['t1'] - r['t0'] for r in mine):.0f}s in tests, "
                     f"last ended at {rel(max(r['t1'] for r in mine))}")
    lines.append(f"timeline: last test ended at {rel(max(r['t1'] for r in rows))}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    path = getattr(config, "_tfsr_timeline", None)
    if not path or not os.path.exists(path):
        return
    with open(path) as fh:
        rows = [json.loads(ln) for ln in fh if ln.strip()]
    for line in summarize(rows, config._tfsr_t0):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"timeline: every test's start and end in {path}")
