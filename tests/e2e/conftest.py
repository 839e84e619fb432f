"""Fixtures for Airflow end-to-end runs: a real SeaweedFS (tests/conftest.py), the real Docker engine
with the stand-in serving image, and an Airflow home (SQLite, migrated) in a temp dir whose only
S3 settings come from the ``aws_default`` connection (AIRFLOW_CONN_AWS_DEFAULT)."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

import pytest
import yaml

from services import sqlite_url
from tests.conftest import ROOT
from tests.integration.conftest import upload_checkpoints

MODEL = "shapes-classifier"


@pytest.fixture(scope="session")
def standin_image(docker_engine):
    """The stand-in serving image, built locally (cached by its recipe hash)."""
    from standin.image import ensure_image
    return ensure_image()


@pytest.fixture(scope="session")
def airflow_bin() -> str:
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "airflow")


@pytest.fixture(scope="session")
def migrated_db(airflow_bin, tmp_path_factory, worker_id) -> str:
    """An Airflow metadata database migrated once per test session (SQLite), shared by the xdist
    workers (the first one to need it migrates, under a lock; the others wait and use it): each
    module's Airflow home starts from a copy instead of running `airflow db migrate` again."""
    import fcntl
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the session's folder, above each worker's own
    home = root / "airflow-migrated"
    home.mkdir(exist_ok=True)
    with open(root / "airflow-migrated.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / ".complete").exists():
            return str(home / "airflow.db")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                   AIRFLOW__CORE__DAGS_FOLDER=str(home / "no-dags"),
                   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite_url(str(home)))
        t0 = time.monotonic()
        p = subprocess.run([airflow_bin, "db", "migrate"], env=env, cwd=str(home), capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        (home / ".complete").touch()
        print(f"\nairflow db migrate (once per session): {time.monotonic() - t0:.1f}s")
    return str(home / "airflow.db")


def migrated_home(home, migrated_db: str) -> None:
    """``home``'s metadata database: a copy of the session's migrated one."""
    import shutil
    shutil.copyfile(migrated_db, os.path.join(str(home), "airflow.db"))


@dataclass
class AirflowEnv:
    airflow: str
    home: str
    env: dict
    training: str
    serving: str
    config: str

    def __post_init__(self):
        from services import AirflowCLI
        self.cli = AirflowCLI(self.home, self.env, airflow=self.airflow)
        self.run, self.query, self.runs = self.cli.run, self.cli.query, self.cli.runs
        self.task_states, self.xcom = self.cli.task_states, self.cli.xcom

    def dags_test(self, dag_id: str, conf: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
        """`airflow dags test DAG_ID [--conf]` (services.AirflowCLI); the process and the run's task states."""
        r = self.cli.dags_test(dag_id, conf)
        return r.process, {"run_id": r.run_id, "state": r.state, "tasks": r.tasks}

    def asset_events(self, uri: str) -> list[dict]:
        rows = self.query("SELECT e.extra, e.source_dag_id, e.source_run_id FROM asset_event e "
                          "JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? ORDER BY e.id", uri)
        return [{"extra": json.loads(x) if x else {}, "dag_id": d, "run_id": r} for x, d, r in rows]


@pytest.fixture(scope="module")
def airflow_env(seaweedfs, standin_image, airflow_bin, migrated_db, tmp_path_factory):
    """Buckets with the demo classifier's checkpoints, a models.yaml naming them, a migrated Airflow
    home. The Airflow processes get no AWS_* variables: only the connection. Every version the
    release DAG (or a rollback) publishes is signed with the key in the connection
    ``tfs_release_signing`` (``signing_conn_id``; ``af.signing``: private, public, key id)."""
    from demo import checkpoint_cache
    from registry.s3 import make_client

    tmp = tmp_path_factory.mktemp("airflow-e2e")
    suffix = uuid.uuid4().hex[:10]
    training, serving = f"training-{suffix}", f"serving-{suffix}"
    s3 = make_client(endpoint_url=seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key,
                     aws_secret_access_key=seaweedfs.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket=training)
    s3.create_bucket(Bucket=serving)
    upload_checkpoints(s3, training, f"{MODEL}/checkpoints/", checkpoint_cache.get("classification"))

    config = tmp / "config" / "models.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": {MODEL: {
        "task": "classification", "checkpoints": f"s3://{training}/{MODEL}/checkpoints/",
        "serving": f"s3://{serving}/{MODEL}/", "golden": os.path.join(ROOT, "demo", "golden", MODEL),
        "experiment": "resnet_imagenet", "params_override": os.path.join(ROOT, "config", f"{MODEL}.params.yaml"),
        "input_types": {"serving_default": "image_tensor"}, "input_size": [64, 64],
        "serving_image": standin_image, "signing_conn_id": "tfs_release_signing"}}}))
    from registry.signing import keygen
    from services import signing_connection
    signing = keygen(str(tmp / "keys" / "release.pem"))

    home = tmp / "airflow-home"
    home.mkdir()
    conn = {"conn_type": "aws", "login": seaweedfs.access_key, "password": seaweedfs.secret_key,
            "extra": {"endpoint_url": seaweedfs.endpoint, "region_name": "us-east-1"}}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_CONFIG")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=os.path.join(ROOT, "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=os.path.join(ROOT, "plugins"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite_url(str(home)),
               AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn), TFS_RELEASE_CONFIG=str(config),
               AIRFLOW_CONN_TFS_RELEASE_SIGNING=json.dumps(signing_connection(signing[0])))
    af = AirflowEnv(airflow_bin, str(home), env, training, serving, str(config))
    af.signing = signing
    migrated_home(home, migrated_db)
    af.s3 = s3
    af.env_secret = seaweedfs.secret_key
    return af


