"""docker-compose.yaml and its local override: `docker compose config -q` passes (offline, no
engine needed), and the stack's invariants hold: a health check on every long-running service,
named volumes only (plus the engine socket), no secret written in a file, ports on 127.0.0.1,
and the local override never pulls."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from deploy import compose as compose_mod
from tests.conftest import ROOT

DEFAULT, LOCAL = compose_mod.DEFAULT_FILE, compose_mod.LOCAL_FILE
ENV_EXAMPLE = os.path.join(ROOT, ".env.example")
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_API_SECRET_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_PIPELINE_ACCESS_KEY",
           "S3_PIPELINE_SECRET_KEY", "S3_SYNC_ACCESS_KEY", "S3_SYNC_SECRET_KEY", "S3_RELAY_ACCESS_KEY",
           "S3_RELAY_SECRET_KEY", "SIGNING_KEY_PEM_B64", "CHECKPOINT_RELAY_TOKEN")
SECRET_KEY_RE = re.compile(r"(PASSWORD|SECRET|_KEY|TOKEN|WEBHOOK)", re.I)
# settings whose name says webhook but which hold no secret (the store's notification target)
NOT_SECRET_RE = re.compile(r"^MINIO_NOTIFY_WEBHOOK_(ENABLE|ENDPOINT|QUEUE_DIR)_")


@pytest.fixture(scope="module")
def compose():
    if not shutil.which("docker"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no docker CLI (bin/system-deps installs docker.io)")
        pytest.skip("no docker CLI")
    compose_mod.ensure_plugin()

    def run(*files, env_file=ENV_EXAMPLE, args=("config", "-q"), profiles=()):
        cmd = ["docker", "compose", "--project-directory", ROOT, "--env-file", env_file]
        for f in files:
            cmd += ["-f", f]
        for p in profiles:
            cmd += ["--profile", p]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSR_", "S3_", "POSTGRES_", "AIRFLOW_"))}
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    return run


def merged(compose, *files, profiles=("celery",)) -> dict:
    p = compose(*files, args=("config", "--format", "json"), profiles=profiles)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("files", [(DEFAULT,), (DEFAULT, LOCAL)], ids=["default", "default+local"])
def test_config_quiet_passes(compose, files):
    p = compose(*files)
    assert p.returncode == 0, p.stderr
    p = compose(*files, profiles=("celery",))
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "S3_SECRET_KEY", "AIRFLOW_JWT_SECRET", "DOCKER_GID",
                                     "S3_PIPELINE_SECRET_KEY", "S3_SYNC_ACCESS_KEY"])
def test_missing_secret_is_named(compose, tmp_path, missing):
    env = tmp_path / "env"
    lines = [ln for ln in open(ENV_EXAMPLE).read().splitlines() if not ln.startswith(f"{missing}=")]
    env.write_text("\n".join(lines) + "\n")
    p = compose(DEFAULT, env_file=str(env))
    assert p.returncode != 0
    assert missing in p.stderr


@pytest.mark.parametrize("files", [(DEFAULT,), (DEFAULT, LOCAL)], ids=["default", "default+local"])
def test_health_checks_volumes_ports(compose, files):
    cfg = merged(compose, *files)
    services = cfg["services"]
    assert {"postgres", "s3", "s3-init", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "serving", "model-sync"} <= set(services)
    for name, svc in services.items():
        one_shot = svc.get("restart", "no") == "no"
        if not one_shot:
            hc = svc.get("healthcheck")
            assert hc and hc.get("test") and not hc.get("disable"), f"{name}: no health check"
        for port in svc.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: port {port} not bound to 127.0.0.1"
        for vol in svc.get("volumes", []):
            if vol["type"] == "bind":  # only the engine socket (the scheduler starts step containers)
                assert vol["target"] == "/var/run/docker.sock", f"{name}: bind mount {vol}"
            else:
                assert vol["type"] == "volume" and vol["source"] in cfg["volumes"], f"{name}: {vol}"
    # the API server's check covers the execution API the tasks call (and warms it before the first task)
    api_check = " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "/api/v2/monitor/health" in api_check and "/execution/health" in api_check
    # the serving volume: written by the sync sidecar only, read-only for TF Serving
    serving = {v["target"]: v for v in services["serving"]["volumes"]}
    sync = {v["target"]: v for v in services["model-sync"]["volumes"]}
    assert serving["/models"]["source"] == sync["/models"]["source"] == "models"
    assert serving["/models"].get("read_only") and not sync["/models"].get("read_only")
    # one TF Serving for every model: the sidecar syncs them all into its root and writes the model
    # config file TF Serving reads there; TF Serving starts only once that file exists
    cmd, hc = services["model-sync"]["command"], services["model-sync"]["healthcheck"]["test"]
    root = cmd[cmd.index("--root") + 1]
    assert cmd[0] == "sync-all" and root == "/models" and "--serving-url" in cmd
    assert f"--model_config_file={root}/models.config" in services["serving"]["command"]
    assert "--allow_version_labels_for_unavailable_models=true" in services["serving"]["command"]
    assert services["serving"]["depends_on"]["model-sync"]["condition"] == "service_healthy"
    # its health check reads the health file the sync writes into its root
    assert hc[1:3] == ["tfs-release", "sync-health"] and hc[hc.index("--dest") + 1] == root
    # the sidecar reads the same overlay (rollout, production) as Airflow
    assert (services["model-sync"]["environment"]["TFS_RELEASE_CONFIG_OVERLAY"]
            == services["airflow-scheduler"]["environment"]["TFS_RELEASE_CONFIG_OVERLAY"])
    # the one-shots gate the services that need them
    assert services["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["model-sync"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    env = services["airflow-scheduler"]["environment"]
    assert env["TFS_RELEASE_STEP_IMAGE"] == services["model-sync"]["image"]
    assert env["TFS_RELEASE_STEP_NETWORK"] == cfg["networks"]["default"]["name"]


def test_public_defaults(compose):
    services = merged(compose, DEFAULT)["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["s3"]["image"].startswith("minio/minio")
    assert services["s3-init"]["image"].startswith("minio/mc")
    assert services["serving"]["image"].startswith("tensorflow/serving")
    assert services["airflow-scheduler"]["build"]["args"]["BASE"].startswith("apache/airflow:3.3.")
    assert services["model-sync"]["build"]["args"]["BASE"] == "python:3.11-slim"
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # SQLAlchemy 2.1 (Airflow 3.3) defaults postgresql:// to psycopg 3: name the driver the images have
    assert services["airflow-worker"]["environment"]["AIRFLOW__CELERY__RESULT_BACKEND"].startswith(
        "db+postgresql+psycopg2://")


def test_local_override_never_pulls(compose):
    services = merged(compose, DEFAULT, LOCAL)["services"]
    assert {"redis", "airflow-worker"} <= services.keys()  # the celery profile is built here too
    for name, svc in services.items():
        assert svc.get("pull_policy") == "never", name
        assert "build" not in svc, f"{name}: local images come from deploy/local_images.py"
        assert svc["image"].startswith("tfs-release/"), f"{name}: {svc['image']} is not a local image"
    assert services["serving"]["image"].startswith("tfs-release/standin")


def _raw_env_values(path):
    """Every environment value as written in the file (before interpolation)."""
    with open(path) as fh:
        doc = yaml.safe_load(fh.read().replace("!reset", ""))
    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "environment" and isinstance(v, dict):
                    found.extend((ek, ev) for ek, ev in v.items() if ek != "<<")
                walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)
    walk(doc)
    return found


@pytest.mark.parametrize("path", [DEFAULT, LOCAL], ids=["default", "local"])
def test_no_secret_literal_in_compose_files(path):
    env = _raw_env_values(path)
    assert env
    for key, value in env:
        if SECRET_KEY_RE.search(key) and not key.endswith("_FILE") and not NOT_SECRET_RE.search(key):
            assert isinstance(value, str) and "${" in value, f"{key}: {value!r} is not taken from the environment"
            literal = re.sub(r"\$\{[^}]*\}", "", value)
            assert not re.search(r"[:@/]\w{8,}@", literal), f"{key}: literal credential in {value!r}"
    text = open(path).read()
    for secret in SECRETS:  # a secret variable is only ever referenced
        for m in re.finditer(rf"(?<![{{\w]){secret}\s*[:=]\s*(\S+)", text):
            assert m.group(1).startswith(("${", '"${')), f"{secret} set to a literal in {path}"


def test_env_example_holds_placeholders_only():
    values = compose_mod.read_env_file(ENV_EXAMPLE)
    for secret in SECRETS:
        assert secret in values, f".env.example lacks {secret}"
        assert values[secret] == "change-me", f"{secret} in .env.example must be a placeholder"
    assert not values.get("SLACK_WEBHOOK_URL") and not values.get("SMTP_PASSWORD")


def distinct_env(tmp_path) -> tuple[str, dict[str, str]]:
    """.env.example with a different, recognisable value for every secret."""
    values = {k: f"value-of-{k.lower().replace('_', '-')}" for k in SECRETS}
    lines = [f"{ln.split('=', 1)[0]}={values[ln.split('=', 1)[0]]}" if ln.split("=", 1)[0] in values else ln
             for ln in open(ENV_EXAMPLE).read().splitlines()]
    path = tmp_path / "env"
    path.write_text("\n".join(lines) + "\n")
    return str(path), values


@pytest.mark.parametrize("files", [(DEFAULT,), (DEFAULT, LOCAL)], ids=["default", "default+local"])
def test_each_service_has_its_own_storage_identity_and_no_root_keys(compose, tmp_path, files):
    env_file, values = distinct_env(tmp_path)
    p = compose(*files, env_file=env_file, args=("config", "--format", "json"), profiles=("celery",))
    assert p.returncode == 0, p.stderr
    services = json.loads(p.stdout)["services"]

    def holders(key: str) -> set[str]:
        return {name for name, svc in services.items() if values[key] in json.dumps(svc)}
    assert holders("S3_SECRET_KEY") == {"s3", "s3-init"}, "the store's root keys: the store and its init only"
    assert holders("S3_PIPELINE_SECRET_KEY") <= {"s3", "s3-init", "airflow-init"}
    assert "airflow-init" in holders("S3_PIPELINE_SECRET_KEY")  # -> the aws_default connection
    assert holders("S3_SYNC_SECRET_KEY") <= {"s3", "s3-init", "model-sync"}
    assert holders("S3_RELAY_SECRET_KEY") <= {"s3", "s3-init", "checkpoint-relay"}
    relay_env = services["checkpoint-relay"]["environment"]
    assert (relay_env["AWS_ACCESS_KEY_ID"], relay_env["AWS_SECRET_ACCESS_KEY"]) == (
        values["S3_RELAY_ACCESS_KEY"], values["S3_RELAY_SECRET_KEY"])
    sync_env = services["model-sync"]["environment"]
    assert (sync_env["AWS_ACCESS_KEY_ID"], sync_env["AWS_SECRET_ACCESS_KEY"]) == (
        values["S3_SYNC_ACCESS_KEY"], values["S3_SYNC_SECRET_KEY"])
    init_env = services["airflow-init"]["environment"]
    assert init_env["S3_PIPELINE_ACCESS_KEY"] == values["S3_PIPELINE_ACCESS_KEY"]
    assert "S3_ACCESS_KEY" not in init_env and "S3_SECRET_KEY" not in init_env


def test_minio_policies_are_the_identities_module(compose):
    from deploy.storage_identities import minio_policies
    cfg = merged(compose, DEFAULT)
    want = minio_policies("training", "serving")
    assert json.loads(cfg["configs"]["s3-pipeline-policy"]["content"]) == want["pipeline"]
    assert json.loads(cfg["configs"]["s3-sync-policy"]["content"]) == want["sync"]
    assert json.loads(cfg["configs"]["s3-relay-policy"]["content"]) == want["relay"]
    targets = {c["source"]: c["target"] for c in cfg["services"]["s3-init"]["configs"]}
    assert targets == {"s3-pipeline-policy": "/run/policies/pipeline.json",
                       "s3-sync-policy": "/run/policies/sync.json", "s3-relay-policy": "/run/policies/relay.json"}
    assert "/run/policies/$$who.json" in cfg["services"]["s3-init"]["command"][0]  # compose keeps $$
