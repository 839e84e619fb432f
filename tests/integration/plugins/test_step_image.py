"""The step command in the worker image through ``StepImageOperator`` (a DockerOperator,
plugins/tfs_release_airflow/step_image.py), against the real Docker engine and the real SeaweedFS:
the result comes back as XCom, a failure raises with its reason, and the kill path leaves nothing:
``on_kill`` (what Airflow's task runner calls on SIGTERM) and a SIGKILLed task process (its reaper)
both remove the step container and the serving containers it owns within seconds.

The image here is a thin test image: the stand-in's Debian base plus boto3/PyYAML (pinned), with
``python -m cli`` as its entrypoint and the project mounted read-only (TFS_RELEASE_STEP_MOUNTS), on
the host network so the container reaches SeaweedFS on 127.0.0.1. The operator runs in the Airflow
venv (a subprocess, with the S3 settings in an AIRFLOW_CONN_ connection), as it does in a task.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
import uuid

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.docker

PROBE = textwrap.dedent("""
    import json, signal, sys, types
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/plugins"]
    from tfs_release_airflow.step_image import StepImage, StepImageOperator
    from tfs_release_airflow.step_result import StepFailed
    args = json.loads(sys.argv[2])
    step, model, *rest = args["argv"]
    op = StepImageOperator(task_id=step, step=step, model=model, step_args=rest, config=args["config"],
                           conn_id="aws_default", spec=StepImage.from_env(), failed_result_key="verdict")
    pushed = {}
    ti = types.SimpleNamespace(dag_id="release__" + model, run_id="manual__probe", task_id=step, try_number=1,
                               xcom_push=lambda key, value: pushed.__setitem__(key, value))
    signal.signal(signal.SIGTERM, lambda *_: op.on_kill())  # what Airflow's task runner does on SIGTERM
    try:
        out = {"result": op.execute({"ti": ti})}
    except StepFailed as exc:
        out = {"failed": {"exit_code": exc.exit_code, "reason": exc.reason, "result": exc.result}, "pushed": pushed}
    except BaseException as exc:
        out = {"error": repr(exc)}
    print("PROBE-RESULT " + json.dumps(out), flush=True)
