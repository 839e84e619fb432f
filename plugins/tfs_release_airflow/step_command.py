"""Run one ``tfs-release`` step command as a subprocess and read its ``--result`` JSON back.

    bin/tfs-release <step> MODEL ARGS --config FILE --result RESULT.json

The step runs in the worker env (TensorFlow, Model Garden); S3 settings reach it only through the
environment. Its output lines go to the task log as they come (the CLI never logs a credential).
Exit 0: the result object (minus anything secret) is returned for XCom. Exit 1 (a check said no)
or 2 (bad input): ``StepFailed`` with the step's one-line reason (step_result.py reads both).

The step runs in its own process group, so the task can stop the whole step (and nothing else)
with one signal: ``StepProcess.stop`` sends SIGTERM (the validator removes its serving container),
then SIGKILL after a grace. The release DAG's ``StepCommandOperator`` (operators.py) calls it from
``on_kill`` (task marked failed, killed) and when ``execution_timeout`` interrupts it. On Linux the
step also gets SIGTERM when the task process itself dies (PR_SET_PDEATHSIG): a task process killed
with SIGKILL leaves no step behind either.

Stdlib only: importable from DAG files at parse time and testable without Airflow.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Callable

from tfs_release_airflow.step_result import SECRET_KEYS, StepFailed, outcome, public, read_result  # noqa: F401
from tfs_release_airflow.step_env import step_env  # noqa: F401 - an allow-list (no Airflow secrets)

log = logging.getLogger(__name__)

_TERM_GRACE_S = 60.0
# what the validate step's serving containers may live: the release DAG sets it to the task's timeout
SERVING_TTL_ENV = "TFS_RELEASE_SERVING_TTL_S"


class StepProcess:
    """One step command in its own process group, dying with its parent (Linux)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None):
        self.argv, self.env, self.cwd = argv, env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> "StepProcess":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd, bufsize=1,
                                     process_group=0, preexec_fn=_die_with_parent())
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def lines(self):
        for line in self.proc.stdout:
            yield line.rstrip("\n")

    def wait(self) -> int:
        return self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = _TERM_GRACE_S) -> None:
        """SIGTERM to the step's process group, SIGKILL after ``grace_s``; a no-op once it exited."""
        if self.proc is None or self.proc.poll() is not None:
            return
        step = self.argv[1] if len(self.argv) > 1 else "?"
        log.warning("stopping the %s step (pid %d): SIGTERM, SIGKILL after %.1fs", step, self.proc.pid, grace_s)
        _killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("the %s step (pid %d) still runs %.1fs after SIGTERM: SIGKILL", step, self.proc.pid, grace_s)
            _killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: do not outlive it
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def run_step(command: str, step: str, model: str, *args: str, config: str, s3_env: dict[str, str],
             cwd: str | None = None, extra_env: dict[str, str] | None = None,
             on_start: Callable[[StepProcess], None] | None = None, term_grace_s: float = _TERM_GRACE_S) -> dict:
    """Run ``command step model *args --config config --result FILE``; return its public result.
    ``on_start`` gets the running ``StepProcess`` (the operator keeps it for ``on_kill``)."""
    with tempfile.TemporaryDirectory(prefix=f"tfsr-{step}-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        argv = [command, step, model, *args, "--config", config, "--result", result_path]
        log.info("step command: %s", " ".join(argv))
        t0 = time.monotonic()
        tail: deque[str] = deque(maxlen=20)
        proc = StepProcess(argv, {**step_env(s3_env), **(extra_env or {})}, cwd).start()
        try:
            if on_start:
                on_start(proc)
            for line in proc.lines():
                tail.append(line)
                log.info("[%s] %s", step, line)
            code = proc.wait()
        finally:  # task killed, timeout, or any error while reading: never leave the step running
            proc.stop(grace_s=term_grace_s)
            proc.proc.stdout.close()
        result = read_result(result_path)
        log.info("tfs-release %s %s: exit %d in %.1fs", step, model, code, time.monotonic() - t0)
    return outcome(step, code, result, tail)


# The kill policy of both step operators (operators.py's subprocess, step_image.py's container).
# on_kill runs inside the task's SIGTERM handler; Airflow's supervisor sends SIGKILL 5 s later
KILL_GRACE_S = 3.0
# execution_timeout interrupts execute() itself: no supervisor deadline, so the step gets longer
TIMEOUT_GRACE_S = 20.0
# a serving container may outlive its validate task's timeout by this much (then it expires)
TTL_MARGIN_S = 60


def serving_ttl(execution_timeout: _dt.timedelta | None) -> dict[str, str]:
    """The validator's serving-container expiry: the task's timeout plus a margin."""
    if not execution_timeout:
        return {}
    return {SERVING_TTL_ENV: str(int(execution_timeout.total_seconds() + TTL_MARGIN_S))}


def push_failed_result(context, key: str | None, exc: StepFailed) -> None:
    if key and exc.result is not None:
        context["ti"].xcom_push(key=key, value=exc.result)
