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


def pytest_sessionstart(session):
    """Fresh training happens once, before the first test (so no test's timeout pays for it), and
    says how long each model took; a model that passes its golden set with no seed stops the run."""
    if not getattr(session.config, "_tfsr_fresh_training", False) or session.config.option.collectonly:
        return
    import time

    from demo import checkpoint_cache
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    for kind in ("classification", "segmentation", "detection"):
        t0 = time.monotonic()
        folder = checkpoint_cache.get(kind)
        if tr is not None:
            tr.write_line(f"fresh demo {kind} model (trained from nothing, passed its golden set) in "
                          f"{time.monotonic() - t0:.0f}s: {folder}")


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
        if kind not in cache:
            cache[kind] = checkpoint_cache.get(kind)
        return cache[kind]
    return get
