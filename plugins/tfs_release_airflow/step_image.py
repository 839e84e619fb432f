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
- ``TFS_RELEASE_STEP_DOCKER_SOCKET``: host path of the engine socket mounted into the validate step
  (only that one: export never gets it) so the validator can start its serving container (default
  ``/var/run/docker.sock``).
- ``DOCKER_HOST``: the engine the operator talks to (default the local socket).

S3 credentials go in as the operator's ``private_environment``: not on the command line, not in
rendered templates, not in logs or XCom. The step writes its ``--result`` JSON inside the
container; it is copied out after the container exits (success or not), then the container and
any serving container it started are removed.

Killing (``StepImageOperator``, a ``DockerOperator`` chosen at DAG-parse time):
- ``on_kill`` (task marked failed or killed; Airflow SIGKILLs the task 5 s later): SIGTERM to the
  step container (the validator removes its serving container), up to ``KILL_GRACE_S``, then the
  serving containers it owns (label ``tfs-release.owner-container``) and the step container are
  removed by force;
- ``execution_timeout``: the same after a longer grace, from ``execute`` itself;
- the task process gone without either (SIGKILL, a lost worker): a reaper started beside the step
  container (serving/sweep.py) does the same within a second or two, and the container's labels
  (owner host and pid, expiry) let any later sweep remove it.
