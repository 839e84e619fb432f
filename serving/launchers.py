"""Where a temporary TF Serving runs: a Docker container (default) or a local process.

Both take a local ``model_base_path`` (``<dir>/<model>/<N>/``), start a server only this host can
reach (a process on 127.0.0.1, a container on an internal network) and hand back a ``Server``
(address, ports, logs, stop). Stopping is idempotent and runs on every path. Docker containers
carry their owner and expiry in labels, end by themselves at the expiry, and have a reaper beside
them that removes them if the validator is killed; each start also sweeps leftovers
(serving/sweep.py).

The serving container runs a model nobody has vetted yet, so it gets as little as possible: a
read-only root filesystem (a small tmpfs on /tmp), a non-root user (``SERVING_USER``), no
capabilities, no environment but the model's name and path, and no network egress: it is the only
container on an ``internal`` Docker network of its own (no route out, other containers unreachable),
and the validator talks to its address on that network. Docker ignores published ports on internal
networks (measured on Engine 20.10: ``Ports`` stays empty), so nothing is published: the address on
the network's bridge is reachable from the engine's host only. Networks left by a killed validator
are pruned (by label, once unused) at the next start.

A validator that itself runs in a container (the compose stack's worker image) cannot reach the
bridge addresses of the engine's host, and its own files are not there to bind-mount. With
``TFS_RELEASE_SERVING_NETWORK=<docker network>`` (the network the validator's container is on) the
docker launcher copies the model into the serving container (an anonymous volume, removed with it),
and connects the validator's own container (its hostname) to the server's internal network.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from registry.errors import BadInput, ReleaseError
from serving import sweep as sweep_mod

log = logging.getLogger(__name__)
LABEL = "tfs-release.role"
# a temporary server validates one fixed version: a failed load is final, not retried a minute later
SERVER_ARGS = ["--max_num_load_retries=0", "--file_system_poll_wait_seconds=1"]
# with a model config file (several versions in one server, validation/validate.py): where it is,
# relative to the model base folder, and how often the server re-reads it
CONFIG_NAME = "models.config"
CONFIG_ARGS = ["--model_config_file_poll_wait_seconds=1"]
ROLE = "validation"
NETWORK_ENV = "TFS_RELEASE_SERVING_NETWORK"
SERVING_USER = "65534:65534"  # nobody:nogroup: reads the (world-readable) model, writes only its tmpfs
SERVING_TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=64m"}
NETWORK_PRUNE_AFTER = "1m"  # an unused labelled network older than this is a killed validator's
# What a serving process (process launcher) may inherit: locale, search paths, TensorFlow/BLAS
# tuning. Never storage credentials (AWS_*), Airflow, Docker or tfs-release settings.
SERVER_ENV_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH",
                              "CUDA_VISIBLE_DEVICES", "STANDIN_LOG_LEVEL"})
SERVER_ENV_PREFIXES = ("LC_", "TF_", "OMP_", "KMP_", "MKL_")


class LauncherError(BadInput):
    """The serving environment cannot be used (no engine, no image, no executable)."""


class ServerDied(ReleaseError):
    exit_code = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    host: str
    rest_port: int
    grpc_port: int
    model: str
    kind: str
    describe: str
    _stop: object = field(repr=False, default=None)
    _logs: object = field(repr=False, default=None)
    _alive: object = field(repr=False, default=None)
    _config: object = field(repr=False, default=None)
    _memory: object = field(repr=False, default=None)

    def update_config(self, text: str) -> None:
        """Replace the server's model config file (it re-reads it every
        --model_config_file_poll_wait_seconds). Only for servers started with a config."""
        if self._config is None:
            raise LauncherError("this server was started without --model_config_file")
        self._config(text)

    def memory_mb(self) -> float | None:
        """The server's memory now (container: cgroup usage without page cache, as `docker stats`
        shows it; process: resident set size), None when it cannot be read."""
        try:
            return self._memory() if self._memory else None
        except Exception as exc:  # noqa: BLE001 - a reading is best effort
            log.info("memory of %s unreadable: %s", self.describe, exc)
            return None

    def logs(self, tail: int = 80) -> str:
        try:
            return self._logs(tail) if self._logs else ""
        except Exception as exc:  # noqa: BLE001 - logs are best effort on a dying server
            return f"(logs unavailable: {exc})"

    def alive(self) -> None:
        """Raise ServerDied (with its logs) when the server is gone."""
        if self._alive:
            self._alive()

    def stop(self) -> None:
        if self._stop:
            stop, self._stop = self._stop, None
            stop()


class DockerLauncher:
    name = "docker"

    def __init__(self, image: str, *, run_id: str, mem_limit: str = "2g", cpus: float = 2.0,
                 pids_limit: int = 512, pull: bool = False, network: str | None = None,
                 own_container: str | None = None):
        self.image, self.run_id = image, run_id
        # None: from the environment (set in the compose stack); "" forces the engine-host mode
        self.network = os.environ.get(NETWORK_ENV, "") if network is None else network
        # network mode: the validator's own container (a container's hostname is its id)
        self.own_container = (own_container or socket.gethostname()) if self.network else None
        self._networks: list[str] = []
        self.mem_limit, self.cpus, self.pids_limit, self.pull = mem_limit, cpus, pids_limit, pull
        self._client = None
        self._names: list[str] = []
        self._reapers: list = []  # one per container: removes it if this process dies (SIGKILL)
        try:
            self.ttl_s = sweep_mod.ttl_from_env()  # the expiry of its containers
        except ValueError as exc:
            raise LauncherError(str(exc)) from None

    @property
    def client(self):
        if self._client is None:
            import docker
            try:
                self._client = docker.from_env(timeout=60)
                self._client.ping()
            except Exception as exc:  # noqa: BLE001 - any failure here means: no engine
                self._client = None
                raise LauncherError(f"the Docker engine is not reachable ({type(exc).__name__}: "
                                    f"{str(exc)[:200]}): start it (make services) or set DOCKER_HOST, "
                                    "or use --launcher process.") from None
        return self._client

    def sweep(self) -> list[str]:
        """Remove validation containers whose validator is gone or whose expiry passed; never another
        host's live one (serving/sweep.py: labels name the owner)."""
        removed = sweep_mod.sweep(self.client, ("validation",))
        if removed:
            log.info("swept %d leftover validation container(s): %s", len(removed), ", ".join(removed))
        return removed

    def start(self, base_path: str, model: str, config: str | None = None) -> Server:
        """Serve ``<base_path>/<model>/<N>/``. With ``config`` (a ModelServerConfig text, base paths
        under /models), the server reads it from ``<base_path>/models.config`` instead of
        --model_name/--model_base_path, and ``Server.update_config`` rewrites it."""
        import docker
        self.sweep()
        try:
            image = self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            if not self.pull:
                raise LauncherError(f"serving image {self.image!r} is not on this Docker engine: pull or "
                                    "build it first (no registry is reachable here; the stand-in image is "
                                    "built by `python -m standin.image`).") from None
            image = self.client.images.pull(self.image)
            image = image[0] if isinstance(image, list) else image
        # owner (host, pid, expiry) for the sweep and the reaper; a containerised validator (network
        # mode) also names its own container, so its servers go when that container goes
        labels = {**sweep_mod.owner_labels(ROLE, ttl_s=self.ttl_s,
                                           owner_container=self.own_container),
                  "tfs-release.model": model, "tfs-release.run": self.run_id[:60]}
        name = f"tfsr-validate-{model}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        self._names.append(name)  # cleanup() finds it by name even if create() is interrupted
        t0 = time.monotonic()
        model_dir = os.path.abspath(os.path.join(base_path, model))
        command = list(SERVER_ARGS)
        if config is not None:
            _write_config(base_path, config)
            command += [f"--model_config_file=/models/{CONFIG_NAME}", *CONFIG_ARGS]
        if self.network:  # in-container validator: the model is copied into an anonymous volume
            from docker.types import Mount
            placement = dict(mounts=[Mount("/models", None, type="volume")])
        elif config is not None:  # the whole folder: the config file beside the model's versions
            _world_readable(os.path.abspath(base_path))
            placement = dict(volumes={os.path.abspath(base_path): {"bind": "/models", "mode": "ro"}})
        else:
            _world_readable(model_dir)  # the server's user is not the validator's
            placement = dict(volumes={model_dir: {"bind": f"/models/{model}", "mode": "ro"}})
        # the reaper first: a SIGKILL between create() returning and a later spawn would leave the
        # container without one (it waits for the container to appear)
        self._reapers.append(sweep_mod.spawn_reaper(name, expires=float(labels[sweep_mod.EXPIRES])))
        try:
            self._internal_network(name, labels)
            container = self.client.containers.create(
                self.image, command=command, detach=True, init=True, labels=labels,
                environment={"MODEL_NAME": model, "MODEL_BASE_PATH": "/models"},
                mem_limit=self.mem_limit, nano_cpus=int(self.cpus * 1e9), pids_limit=self.pids_limit,
                cap_drop=["ALL"], security_opt=["no-new-privileges"], privileged=False, name=name,
                read_only=True, tmpfs=SERVING_TMPFS, user=SERVING_USER, network=name,
                # container-side expiry: the server ends at the label's time even with nobody left
                entrypoint=sweep_mod.expiring_entrypoint(image.attrs.get("Config"), self.ttl_s), **placement)
            if self.network:
                with _model_tar(model_dir, model) as tar:
                    container.put_archive("/models", tar)
                if config is not None:
                    with _file_tar(CONFIG_NAME, config) as tar:
                        container.put_archive("/models", tar)
                self._connect_own_container(name)
            container.start()
            container.reload()
            host, rest, grpc_port = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"], 8501, 8500
        except BaseException:  # also SIGTERM (Terminated) mid-start: never leave it behind
            self.cleanup()
            raise
        log.info("started container %s (%s) for %s in %.1fs: REST %s:%d gRPC %s:%d on its internal network%s",
                 name, self.image, model, time.monotonic() - t0, host, rest, host, grpc_port,
                 f" (validator container {self.own_container} connected)" if self.network else "")

        def logs(tail):
            return container.logs(tail=tail).decode("utf-8", "replace")

        def alive():
            container.reload()
            if container.status in ("exited", "dead"):
                raise ServerDied(f"the serving container exited (code {container.attrs['State'].get('ExitCode')}); "
                                 f"last log lines:\n{logs(40)}")

        def update_config(text):
            if self.network:
                with _file_tar(CONFIG_NAME, text) as tar:
                    container.put_archive("/models", tar)
            else:
                _write_config(base_path, text)

        def memory():
            st = container.stats(stream=False, one_shot=True).get("memory_stats") or {}
            usage = st.get("usage")
            if usage is None:
                return None
            inner = st.get("stats") or {}
            cache = inner.get("inactive_file", inner.get("total_inactive_file", inner.get("cache", 0)))
            return round((usage - cache) / 2**20, 1)

        return Server(host, rest, grpc_port, model, "docker", f"{self.image} ({name})",
                      _stop=self.cleanup, _logs=logs, _alive=alive,
                      _config=update_config if config is not None else None, _memory=memory)

    def cleanup(self) -> None:
        """Remove every container this launcher created (idempotent; runs on every path)."""
        import docker
        while self._names:
            name = self._names.pop()
            try:
                self.client.containers.get(name).remove(force=True, v=True)  # v: its anonymous volume
                log.info("removed container %s", name)
            except docker.errors.NotFound:
                pass
        while self._reapers:
            sweep_mod.stop_reaper(self._reapers.pop())
        self._remove_networks()

    def _internal_network(self, name: str, labels: dict) -> None:
        """The server's own ``internal`` network (no egress); pruned leftovers first."""
        import docker
        try:
            self.client.networks.prune(filters={"label": f"{LABEL}={ROLE}", "until": NETWORK_PRUNE_AFTER})
        except docker.errors.APIError as exc:  # a concurrent prune: not ours to fail on
            log.info("pruning leftover serving networks: %s", exc)
        self._networks.append(name)
        try:
            self.client.networks.create(name, driver="bridge", internal=True, check_duplicate=True,
                                        labels={k: v for k, v in labels.items() if k in (LABEL, "tfs-release.run")})
        except docker.errors.APIError as exc:
            raise LauncherError(f"cannot create the serving container's internal network {name} "
                                f"({exc.explanation or exc}); if the engine ran out of address pools, remove "
                                "unused networks (docker network prune) or widen default-address-pools") from None

    def _connect_own_container(self, network: str) -> None:
        import docker
        try:
            self.client.networks.get(network).connect(self.own_container)
        except docker.errors.NotFound:
            raise LauncherError(f"{NETWORK_ENV} is set (a validator in a container) but this process's container "
                                f"{self.own_container!r} is not on this Docker engine: unset {NETWORK_ENV} when the "
                                "validator runs on the engine's host") from None

    def _remove_networks(self) -> None:
        import docker
        while self._networks:
            name = self._networks.pop()
            try:
                net = self.client.networks.get(name)
                if self.own_container:
                    try:
                        net.disconnect(self.own_container, force=True)
                    except docker.errors.APIError:
                        pass  # not connected (start failed before), or already gone
                net.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:  # e.g. its container is still being removed
                log.warning("could not remove network %s (pruned at a later start): %s", name, exc)