""")


def _base_image(docker_engine, tmp_path_factory, name, entrypoint):
    from standin.image import base_tag, ensure_image
    ensure_image()  # builds the Debian base too
    ctx = tmp_path_factory.mktemp(name)
    pins = [ln for ln in open(os.path.join(ROOT, "requirements-worker.txt")).read().split()
            if ln.lower().startswith(("boto3==", "botocore==", "s3transfer==", "jmespath==", "pyyaml==",
                                      "urllib3==", "python-dateutil==", "six==",
                                      # the config schema (registry/config_schema.py)
                                      "pydantic==", "pydantic_core==", "annotated-types==", "typing-inspection==",
                                      "typing_extensions=="))]
    (ctx / "Dockerfile").write_text(
        f"FROM {base_tag()}\nRUN /opt/venv/bin/pip install -q {' '.join(pins)}\n"
        "WORKDIR /opt/tfs-release\nENV PYTHONPATH=/opt/tfs-release\n"
        f"ENTRYPOINT {json.dumps(entrypoint)}\n")
    tag = f"tfs-release/test-{name}:latest"
    docker_engine.images.build(path=str(ctx), tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def step_image(docker_engine, tmp_path_factory):
    return _base_image(docker_engine, tmp_path_factory, "step-image", ["/opt/venv/bin/python", "-m", "cli"])


@pytest.fixture(scope="module")
def slow_step_image(docker_engine, tmp_path_factory):
    """A step that runs until it is told to stop (and says so on SIGTERM, as the validator does)."""
    return _base_image(docker_engine, tmp_path_factory, "slow-step-image",
                       ["/bin/sh", "-c", "echo step running; trap 'echo terminated; exit 143' TERM; "
                                         "sleep 600 & wait", "--"])


def _env(image, config, s3_env, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    conn = {"conn_type": "aws", "login": s3_env["AWS_ACCESS_KEY_ID"], "password": s3_env["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"], "region_name": s3_env.get("AWS_REGION", "us-east-1")}}
    env.update(TFS_RELEASE_STEP_IMAGE=image, TFS_RELEASE_STEP_NETWORK="host",
               TFS_RELEASE_STEP_MOUNTS=f"{ROOT}:/opt/tfs-release:ro,"
                                       f"{os.path.dirname(config)}:{os.path.dirname(config)}:ro",
               AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn),
               AIRFLOW_HOME=os.path.join(os.path.dirname(config), "airflow-home"), **(extra_env or {}))
    return env


def _argv(airflow_python, argv, config):
    return [airflow_python, "-c", PROBE, ROOT, json.dumps({"argv": argv, "config": config})]


def _probe(airflow_python, image, argv, config, s3_env):
    p = subprocess.run(_argv(airflow_python, argv, config), capture_output=True, text=True,
                       env=_env(image, config, s3_env), timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("PROBE-RESULT ")]
    assert p.returncode == 0 and lines, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return json.loads(lines[-1].split(" ", 1)[1]), p.stdout + p.stderr


@pytest.fixture(scope="module")
def airflow_python():
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


def _step_containers(docker_engine, model=None):
    label = [f"tfs-release.model={model}"] if model else []
    return docker_engine.containers.list(all=True, filters={"label": ["tfs-release.step", *label]},
                                        ignore_removed=True)  # removed between list and inspect: gone


def test_a_step_runs_in_the_worker_image_and_its_result_comes_back(step_image, airflow_python, model_env,
                                                                    s3, docker_engine):
    for name, body in {"ckpt-3.index": b"i", "ckpt-3.data-00000-of-00001": b"d" * 100}.items():
        s3.put_object(Bucket=model_env.training, Key=model_env.checkpoints_prefix + name, Body=body)
    out, logs = _probe(airflow_python, step_image, ["checkpoints", model_env.name], model_env.config,
                       model_env.env)
    result = out["result"]
    assert result["newest"]["uri"] == f"s3://{model_env.training}/{model_env.checkpoints_prefix}ckpt-3"
    assert result["newest"]["step"] == 3
    assert model_env.env["AWS_SECRET_ACCESS_KEY"] not in logs  # private_environment: never logged
    assert _step_containers(docker_engine, model_env.name) == []  # removed after the run


def test_a_failing_step_in_the_image_raises_with_its_reason_and_exit_code(step_image, airflow_python,
                                                                           model_env, docker_engine):
    out, _ = _probe(airflow_python, step_image, ["checkpoints", model_env.name], model_env.config,
                    model_env.env)
    failed = out["failed"]
    assert failed["exit_code"] == 2
    assert "no complete checkpoint" in failed["reason"] or "no checkpoint" in failed["reason"], failed
    assert _step_containers(docker_engine, model_env.name) == []


def _start_slow_step(airflow_python, image, model_env, docker_engine):
    model = f"kill-{uuid.uuid4().hex[:8]}"
    p = subprocess.Popen(_argv(airflow_python, ["validate", model, "--candidate", "s3://x/y/"], model_env.config),
                         env=_env(image, model_env.config, model_env.env), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [c for c in _step_containers(docker_engine, model) if c.status == "running"]
        if running:
            break
        assert p.poll() is None, p.stdout.read()[-3000:]
        time.sleep(0.3)
    [step] = running
    labels = step.labels
    assert labels["tfs-release.role"] == "step" and labels["tfs-release.pid"] == str(p.pid)
    # a serving container the validator inside would have started (owned by the step container)
    from serving import sweep
    serving = docker_engine.containers.run(
        image, entrypoint=["sleep", "600"], detach=True, name=f"tfsr-validate-{model}",
        labels={sweep.ROLE: "validation", sweep.HOST_ID: "0" * 16, sweep.PID: "1", "tfs-release.model": model,
                sweep.OWNER_CONTAINER: step.id[:12], sweep.EXPIRES: str(int(time.time()) + 3600)})
    return p, model, step, serving


def _gone_within(docker_engine, model, seconds) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        left = docker_engine.containers.list(all=True, filters={"label": f"tfs-release.model={model}"},
                                            ignore_removed=True)  # removed between list and inspect: gone
        if not left:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"still there {seconds}s later: {[c.name for c in left]}")


def test_on_kill_removes_the_step_and_its_serving_containers(slow_step_image, airflow_python, model_env,
                                                             docker_engine):
    """SIGTERM to the task process (Airflow: a task marked failed, or killed) -> on_kill: the step gets
    SIGTERM, then the containers go, well inside the 5 s before Airflow's SIGKILL."""
    p, model, step, serving = _start_slow_step(airflow_python, slow_step_image, model_env, docker_engine)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    took = _gone_within(docker_engine, model, 30)
    out, _ = p.communicate(timeout=60)
    print(f"\non_kill: step and serving containers gone {took:.1f}s after SIGTERM; probe exit in "
          f"{time.monotonic() - t0:.1f}s")
    assert took < 5
    assert "terminated" in out  # the step itself was told to stop (its cleanup ran)


def test_a_sigkilled_task_process_leaves_no_container(slow_step_image, airflow_python, model_env, docker_engine):
    """SIGKILL to the task process (a lost worker; no on_kill): the reaper beside the step container
    stops it (SIGTERM first) and removes it and its serving container."""
    p, model, step, serving = _start_slow_step(airflow_python, slow_step_image, model_env, docker_engine)
    p.send_signal(signal.SIGKILL)
    p.wait()
    took = _gone_within(docker_engine, model, 30)
    print(f"\nSIGKILLed task process: containers gone {took:.1f}s later")
    assert took < 15
