"""Fixtures for the real services the tests use.

- ``seaweedfs`` (session): a real SeaweedFS (`weed mini`) on free 127.0.0.1 ports, with
  credentials, data in a temp dir. Every S3 test talks to it over HTTP.
- ``s3``: a boto3 client configured from the environment, as the CLI gets it.
- ``model_env``: fresh training/serving buckets and a models.yaml naming them, per test.
- ``docker_engine``: the real Docker engine (started when installed and not running); tests that
  use it are marked ``docker``; missing engine: skip, or fail when CI=true.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402

pytest_plugins = ["tests.timeline", "tests.cpu_profile"]  # where the wall time (and, opt-in, the CPU) goes


def pytest_configure(config):
    """Under CI (CI=true) the demo models are trained from nothing in every run, into this session's
    own folder, exactly as a newcomer's `make demo` trains them (seeded, gated by their golden sets):
    CI machines keep caches, and a cached checkpoint would hide a trainer that no longer learns.
    Elsewhere the checkpoint cache is used. TFS_RELEASE_FRESH_TRAINING=1 (or 0) forces either way."""
    fresh = os.environ.get("TFS_RELEASE_FRESH_TRAINING", "1" if os.environ.get("CI") else "0") == "1"
    if fresh and not os.environ.get("TFS_RELEASE_CHECKPOINTS"):
        import tempfile
        os.environ["TFS_RELEASE_CHECKPOINTS"] = tempfile.mkdtemp(prefix="tfsr-fresh-checkpoints-")
        config._tfsr_fresh_training = True


TRAINING_ORDER = ("classification", "segmentation", "detection")  # most tests need the classifier


def pytest_sessionstart(session):
    """Fresh training starts in the background when the session starts (one process, one model after
    another) while the tests that need no trained model run: the suite orders those first (see
    ``pytest_collection_modifyitems``). A test that needs a model waits for it (the checkpoint
    cache's lock), and its timeout does not start before it has it (the ``trained`` fixture)."""
    if not getattr(session.config, "_tfsr_fresh_training", False) or session.config.option.collectonly:
        return  # (pytest-xdist workers inherit the controller's TFS_RELEASE_CHECKPOINTS: never here)
    log = os.path.join(os.environ["TFS_RELEASE_CHECKPOINTS"], "background-training.log")
    code = ("import sys, time\nfrom demo import checkpoint_cache\nstart = time.monotonic()\n"
            f"for kind in {TRAINING_ORDER!r}:\n"
            "    t0 = time.monotonic()\n"
            "    folder = checkpoint_cache.get(kind)\n"
            "    print(f'fresh demo {kind} model (trained from nothing, passed its golden set) in '\n"
            "          f'{time.monotonic() - t0:.0f}s (done {time.monotonic() - start:.0f}s into the session): '\n"
            "          f'{folder}', flush=True)\n")
    session.config._tfsr_trainer = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    session.config._tfsr_trainer_log = log


# End-to-end modules, longest first (measured): three run at once (tests/scheduling.py), so the
# last ones to start should be short. A module not listed runs after these.
E2E_ORDER = ("test_compose_stack.py", "test_demo.py", "test_kill_path.py", "test_rollout_dag.py",
             "test_checkpoint_event.py", "test_approval.py", "test_standalone.py", "test_rollback_canary.py",
             "test_release_dag.py", "test_report_link.py", "test_release_alerts.py", "test_checkpoint_param.py")


def _stage(item) -> tuple[int, int]:
    """unit, then integration without trained models, then integration with them, then e2e: the
    first two run while the models train in the background."""
    path = str(item.fspath)
    needs_models = bool({"trained", "export_env"} & set(getattr(item, "fixturenames", ())))
    if f"{os.sep}tests{os.sep}unit{os.sep}" in path:
        return 0, 0
    if f"{os.sep}tests{os.sep}integration{os.sep}" in path:
        if not needs_models:
            return 1, 0
        name = item.nodeid.lower()  # the models train in TRAINING_ORDER: the detector's tests last
        return 2, 2 if "detect" in name else 1 if "segment" in name else 0
    name = os.path.basename(path)
    return 3, E2E_ORDER.index(name) if name in E2E_ORDER else len(E2E_ORDER)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_stage)  # stable: the order within a stage is pytest's
    from tests.scheduling import E2E, uses_docker
    for item in items:  # a Docker test outside the docker unit would run beside it (tests/scheduling.py)
        path = os.path.relpath(str(item.fspath), ROOT)
        if (item.get_closest_marker("docker") or "docker_engine" in getattr(item, "fixturenames", ())) \
                and not path.startswith(E2E) and not uses_docker(path):
            raise pytest.UsageError(f"{item.nodeid} uses the Docker engine but its file has no "
                                    "`pytestmark = pytest.mark.docker`: add it (tests/scheduling.py)")


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs three pytest-xdist workers: the Docker tests on one, the other files on either
    of the first two, then the end-to-end modules on all three (tests/scheduling.py says why)."""
    from tests.scheduling import StagedScheduling
    return StagedScheduling(config, log)


def pytest_sessionfinish(session, exitstatus):
    """The background trainer's report; a model that no seed trained well enough fails the run
    even when no test asked for it."""
    trainer = getattr(session.config, "_tfsr_trainer", None)
    if trainer is None:
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if trainer.poll() is None:  # every test that needed a model already has it; the rest is not needed
        import signal
        os.killpg(trainer.pid, signal.SIGTERM)  # its own process group: the trainer and its train.py
        trainer.wait(30)
    with open(session.config._tfsr_trainer_log) as fh:
        lines = [ln.rstrip() for ln in fh if ln.startswith(("fresh demo", "[shapes-", "demo.checkpoint_cache"))
                 or "GoldenGateError" in ln]
    if tr is not None:
        for ln in lines:
            tr.write_line(ln)
    if trainer.returncode not in (0, -15) and exitstatus == 0:
        session.exitstatus = 1
        if tr is not None:
            tr.write_line(f"background training failed (exit {trainer.returncode}): see "
                          f"{session.config._tfsr_trainer_log}", red=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    sw = services.start_seaweedfs(str(tmp_path_factory.mktemp("seaweedfs")))
    yield sw
    sw.stop()


@pytest.fixture
def s3_env(seaweedfs, monkeypatch):
    for k, v in seaweedfs.env().items():
        monkeypatch.setenv(k, v)
    return seaweedfs.env()


@pytest.fixture
def s3(s3_env):
    from registry.s3 import make_client
    return make_client()


@dataclass
class ModelEnv:
    name: str
    training: str
    serving: str
    config: str
    env: dict
    tmp: str

    @property
    def checkpoints_prefix(self) -> str:
        return f"{self.name}/checkpoints/"

    @property
    def serving_prefix(self) -> str:
        return f"{self.name}/"

    def cli(self, *args, check=None, timeout=300, env=None) -> subprocess.CompletedProcess:
        """Run `tfs-release ARGS --config <this env's config>` as the user would (a subprocess)."""
        full_env = {**os.environ, **self.env, "PYTHONPATH": ROOT, **(env or {})}
        if "--config" not in args:
            args = (*args, "--config", self.config)
        p = subprocess.run([sys.executable, "-m", "cli", *args],
                           capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}, stderr:\n{p.stderr}\nstdout:\n{p.stdout}"
        return p


@pytest.fixture
def model_env(s3, s3_env, tmp_path):
    suffix = uuid.uuid4().hex[:10]
    training, serving = f"training-{suffix}", f"serving-{suffix}"
    s3.create_bucket(Bucket=training)
    s3.create_bucket(Bucket=serving)
    name = "shapes-detector"
    cfg = {"models": {name: {"task": "detection",
                             "checkpoints": f"s3://{training}/{name}/checkpoints/",
                             "serving": f"s3://{serving}/{name}/"}}}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ModelEnv(name, training, serving, str(path), dict(s3_env), str(tmp_path))


@pytest.fixture(scope="session")
def docker_engine():
    try:
        services.ensure_docker()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no Docker engine: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    import docker
    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def trained():
    """kind -> local folder of the demo trainer's checkpoints that passed their golden set (trained
    once per session under CI, see pytest_configure above; else from the checkpoint cache)."""
    from demo import checkpoint_cache
    cache = {}

    def get(kind):
        if kind not in cache:  # waits for the session's background trainer when it is on that model
            cache[kind] = checkpoint_cache.get(kind)
        return cache[kind]
    return get
