"""Run one ``tfs-release`` step command as a subprocess and read its ``--result`` JSON back.

    bin/tfs-release <step> MODEL ARGS --config FILE --result RESULT.json

The step runs in the worker env (TensorFlow, Model Garden); S3 settings reach it only through the
environment. Its output lines go to the task log as they come (the CLI never logs a credential).
Exit 0: the result object (minus anything secret) is returned for XCom. Exit 1 (a check said no)
or 2 (bad input): ``StepFailed`` with the step's one-line reason. A task killed while the step
runs (or timed out: the task's ``execution_timeout``) terminates the step first (SIGTERM: the
validator removes its serving container).

Stdlib only: importable from DAG files at parse time and testable without Airflow.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections import deque

log = logging.getLogger(__name__)

# Keys never handed to XCom: a presigned URL carries the access key id and a signature.
SECRET_KEYS = frozenset({"report_url"})
# Environment of the Airflow task that the step must not inherit (other connections' secrets).
_DROP_ENV_PREFIXES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__SECRETS__")
_TERM_GRACE_S = 60.0


class StepFailed(Exception):
    """The step exited non-zero. ``exit_code`` 1: a check said no; 2: bad input; other: crashed."""

    def __init__(self, step: str, exit_code: int, reason: str, result: dict | None):
        self.step, self.exit_code, self.reason, self.result = step, exit_code, reason, result
        kind = {1: "a check failed", 2: "bad input or configuration"}.get(exit_code, "the step crashed")
        super().__init__(f"tfs-release {step} failed (exit {exit_code}, {kind}): {reason}")


def public(result: dict) -> dict:
    """The result without secret keys (safe for XCom and logs)."""
    return {k: v for k, v in result.items() if k not in SECRET_KEYS}


def step_env(s3_env: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The step's environment: the task's own, minus other secrets, plus the S3 settings."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if not k.startswith(_DROP_ENV_PREFIXES)}
    env.update(s3_env)
    return env


def run_step(command: str, step: str, model: str, *args: str, config: str, s3_env: dict[str, str],
             cwd: str | None = None) -> dict:
    """Run ``command step model *args --config config --result FILE``; return its public result."""
    with tempfile.TemporaryDirectory(prefix=f"tfsr-{step}-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        argv = [command, step, model, *args, "--config", config, "--result", result_path]
        log.info("step command: %s", " ".join(argv))
        t0 = time.monotonic()
        tail: deque[str] = deque(maxlen=20)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, env=step_env(s3_env), cwd=cwd, bufsize=1)
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                log.info("[%s] %s", step, line)
            code = proc.wait()
        finally:  # task killed, timeout, or any error while reading: never leave the step running
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=_TERM_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stdout.close()
        result = _read_result(result_path)
        log.info("tfs-release %s %s: exit %d in %.1fs", step, model, code, time.monotonic() - t0)
    if code == 0 and result is not None:
        return public(result)
    if code == 0:
        raise StepFailed(step, code, f"it exited 0 but wrote no result file; last output: {_last(tail)}", None)
    raise StepFailed(step, code, _reason(result, tail), public(result) if result else None)


def _read_result(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _last(tail) -> str:
    return next((ln for ln in reversed(tail) if ln.strip()), "(no output)")


def _reason(result: dict | None, tail) -> str:
    """The step's one-line reason: the result's error/reason, else its last output line."""
    if result:
        for key in ("reason", "error"):
            if result.get(key):
                return str(result[key]).splitlines()[0]
    return _last(tail)
