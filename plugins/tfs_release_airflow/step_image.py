"""Run one ``tfs-release`` step command in the worker image instead of a local subprocess, through
the docker provider's ``DockerOperator`` (when the Airflow machines have no TensorFlow, e.g. the
compose stack, or a deployment that moves the heavy steps off the scheduler's machine).

Configured by the Airflow processes' environment:

- ``TFS_RELEASE_STEP_IMAGE``: the worker image (entrypoint ``tfs-release``); set = steps run in it.
- ``TFS_RELEASE_STEP_NETWORK``: docker network of the step container (to reach S3 by service name);
  the validator puts its temporary serving container on the same network
  (``TFS_RELEASE_SERVING_NETWORK``, unless set explicitly).
- ``TFS_RELEASE_STEP_CONFIG``: models.yaml path inside the image (default: the DAG's path).
- ``TFS_RELEASE_STEP_MOUNTS``: extra ``SRC:DST[:ro]`` mounts, comma-separated (golden sets, config).
- ``TFS_RELEASE_STEP_DOCKER_SOCKET``: host path of the engine socket mounted into the step so the
  validator can start its serving container (default ``/var/run/docker.sock``).
- ``DOCKER_HOST``: the engine the operator talks to (default the local socket).

S3 credentials go in as the operator's ``private_environment``: not on the command line, not in
rendered templates, not in logs or XCom. The step writes its ``--result`` JSON inside the
container; it is copied out after the container exits (success or not), then the container is
removed. A task that is killed stops the container with a grace period first (SIGTERM: the
validator removes its own serving container), then removes it.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import uuid
from dataclasses import dataclass

from tfs_release_airflow.step_command import StepFailed, public

log = logging.getLogger(__name__)

RESULT_PATH = "/tmp/tfs-release-result.json"
_STOP_GRACE_S = 60


@dataclass(frozen=True)
class StepImage:
    image: str
    network: str | None = None
    config: str | None = None
    mounts: tuple[str, ...] = ()
    socket: str = "/var/run/docker.sock"
    docker_url: str = "unix://var/run/docker.sock"
    serving_network: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StepImage | None:
        env = os.environ if env is None else env
        image = env.get("TFS_RELEASE_STEP_IMAGE", "").strip()
        if not image:
            return None
        network = env.get("TFS_RELEASE_STEP_NETWORK") or None
        mounts = tuple(m.strip() for m in env.get("TFS_RELEASE_STEP_MOUNTS", "").split(",") if m.strip())
        for m in mounts:
            parts = m.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or \
                    (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ValueError(f"TFS_RELEASE_STEP_MOUNTS: {m!r} is not SRC:/DST[:ro|rw]; "
                                 f"separate several mounts with commas")
        return cls(image=image, network=network, config=env.get("TFS_RELEASE_STEP_CONFIG") or None,
                   mounts=mounts, socket=env.get("TFS_RELEASE_STEP_DOCKER_SOCKET") or "/var/run/docker.sock",
                   docker_url=env.get("DOCKER_HOST") or "unix://var/run/docker.sock",
                   serving_network=env.get("TFS_RELEASE_SERVING_NETWORK") or network)

    def docker_mounts(self) -> list:
        from docker.types import Mount
        out = [Mount(target="/var/run/docker.sock", source=self.socket, type="bind")]
        for spec in self.mounts:
            src, dst, *mode = spec.split(":")
            kind = "bind" if src.startswith("/") else "volume"
            out.append(Mount(target=dst, source=src, type=kind, read_only=(mode == ["ro"])))
        return out


def run_step_in_image(spec: StepImage, context, step: str, model: str, *args: str, config: str,
                      s3_env: dict[str, str]) -> dict:
    """Run ``tfs-release step model *args`` in ``spec.image``; return its public result (as run_step)."""
    from airflow.providers.docker.exceptions import DockerContainerFailedException
    from airflow.providers.docker.operators.docker import DockerOperator

    name = f"tfsr-step-{model}-{step}-{uuid.uuid4().hex[:8]}"
    env = {"TFS_RELEASE_SERVING_NETWORK": spec.serving_network} if spec.serving_network else {}
    op = DockerOperator(
        task_id=f"{step}_in_worker_image", image=spec.image, container_name=name,
        command=[step, model, *args, "--config", spec.config or config, "--result", RESULT_PATH],
        environment=env, private_environment=dict(s3_env), mounts=spec.docker_mounts(),
        network_mode=spec.network, docker_url=spec.docker_url, auto_remove="never",
        mount_tmp_dir=False, do_xcom_push=False, tty=False,
        labels={"tfs-release.step": step, "tfs-release.model": model})
    log.info("step %s runs in the worker image %s (container %s, network %s)", step, spec.image, name,
             spec.network or "default")
    failed = None
    try:
        op.execute(context)
    except DockerContainerFailedException as exc:
        failed = exc
    finally:
        code, result = _finish(op)
    if failed is None and code == 0 and result is not None:
        return public(result)
    reason = _reason(result) or (f"exit {code}; last output: {_last(failed)}" if failed else
                                 "it exited 0 but wrote no result file")
    raise StepFailed(step, code, reason, public(result) if result else None)


def _finish(op) -> tuple[int, dict | None]:
    """Exit code and result of the step container; the container is stopped (if still running:
    the task is being killed) and removed on every path."""
    container = getattr(op, "container", None)
    if not container:
        return -1, None
    cid, cli = container["Id"], op.cli
    try:
        state = cli.inspect_container(cid)["State"]
        if state.get("Running"):
            log.warning("stopping step container %s (grace %ss)", container.get("Id", "")[:12], _STOP_GRACE_S)
            cli.stop(cid, timeout=_STOP_GRACE_S)
            state = cli.inspect_container(cid)["State"]
        return int(state.get("ExitCode", -1)), _read_result(cli, cid)
    finally:
        try:
            cli.remove_container(cid, force=True)
        except Exception as exc:  # already gone: nothing to clean
            log.info("removing step container %s: %s", cid[:12], exc)


def _read_result(cli, cid: str) -> dict | None:
    try:
        stream, _ = cli.get_archive(cid, RESULT_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            obj = json.loads(tar.extractfile(member).read())
    except Exception:  # no result file (crashed before writing it): the reason comes from the logs
        return None
    return obj if isinstance(obj, dict) else None


def _reason(result: dict | None) -> str | None:
    if result:
        for key in ("reason", "error"):
            if result.get(key):
                return str(result[key]).splitlines()[0]
    return None


def _last(exc) -> str:
    lines = [ln.decode(errors="replace") if isinstance(ln, bytes) else str(ln) for ln in (exc.logs or [])]
    lines = [ln.strip() for ln in lines if ln.strip()]
    return lines[-1] if lines else "(no output)"