# The modules' `airflow standalone`: only the tests' own runs (no scheduled or checkpoint-event run
# on unpause: tests/e2e/test_checkpoint_event.py tests those), and each DAG file parsed at the start
# only: nothing a module does changes a DAG file or the config the DAGs read while its Airflow runs
# (callbacks still run at once: Airflow queues their file first). Re-parsing the three files every
# 30 s (Airflow's default, which `make airflow` keeps) costs ~0.05 of a core per running Airflow.
MANUAL_ONLY = {"TFS_RELEASE_SCHEDULES": "off", "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600"}


def airflow_conns(airflow_env, aws: dict | None = None) -> dict:
    """The connections an Airflow started on ``airflow_env``'s config needs: ``aws_default`` (``aws``, or
    the module's own) and ``tfs_release_signing`` (the config's ``signing_conn_id``: publish signs)."""
    return {"aws_default": aws or json.loads(airflow_env.env["AIRFLOW_CONN_AWS_DEFAULT"]),
            "tfs_release_signing": json.loads(airflow_env.env["AIRFLOW_CONN_TFS_RELEASE_SIGNING"])}


@pytest.fixture(scope="session")
def chromium():
    """(chromium, chromedriver) for the browser tests; missing: skip, or fail when CI=true (like the
    Docker engine)."""
    from tests.e2e.browser import find_chromium
    found = find_chromium()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no headless browser: {found}")
        pytest.skip(f"no headless browser: {found}")
    return found


@pytest.fixture(scope="module")
def standalone(airflow_env):
    """`airflow standalone` on the module's Airflow home, buckets and config (services.start_airflow);
    ``test_token`` is a bearer token for the REST API."""
    import services
    t0 = time.monotonic()
    # manual-only DAGs: these tests trigger their own runs; unpausing must not also start one for the
    # checkpoint already uploaded (the checkpoint watcher; tests/e2e/test_checkpoint_event.py tests it)
    af = services.start_airflow(airflow_env.home, config=airflow_env.config, conns=airflow_conns(airflow_env),
                                extra_env=MANUAL_ONLY)
    print(f"\nairflow standalone ready in {time.monotonic() - t0:.1f}s at {af.url} (log {af.log})")
    af.test_token = af.token()
    yield af
    af.stop()
