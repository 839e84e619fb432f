"""What a step command hands back, whichever way it ran (local subprocess or worker-image container):
its ``--result`` JSON, its exit code, its last output lines -> the XCom value, or ``StepFailed``
with the step's one-line reason. The one place that reads a step's result and reason.

Stdlib only: importable at DAG-parse time and testable without Airflow.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

# Keys never handed to XCom: a presigned URL carries the access key id and a signature.
SECRET_KEYS = frozenset({"report_url"})


class StepFailed(Exception):
    """The step exited non-zero. ``exit_code`` 1: a check said no; 2: bad input; other: crashed or
    killed. ``result``: its public result object when it wrote one (e.g. a failed verdict)."""

    def __init__(self, step: str, exit_code: int, reason: str, result: dict | None):
        self.step, self.exit_code, self.reason, self.result = step, exit_code, reason, result
        kind = {1: "a check failed", 2: "bad input or configuration", 143: "terminated",
                -15: "terminated", -9: "killed", 137: "killed"}.get(exit_code, "the step crashed")
        super().__init__(f"tfs-release {step} failed (exit {exit_code}, {kind}): {reason}")


class StepSaidNo(StepFailed, SystemExit):
    """An expected outcome (exit 1: a check said no; 2: bad input), not a crash. Also a
    ``SystemExit`` whose ``code`` is the message: Airflow's task runner logs every other exception
    with its traceback, and this one as the log's last line, ``Task exited exit_code='<reason>'``;
    retries and failure callbacks are as for any failure. Still a ``StepFailed`` (and an
    ``Exception``) for every ``except`` that catches one."""

    def __init__(self, step: str, exit_code: int, reason: str, result: dict | None):
        super().__init__(step, exit_code, reason, result)
        self.code = str(self)


EXPECTED_EXITS = (1, 2)


def public(result: dict) -> dict:
    """The result without secret keys (safe for XCom and logs)."""
    return {k: v for k, v in result.items() if k not in SECRET_KEYS}


def parse_result(data: bytes | str | None) -> dict | None:
    """The ``--result`` file's JSON object; None when missing, empty or not an object."""
    if not data:
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def read_result(path: str) -> dict | None:
    try:
        with open(path, "rb") as fh:
            return parse_result(fh.read())
    except OSError:
        return None


def last_line(lines: Iterable) -> str:
    """The last non-empty output line (bytes or str), or ``(no output)``."""
    text = [ln.decode(errors="replace") if isinstance(ln, bytes) else str(ln) for ln in (lines or ())]
    return next((ln.strip() for ln in reversed(text) if ln.strip()), "(no output)")


def reason(result: dict | None, lines: Iterable = ()) -> str:
    """The step's one-line reason: the result's ``reason``/``error``, else its last output line."""
    if result:
        for key in ("reason", "error"):
            if result.get(key):
                return str(result[key]).splitlines()[0]
    return last_line(lines)


def outcome(step: str, code: int, result: dict | None, lines: Iterable = ()) -> dict:
    """Exit 0 with a result: its public part (the XCom value). Anything else: ``StepFailed``."""
    if code == 0 and result is not None:
        return public(result)
    if code == 0:
        raise StepFailed(step, code, f"it exited 0 but wrote no result file; last output: {last_line(lines)}", None)
    failed = StepSaidNo if code in EXPECTED_EXITS else StepFailed
    raise failed(step, code, reason(result, lines), public(result) if result else None)
