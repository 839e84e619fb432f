"""The step command in the worker image through the docker provider's DockerOperator
(plugins/tfs_release_airflow/step_image.py), against the real Docker engine and the real SeaweedFS.

The image here is a thin test image: the stand-in's Debian base plus boto3/PyYAML (pinned), with
``python -m cli`` as its entrypoint and the project mounted read-only (TFS_RELEASE_STEP_MOUNTS), on
the host network so the container reaches SeaweedFS on 127.0.0.1. The code runs in the Airflow venv
(a subprocess), as it does in a task.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.docker

PROBE = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/plugins"]
    from tfs_release_airflow.step_command import StepFailed
    from tfs_release_airflow.step_image import StepImage, run_step_in_image
    args = json.loads(sys.argv[2])
    try:
        out = {"result": run_step_in_image(StepImage.from_env(), {}, *args["argv"], config=args["config"],
                                           s3_env=args["s3_env"])}
    except StepFailed as exc:
        out = {"failed": {"exit_code": exc.exit_code, "reason": exc.reason, "result": exc.result}}
    print("PROBE-RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def step_image(docker_engine, tmp_path_factory):
    from standin.image import base_tag, ensure_image
    ensure_image()  # builds the Debian base too
    ctx = tmp_path_factory.mktemp("step-image")
    pins = [ln for ln in open(os.path.join(ROOT, "requirements-worker.txt")).read().split()
            if ln.lower().startswith(("boto3==", "botocore==", "s3transfer==", "jmespath==", "pyyaml==",
                                      "urllib3==", "python-dateutil==", "six=="))]
    (ctx / "Dockerfile").write_text(
        f"FROM {base_tag()}\nRUN /opt/venv/bin/pip install -q {' '.join(pins)}\n"
        "WORKDIR /opt/tfs-release\nENV PYTHONPATH=/opt/tfs-release\n"
        'ENTRYPOINT ["/opt/venv/bin/python", "-m", "cli"]\n')
    tag = "tfs-release/test-step-image:latest"
    docker_engine.images.build(path=str(ctx), tag=tag, rm=True)
    return tag


def _probe(airflow_python, image, argv, config, s3_env, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    env.update(TFS_RELEASE_STEP_IMAGE=image, TFS_RELEASE_STEP_NETWORK="host",
               TFS_RELEASE_STEP_MOUNTS=f"{ROOT}:/opt/tfs-release:ro,"
                                       f"{os.path.dirname(config)}:{os.path.dirname(config)}:ro",
               AIRFLOW_HOME=os.path.join(os.path.dirname(config), "airflow-home"), **(extra_env or {}))
    p = subprocess.run([airflow_python, "-c", PROBE, ROOT, json.dumps({"argv": argv, "config": config,
                                                                       "s3_env": s3_env})],
                       capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("PROBE-RESULT ")]
    assert p.returncode == 0 and lines, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return json.loads(lines[-1].split(" ", 1)[1]), p.stdout + p.stderr


@pytest.fixture(scope="module")
def airflow_python():
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


def _step_containers(docker_engine):
    return docker_engine.containers.list(all=True, filters={"label": "tfs-release.step"})


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
    assert _step_containers(docker_engine) == []  # removed after the run


def test_a_failing_step_in_the_image_raises_with_its_reason_and_exit_code(step_image, airflow_python,
                                                                           model_env, docker_engine):
    out, _ = _probe(airflow_python, step_image, ["checkpoints", model_env.name], model_env.config,
                    model_env.env)
    failed = out["failed"]
    assert failed["exit_code"] == 2
    assert "no complete checkpoint" in failed["reason"] or "no checkpoint" in failed["reason"], failed
    assert _step_containers(docker_engine) == []
