"""Steps die with their task, under a real scheduler (`airflow standalone`: LocalExecutor, SQLite),
in both step modes (a local subprocess; the worker image through DockerOperator):

- a validate task marked failed over the REST API (PATCH .../taskInstances/validate), as the UI's
  "mark failed" does;
- a validate task past its ``execution_timeout`` (config ``timeouts.validate``);
- a validate task whose task process is killed with SIGKILL (a lost worker: no on_kill runs);

the three at once, each on its own model and run (a kill must not touch its neighbours' runs), and
each leaves, within 30 s, no step process (nothing with this run's config on its command line, and
no reaper), no step container and no serving container (nothing labelled with the model).

The validation is slow on purpose: the serving image is the stand-in's with an entrypoint that only
sleeps, so the server never becomes AVAILABLE within ``validation_deadline_s`` (900 s). Everything
else is real: SeaweedFS (behind a TCP relay on a docker network's gateway, so the host's Airflow and
the step containers use one endpoint), the Model Garden export of the demo checkpoint, the Docker
engine, the worker image (built locally, cached by recipe hash), Airflow's own kill path.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.parse
import uuid

import psutil
import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import MANUAL_ONLY, MODEL, airflow_conns
from tests.integration.conftest import upload_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.docker]
KINDS = ("marked-failed", "timeout", "sigkill")
VALIDATE_TIMEOUT_S = 45  # the "timeout" model's timeouts.validate: its step is up with its container in
# seconds (3 s measured on a quiet machine; printed), so validate is still running when it expires
LIMIT_S = 30


class Relay:
    """TCP relay ``listen_host:port`` -> ``127.0.0.1:target`` (SeaweedFS binds loopback only)."""

    def __init__(self, listen_host: str, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server((listen_host, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def network(docker_engine):
    net = docker_engine.networks.create(f"tfsr-kill-{uuid.uuid4().hex[:8]}", driver="bridge")
    net.reload()
    yield net.name, net.attrs["IPAM"]["Config"][0]["Gateway"]
    net.remove()


@pytest.fixture(scope="module")
def s3_relay(seaweedfs, network):
    relay = Relay(network[1], int(urllib.parse.urlsplit(seaweedfs.endpoint).port))
    yield f"http://{network[1]}:{relay.port}"
    relay.close()


@pytest.fixture(scope="module")
def never_ready_image(standin_image, docker_engine, tmp_path_factory):
    """The stand-in image whose server never answers: validation waits for AVAILABLE until killed."""
    ctx = tmp_path_factory.mktemp("never-ready")
    (ctx / "Dockerfile").write_text(f'FROM {standin_image}\nENTRYPOINT ["/bin/sh", "-c", "exec sleep 100000", "--"]\n')
    tag = f"tfs-release/test-never-ready:{standin_image.rsplit(':', 1)[1]}"
    docker_engine.images.build(path=str(ctx), tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def models(airflow_env, never_ready_image):
    """One model per kind of kill, each with the demo classifier's checkpoint; written over the
    module's config (the standalone fixture below reads it)."""
    from demo import checkpoint_cache
    suffix = uuid.uuid4().hex[:6]
    names = {kind: f"kill-{kind.split('-')[0]}-{suffix}" for kind in KINDS}
    cfg = {}
    for kind, name in names.items():
        upload_checkpoints(airflow_env.s3, airflow_env.training, f"{name}/checkpoints/",
                           checkpoint_cache.get("classification"))
        cfg[name] = {
            "task": "classification", "checkpoints": f"s3://{airflow_env.training}/{name}/checkpoints/",
            "serving": f"s3://{airflow_env.serving}/{name}/", "golden": os.path.join(ROOT, "demo", "golden", MODEL),
            "experiment": "resnet_imagenet", "params_override": os.path.join(ROOT, "config", f"{MODEL}.params.yaml"),
            "input_types": {"serving_default": "image_tensor"}, "input_size": [64, 64],
            "serving_image": never_ready_image, "validation_deadline_s": 900}
        if kind == "timeout":
            cfg[name]["timeouts"] = {"validate": VALIDATE_TIMEOUT_S}
    with open(airflow_env.config, "w") as fh:
        yaml.safe_dump({"models": cfg}, fh)
    return names


