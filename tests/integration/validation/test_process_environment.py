"""What a real step command and the server under test can read of their environment
(/proc/<pid>/environ while they run): the Airflow task's secrets never reach the step (an
allow-list), and the serving process gets no storage credentials at all.

Real parts: ``bin/tfs-release validate --launcher process`` started by the plugin's ``run_step``
(the subprocess step mode of the release DAG), the stand-in serving process it starts, SeaweedFS."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from registry.s3 import S3Uri
from tests.conftest import ROOT

from . import candidates
from .conftest import GOLDEN_CLS

sys.path.insert(0, os.path.join(ROOT, "plugins"))
from tfs_release_airflow.step_command import StepFailed, run_step  # noqa: E402

TASK_SECRETS = {  # what an Airflow worker's task process has in its environment
    "AIRFLOW__CORE__FERNET_KEY": "fernet-key-never-in-a-step",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:db-password-never-in-a-step@db/airflow",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-never-in-a-step",
    "AIRFLOW_CONN_OTHER_BUCKET": "aws://other-key:other-secret-never-in-a-step@",
    "AWS_PROFILE": "ambient-profile-never-in-a-step",
}


def _environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return dict(e.split("=", 1) for e in raw.decode(errors="replace").split("\0") if "=" in e)


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_step_and_server_environments(cls_env, s3, tmp_path, monkeypatch):
    cand = candidates.stage_candidate(s3, S3Uri(cls_env.serving, f"{cls_env.name}/"),
                                      candidates.save(candidates.classifier_module(), str(tmp_path / "sm")),
                                      GOLDEN_CLS, str(tmp_path))
    for k, v in TASK_SECRETS.items():
        monkeypatch.setenv(k, v)
    # the task process also has S3 keys of its own (s3_env put them in os.environ): the step gets the
    # connection's (s3_env argument), the server none
    s3_conn = {k: cls_env.env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_REGION")}
    seen: dict[str, dict] = {}
    started = {}

    def watch():
        deadline = time.monotonic() + 600
        while "server" not in seen and time.monotonic() < deadline and not started.get("done"):
            step = started.get("pid")
            if step:
                env = _environ(step)  # empty until the step process has exec'd (a busy machine): read again
                if env and "step" not in seen:
                    seen["step"] = env
                for child in _children(step):
                    if "standin.server" in _cmdline(child) or "tensorflow_model_server" in _cmdline(child):
                        env = _environ(child)
                        if env is not None:
                            seen["server"] = env
                            seen["server_cmd"] = _cmdline(child)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run_step(os.path.join(ROOT, "bin", "tfs-release"), "validate", cls_env.name, "--candidate", cand,
                 "--launcher", "process", config=cls_env.config, s3_env=s3_conn,
                 on_start=lambda p: started.update(pid=p.pid))
    except StepFailed as exc:  # a verdict either way: the environments are what this test is about
        assert exc.exit_code == 1, exc
    finally:
        started["done"] = True
        watcher.join(timeout=10)

    step, server = seen.get("step"), seen.get("server")
    assert step and server, f"did not catch both processes: {list(seen)}"
    # the step: the connection's S3 settings, the project's settings, no Airflow secret, no ambient AWS
    assert {k: step.get(k) for k in s3_conn} == s3_conn
    assert not [k for k in step if "AIRFLOW" in k], sorted(step)
    assert "AWS_PROFILE" not in step
    assert not [v for v in TASK_SECRETS.values() if v in "\0".join(f"{k}={x}" for k, x in step.items())]
    # the server under test: no credential of any kind
    assert not [k for k in server if k.startswith(("AWS_", "AIRFLOW", "TFS_RELEASE_", "DOCKER_"))], sorted(server)
    flat = "\0".join(f"{k}={x}" for k, x in server.items())
    for secret in (*TASK_SECRETS.values(), s3_conn["AWS_SECRET_ACCESS_KEY"], s3_conn["AWS_ACCESS_KEY_ID"]):
        assert secret not in flat
    assert set(server) <= {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
                           "STANDIN_LOG_LEVEL", "PYTHONPATH"} | {k for k in server if k.startswith(
                               ("LC_", "TF_", "OMP_", "KMP_", "MKL_"))}, sorted(server)