"""
from __future__ import annotations

import io
import logging
import os
import tarfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from airflow.providers.docker.operators.docker import DockerOperator

from tfs_release_airflow.step_command import KILL_GRACE_S, TIMEOUT_GRACE_S, TTL_MARGIN_S, push_failed_result, serving_ttl
from tfs_release_airflow.step_result import StepFailed, outcome, parse_result

log = logging.getLogger(__name__)

RESULT_PATH = "/tmp/tfs-release-result.json"
SOCKET_STEPS = frozenset({"validate", "release"})  # they start a temporary serving container
_STOP_GRACE_S = 10  # the reaper: SIGTERM to removal when the task process is gone


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

    def docker_mounts(self, step: str) -> list:
        """The step's mounts: the engine's socket only for a step that starts serving containers."""
        from docker.types import Mount
        out = [Mount(target="/var/run/docker.sock", source=self.socket, type="bind")] if step in SOCKET_STEPS else []
        for spec in self.mounts:
            src, dst, *mode = spec.split(":")
            kind = "bind" if src.startswith("/") else "volume"
            out.append(Mount(target=dst, source=src, type=kind, read_only=(mode == ["ro"])))
        return out


class StepImageOperator(DockerOperator):
    """``tfs-release <step> <model> <step_args>`` in the worker image (``spec``), result as XCom."""

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "step_args")
    ui_color = "#e8f0fe"

    def __init__(self, *, step: str, model: str, step_args: Sequence[str], config: str, conn_id: str,
                 spec: StepImage, failed_result_key: str | None = None, production_conn_id: str | None = None,
                 signing_conn_id: str | None = None, **kwargs):
        env = {"TFS_RELEASE_SERVING_NETWORK": spec.serving_network} if spec.serving_network else {}
        super().__init__(image=spec.image, command=None, environment=env, mounts=spec.docker_mounts(step),
                         network_mode=spec.network, docker_url=spec.docker_url, auto_remove="never",
                         mount_tmp_dir=False, tty=False, **kwargs)
        self.step, self.model, self.step_args, self.spec = step, model, list(step_args), spec
        self.config, self.conn_id, self.failed_result_key = spec.config or config, conn_id, failed_result_key
        self._reaper, self._killed = None, False
        self.production_conn_id = production_conn_id  # the production endpoints' credentials, if any
        self.signing_conn_id = signing_conn_id  # the signing key, for the step that may publish (confirm)

    def execute(self, context) -> dict:
        from airflow.providers.docker.exceptions import DockerContainerFailedException

        from registry.config import overlay_env
        from tfs_release_airflow.connection import production_auth, s3_settings, signing_env
        from serving import sweep
        self.command = [self.step, self.model, *self.step_args, "--config", self.config, "--result", RESULT_PATH]
        self._private_environment = {**s3_settings(self.conn_id).env(), **production_auth(self.production_conn_id).env(),
                                     **signing_env(self.signing_conn_id)}
        self.environment.update(overlay_env())  # the config overlay this run decided with
        self.environment.update(serving_ttl(self.execution_timeout))
        self.container_name = f"tfsr-step-{self.model}-{self.step}-{uuid.uuid4().hex[:8]}"
        ttl = (self.execution_timeout.total_seconds() if self.execution_timeout else 6 * 3600) + TTL_MARGIN_S
        ti = context["ti"]
        self.labels = {**sweep.owner_labels("step", ttl_s=ttl), "tfs-release.step": self.step,
                       "tfs-release.model": self.model,
                       "tfs-release.task": f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.try_number}"[:250]}
        try:  # what killed tasks of this host left (their reaper died too)
            sweep.sweep(self._docker(), ("step",))
        except Exception as exc:  # noqa: BLE001 - a sweep problem must not fail the step
            log.warning("sweep of leftover step containers failed: %s", exc)
        self._reaper = sweep.spawn_reaper(self.container_name, expires=float(self.labels[sweep.EXPIRES]),
                                          grace_s=_STOP_GRACE_S)
        log.info("step %s runs in the worker image %s (container %s, network %s)", self.step, self.image,
                 self.container_name, self.network_mode or "default")
        failed = None
        try:
            if self._killed:  # on_kill came before the container existed
                raise StepFailed(self.step, -15, "the task was killed before its container started", None)
            super().execute(context)
        except DockerContainerFailedException as exc:
            failed = exc
        finally:
            code, result = self._finish(TIMEOUT_GRACE_S)
            sweep.stop_reaper(self._reaper)
        try:
            return outcome(self.step, code, result, (failed.logs or []) if failed else [])
        except StepFailed as exc:
            push_failed_result(context, self.failed_result_key, exc)
            raise

    def on_kill(self) -> None:
        self._killed = True
        self._finish(KILL_GRACE_S, fresh=True)

    def _docker(self):
        import docker
        return docker.DockerClient(base_url=self.docker_url, timeout=30)

    def _finish(self, grace_s: float, fresh: bool = False) -> tuple[int, dict | None]:
        """Exit code and result of the step container; if it still runs (the task is being killed
        or timed out), SIGTERM first and up to ``grace_s`` for the validator's own cleanup. Then the
        serving containers it owns and the step container are removed, on every path.
        ``fresh``: a new engine connection (on_kill runs in a signal handler, maybe mid-request)."""
        import docker
        container = getattr(self, "container", None)
        if not container:
            return -1, None
        client = self._docker() if fresh else docker.DockerClient(base_url=self.docker_url, timeout=60)
        code, result = -1, None
        try:
            c = client.containers.get(container["Id"])
            if c.status == "running":
                log.warning("stopping step container %s (SIGTERM, up to %.0fs before removal)", c.name, grace_s)
                c.kill(signal="SIGTERM")
                deadline = time.monotonic() + grace_s
                while c.status == "running" and time.monotonic() < deadline:
                    time.sleep(0.2)
                    c.reload()
            code = int(c.attrs["State"].get("ExitCode", -1)) if c.status != "running" else -1
            result = _read_result(c)
        except docker.errors.NotFound:
            return -1, None
        finally:
            from serving import sweep
            try:
                sweep.stop_and_remove(client, container["Id"], why=f"{self.step} step done")
            except Exception as exc:  # noqa: BLE001 - already gone
                log.info("removing step container %s: %s", container["Id"][:12], exc)
        return code, result


def _read_result(c) -> dict | None:
    try:
        stream, _ = c.get_archive(RESULT_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            return parse_result(tar.extractfile(member).read())
    except Exception:  # noqa: BLE001 - no result file (crashed before writing it): the reason is in the logs
        return None