@pytest.fixture(scope="module", params=["subprocess", "image"])
def airflow(request, airflow_env, models, s3_relay, network, seaweedfs, docker_engine):
    """`airflow standalone` in one step mode; the S3 connection points at the relay."""
    import services
    mode = request.param
    extra = {}
    if mode == "image":
        worker = _worker_image(docker_engine)
        config_dir = os.path.dirname(airflow_env.config)
        extra = {"TFS_RELEASE_STEP_IMAGE": worker, "TFS_RELEASE_STEP_NETWORK": network[0],
                 "TFS_RELEASE_STEP_MOUNTS": f"{ROOT}:{ROOT}:ro,{config_dir}:{config_dir}:ro"}
    conn = {"conn_type": "aws", "login": seaweedfs.access_key, "password": seaweedfs.secret_key,
            "extra": {"endpoint_url": s3_relay, "region_name": "us-east-1"}}
    t0 = time.monotonic()
    extra.update(MANUAL_ONLY)  # only the test's own runs (no checkpoint-event run on unpause)
    af = services.start_airflow(airflow_env.home, config=airflow_env.config, conns=airflow_conns(airflow_env, conn),
                                extra_env=extra)
    print(f"\nairflow standalone ({mode} steps) ready in {time.monotonic() - t0:.1f}s at {af.url} (log {af.log})")
    af.mode, af.test_token = mode, af.token()
    yield af
    af.stop()
    for name in models.values():  # what a failed assertion left
        for c in _containers(docker_engine, name):
            docker_engine.api.remove_container(c.id, force=True)
    if mode == "image":
        docker_engine.images.remove(extra["TFS_RELEASE_STEP_IMAGE"], noprune=True)