def _model_tar(model_dir: str, arcname: str):
    """A tar (temporary file) of the model folder under ``arcname``, read-only modes, owned by root."""
    import tarfile
    import tempfile
    fh = tempfile.TemporaryFile(prefix="tfsr-model-", suffix=".tar")

    def readonly(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o555 if info.isdir() else 0o444
        return info

    with tarfile.open(fileobj=fh, mode="w") as tar:
        if os.path.dirname(arcname):
            parent = tarfile.TarInfo(os.path.dirname(arcname))
            parent.type, parent.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(parent)
        tar.add(model_dir, arcname=arcname, filter=readonly)
    fh.seek(0)
    return fh


def _write_config(base_path: str, text: str) -> None:
    """Atomically (a reader sees the old file or the new one, never half of it), world-readable."""
    import tempfile
    os.makedirs(base_path, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{CONFIG_NAME}.", dir=base_path)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(base_path, CONFIG_NAME))


def _file_tar(name: str, text: str):
    """A tar (temporary file) holding one read-only file."""
    import io
    import tarfile
    import tempfile
    fh = tempfile.TemporaryFile(prefix="tfsr-config-", suffix=".tar")
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, int(time.time())
    with tarfile.open(fileobj=fh, mode="w") as tar:
        tar.addfile(info, io.BytesIO(data))
    fh.seek(0)
    return fh


def _rss_mb(pid: int) -> float | None:
    """Resident set size of a process and its children (the look-alike executable execs; the real
    binary is one process), from /proc."""
    total, seen, todo = 0, set(), [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return round(total / 1024, 1) if total else None


def model_config(model: str, versions: list[int], *, base: str = "/models") -> str:
    """A ModelServerConfig (text format) serving exactly ``versions`` of ``model`` (policy
    ``specific``); an empty list serves nothing (a server up with no model loaded yet)."""
    if not versions:
        return "model_config_list {\n}\n"
    vs = "".join(f"        versions: {int(v)}\n" for v in sorted(set(versions)))
    return ("model_config_list {\n  config {\n"
            f"    name: \"{model}\"\n    base_path: \"{base.rstrip('/')}/{model}\"\n"
            "    model_platform: \"tensorflow\"\n"
            f"    model_version_policy {{\n      specific {{\n{vs}      }}\n    }}\n  }}\n}}\n")


def _world_readable(path: str) -> None:
    """o+r on files, o+rx on folders under ``path`` (and ``path``): the serving user can read it."""
    for root, dirs, files in os.walk(path):
        os.chmod(root, os.stat(root).st_mode | 0o005)
        for f in files:
            full = os.path.join(root, f)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode | 0o004)


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a serving process: the allow-listed part of ``base`` (default: ours)."""
    base = os.environ if base is None else base
    return {k: v for k, v in base.items() if k in SERVER_ENV_NAMES or k.startswith(SERVER_ENV_PREFIXES)}


class ProcessLauncher:
    """A tensorflow_model_server-compatible executable as a subprocess: the real binary when it
    is on PATH, else the stand-in (``python -m standin.server``)."""
    name = "process"

    def __init__(self, executable: str | None = None, *, log_dir: str | None = None):
        self.executable = executable or shutil.which("tensorflow_model_server")
        self.log_dir = log_dir

    def cleanup(self) -> None:
        """Servers stop through Server.stop(); nothing else to remove."""

    def command(self) -> tuple[list[str], str]:
        if self.executable:
            return [self.executable], f"tensorflow_model_server ({self.executable})"
        return [sys.executable, "-m", "standin.server"], "the TF-Serving stand-in (python -m standin.server)"

    def start(self, base_path: str, model: str, config: str | None = None) -> Server:
        """As DockerLauncher.start; a config's base paths are under /models: they are rewritten to
        ``base_path`` here."""
        import tempfile
        cmd, what = self.command()
        rest, grpc_port = free_port(), free_port()
        while grpc_port == rest:  # two picks of the OS's free port can be the same
            grpc_port = free_port()
        root = os.path.abspath(base_path)

        def local(text):
            return text.replace('base_path: "/models/', f'base_path: "{root}/')
        if config is not None:
            _write_config(root, local(config))
            where = [f"--model_config_file={os.path.join(root, CONFIG_NAME)}", *CONFIG_ARGS]
        else:
            where = [f"--model_name={model}", f"--model_base_path={os.path.join(root, model)}"]
        args = cmd + [f"--port={grpc_port}", f"--rest_api_port={rest}", *where, *SERVER_ARGS]
        if not self.executable:
            args.append("--host=127.0.0.1")
        logf = tempfile.NamedTemporaryFile(prefix=f"tfsr-serving-{model}-", suffix=".log", delete=False,
                                           dir=self.log_dir)
        env = server_env()  # no credentials: the model under test must not be able to read any
        if not self.executable:  # the stand-in's package
            env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.info("started %s for %s: pid %d, REST 127.0.0.1:%d gRPC 127.0.0.1:%d", what, model, proc.pid,
                 rest, grpc_port)

        def logs(tail):
            with open(logf.name, errors="replace") as fh:
                return "".join(fh.readlines()[-tail:])

        def alive():
            if proc.poll() is not None:
                raise ServerDied(f"the serving process exited with {proc.returncode}; last log lines:\n{logs(40)}")

        def stop():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            logf.close()
            os.unlink(logf.name)

        return Server("127.0.0.1", rest, grpc_port, model, "process", what, _stop=stop, _logs=logs, _alive=alive,
                      _config=(lambda text: _write_config(root, local(text))) if config is not None else None,
                      _memory=lambda: _rss_mb(proc.pid))


def make(name: str, *, image: str | None, run_id: str, **kw):
    if name == "docker":
        if not image:
            raise LauncherError("the docker launcher needs a serving image (config 'serving_image' or "
                                "--image; tensorflow/serving in production)")
        return DockerLauncher(image, run_id=run_id, **kw)
    if name == "process":
        return ProcessLauncher()
    raise LauncherError(f"unknown launcher {name!r}: use docker or process")
