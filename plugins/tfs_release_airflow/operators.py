"""The release DAG's step operators, chosen when the DAG is built so that Airflow's own kill path
(``on_kill``: a task marked failed, killed, or past its ``execution_timeout``) reaches the step:

- ``StepCommandOperator``: the step command as a local subprocess (worker venv). ``on_kill`` stops
  the step's process group (SIGTERM, SIGKILL after ``KILL_GRACE_S``); the validator removes its
  serving container on SIGTERM, and that container's reaper removes it if the validator was killed.
- ``StepImageOperator`` (step_image.py, a ``DockerOperator``): the same command in the worker image
  when ``TFS_RELEASE_STEP_IMAGE`` is set.

Both take the step's arguments as a templated list (e.g. ``{{ params.launcher }}``, an upstream
XCom), return the step's public result as XCom (the same dict the step writes), and on a failed
step push its result under ``failed_result_key`` (the validate task's ``verdict``) before raising.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from tfs_release_airflow.step_command import (KILL_GRACE_S, TIMEOUT_GRACE_S, StepFailed, push_failed_result, run_step,
                                              serving_ttl)

log = logging.getLogger(__name__)

class StepCommandOperator(BaseOperator):
    """``tfs-release <step> <model> <step_args> --config C --result F`` as a local subprocess."""

    template_fields: Sequence[str] = ("step_args",)
    ui_color = "#e8f0fe"

    def __init__(self, *, step: str, model: str, step_args: Sequence[str], config: str, conn_id: str,
                 command: str, cwd: str | None = None, failed_result_key: str | None = None,
                 production_conn_id: str | None = None, signing_conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.production_conn_id = production_conn_id  # the production endpoints' credentials, if any
        self.signing_conn_id = signing_conn_id  # the signing key, for the step that may publish (confirm)
        self.step, self.model, self.step_args = step, model, list(step_args)
        self.config, self.conn_id, self.command, self.cwd = config, conn_id, command, cwd
        self.failed_result_key = failed_result_key
        self._proc, self._killed = None, False

    def execute(self, context) -> dict:
        from tfs_release_airflow.connection import production_auth, s3_settings, signing_env
        try:
            return run_step(self.command, self.step, self.model, *self.step_args, config=self.config,
                            s3_env=s3_settings(self.conn_id).env(), cwd=self.cwd,
                            extra_env={**serving_ttl(self.execution_timeout),
                                       **production_auth(self.production_conn_id).env(),
                                       **signing_env(self.signing_conn_id)},
                            on_start=self._started, term_grace_s=TIMEOUT_GRACE_S)
        except StepFailed as exc:
            push_failed_result(context, self.failed_result_key, exc)
            raise

    def _started(self, proc) -> None:
        self._proc = proc
        if self._killed:  # on_kill came while the step was starting
            proc.stop(grace_s=KILL_GRACE_S)

    def on_kill(self) -> None:
        self._killed = True
        if self._proc is not None:
            self._proc.stop(grace_s=KILL_GRACE_S)


def step_operator(step: str, model: str, *step_args: str, config: str, conn_id: str, command: str,
                  cwd: str | None, image=None, **kwargs) -> BaseOperator:
    """The operator for one step, chosen now (DAG-parse time): the worker image when ``image`` (a
    ``StepImage``) is given, else the local step command. ``task_id`` defaults to the step's name."""
    kwargs.setdefault("task_id", step)
    if image is not None:
        from tfs_release_airflow.step_image import StepImageOperator
        return StepImageOperator(step=step, model=model, step_args=step_args, config=config, conn_id=conn_id,
                                 spec=image, **kwargs)
    return StepCommandOperator(step=step, model=model, step_args=step_args, config=config, conn_id=conn_id,
                               command=command, cwd=cwd, **kwargs)