def _worker_image(docker_engine) -> str:
    """The worker image of this tree, under a tag of this test's own: other sessions' builds prune
    older ``tfs-release/worker`` tags (under the same lock, which is held here while tagging)."""
    import fcntl

    from deploy import local_images
    t0 = time.monotonic()
    os.makedirs(local_images.CACHE, exist_ok=True)
    with open(os.path.join(local_images.CACHE, ".local-images.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = local_images.ensure("worker")  # under the lock taken above
        tag = f"tfs-release/test-kill-worker:{built.rsplit(':', 1)[1]}-{uuid.uuid4().hex[:6]}"
        docker_engine.images.get(built).tag(tag)
    print(f"\nworker image {built} ready in {time.monotonic() - t0:.0f}s (as {tag})")
    return tag


def _api(af, method, path, body=None):
    status, out = af.api(method, path, body, token=af.test_token)
    assert status in (200, 201), (method, path, status, out)
    return out


def _ti(af, dag_id, run_id, task_id="validate") -> dict:
    return _api(af, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}")


class _Container:
    def __init__(self, raw: dict):
        self.id, self.name = raw["Id"], raw["Names"][0].lstrip("/")
        self.labels, self.status, self.created = raw.get("Labels") or {}, raw.get("State"), float(raw["Created"])


def _containers(docker_engine, model) -> list[_Container]:
    """One engine call (a container removed meanwhile cannot make a later inspect fail)."""
    return [_Container(c) for c in docker_engine.api.containers(all=True, filters={"label": f"tfs-release.model={model}"})]


def _step_processes(config: str, model: str) -> list[str]:
    """Processes of this run: step commands (their --config) and reapers of its containers."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (config in cmd and model in cmd) or ("serving.sweep" in cmd and model in cmd):
            out.append(f"{p.info['pid']}: {cmd[:200]}")
    return out


def _leftovers(af, airflow_env, docker_engine, model) -> list[str]:
    return _step_processes(airflow_env.config, model) + [f"container {c.name} ({c.status})"
                                                         for c in _containers(docker_engine, model)]


def test_killed_validate_tasks_leave_nothing_behind(airflow, airflow_env, docker_engine, models):
    """The three kinds at once, each on its own model and run (their exports overlap): each kill is
    applied as soon as its validate runs with its serving container, and each run is watched until
    nothing of it is left."""
    af = airflow
    pool = _api(af, "GET", "/api/v2/pools/tfs_release_serving")  # created by the plugin on start
    assert pool["slots"] == 4 >= len(KINDS)  # the three validate tasks run side by side
    runs = {}
    for kind in KINDS:
        dag_id = f"release__{models[kind]}"
        _api(af, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = _api(af, "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {"force": True}})
        runs[kind] = run["dag_run_id"]
    t_kill: dict[str, float] = {}
    before: dict[str, int] = {}
    took: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    while len(took) < len(KINDS):
        assert time.monotonic() < deadline, (f"validate never ran with its serving container for "
                                             f"{set(KINDS) - set(t_kill)}; see {af.log}")
        for kind in KINDS:
            model, run_id, dag_id = models[kind], runs[kind], f"release__{models[kind]}"
            if kind not in t_kill:
                if _validating(af, docker_engine, dag_id, run_id, model):
                    before[kind] = len(_leftovers(af, airflow_env, docker_engine, model))
                    t_kill[kind] = _kill(af, airflow_env, docker_engine, kind, dag_id, run_id, model)
            elif kind not in took:
                now = time.monotonic()
                left = _leftovers(af, airflow_env, docker_engine, model)
                if now < t_kill[kind]:  # its own kill is still ahead: the others' kills left it running
                    assert left, f"{kind}: its step ended {t_kill[kind] - now:.0f}s before its own kill"
                elif not left:
                    took[kind] = now - t_kill[kind]
                    print(f"\n{af.mode} steps, {kind}: nothing left {took[kind]:.1f}s after the kill (before: "
                          f"{before[kind]} processes/containers)")
                else:
                    assert now < t_kill[kind] + 120, f"{kind}: still there {now - t_kill[kind]:.0f}s after the kill: {left}"
        # a cleanup is timed to half a second; waiting for validate (its export first, a minute or more)
        # is polled every 2 s: each poll is two REST calls per run, and the API server shares the cores
        time.sleep(0.5 if set(t_kill) - set(took) else 2.0)
    slow = {k: round(t, 1) for k, t in took.items() if t >= LIMIT_S}
    assert not slow, f"cleanup took {slow} s (limit {LIMIT_S} s)"
    for kind in KINDS:
        state = _wait_state(af, f"release__{models[kind]}", runs[kind])
        assert state["validate"] == "failed" and state["publish"] in ("upstream_failed", "skipped"), (kind, state)


def _validating(af, docker_engine, dag_id, run_id, model) -> bool:
    """Whether validate runs and its serving container is up (the export before it takes a while)."""
    run = _api(af, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")
    assert run["state"] in ("queued", "running"), (run, af.log)
    if _ti(af, dag_id, run_id)["state"] != "running":
        return False
    return any(c.labels.get("tfs-release.role") == "validation" and c.status == "running"
               for c in _containers(docker_engine, model))


def _kill(af, airflow_env, docker_engine, kind, dag_id, run_id, model) -> float:
    """Kill one validate task the ``kind`` way; returns (monotonic) when the kill happens."""
    step_containers = [c for c in _containers(docker_engine, model) if c.labels.get("tfs-release.role") == "step"]
    if af.mode == "image":
        assert step_containers, f"{kind}: the image mode runs the step in a container"
    else:
        assert not step_containers and _step_processes(airflow_env.config, model), \
            _leftovers(af, airflow_env, docker_engine, model)
    if kind == "marked-failed":
        t_kill = time.monotonic()
        _api(af, "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/validate",
             {"new_state": "failed"})
        return t_kill
    if kind == "timeout":
        # the timer starts as execute() begins, a moment before the step itself (its process or
        # container): the step's start is the reference (the TI's start_date is earlier by the task
        # process's own start-up, seconds on a busy machine: that would only make this stricter)
        started = _step_started(airflow_env.config, model, step_containers)
        left = started + VALIDATE_TIMEOUT_S - time.time()
        print(f"\nvalidate step up with its serving container {VALIDATE_TIMEOUT_S - left:.0f}s after it "
              f"started (timeout {VALIDATE_TIMEOUT_S}s)")
        assert left > 0, f"validate already past its timeout ({_ti(af, dag_id, run_id)})"
        return time.monotonic() + left
    # the task process dies without a word (OOM killer, a lost worker): no on_kill
    owner = _task_process(airflow_env.config, model, step_containers)
    t_kill = time.monotonic()
    os.kill(owner, signal.SIGKILL)
    return t_kill


def _step_started(config: str, model: str, step_containers) -> float:
    """Unix time the validate step started: its container's creation, or its process's start."""
    if step_containers:
        return min(c.created for c in step_containers)
    return min(p.info["create_time"] for p in psutil.process_iter(["cmdline", "create_time"])
               if config in " ".join(p.info["cmdline"] or []) and model in " ".join(p.info["cmdline"] or [])
               and " validate " in " ".join(p.info["cmdline"] or []))


def _task_process(config: str, model: str, step_containers) -> int:
    """The Airflow task process running validate: the step's parent (subprocess mode), or the owner
    pid on the step container's labels (image mode)."""
    if step_containers:
        return int(step_containers[0].labels["tfs-release.pid"])
    for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if config in cmd and model in cmd and " validate " in f" {cmd} ":
            return p.info["ppid"]
    raise AssertionError("no validate step process")


def _wait_state(af, dag_id, run_id, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = _api(af, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances")
        states = {t["task_id"]: t["state"] for t in body["task_instances"]}
        run = _api(af, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")
        if run["state"] in ("failed", "success") or time.monotonic() > deadline:
            return {**states, "_run": run["state"], "_log": json.dumps(af.log)}
        time.sleep(2)
