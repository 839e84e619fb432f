"""The step command's environment is an allow-list (plugins/tfs_release_airflow/step_env.py): hand-made
task environments in, exactly the expected environment out."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "plugins"))

from tfs_release_airflow.step_env import step_env  # noqa: E402

TASK_ENV = {  # what an Airflow task process of the compose stack / a worker has
    "PATH": "/usr/bin:/bin", "HOME": "/home/airflow", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-secret", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://a:pw@db/af",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret", "AIRFLOW__API__SECRET_KEY": "api-secret",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW_CONN_AWS_DEFAULT": "aws://k:s@", "AIRFLOW_VAR_X": "v",
    "AIRFLOW_CTX_DAG_ID": "release__m", "AIRFLOW_HOME": "/opt/airflow", "_AIRFLOW_PROCESS_CONTEXT": "client",
    "AWS_PROFILE": "prod-admin", "AWS_ACCESS_KEY_ID": "ambient-key", "AWS_SECRET_ACCESS_KEY": "ambient-secret",
    "AWS_CA_BUNDLE": "/etc/ca.pem", "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost",
    "PYTHONPATH": "/opt/airflow/dags", "VIRTUAL_ENV": "/opt/airflow-venv", "PGPASSWORD": "pw",
    "TFS_RELEASE_CONFIG": "/cfg/models.yaml", "TFS_RELEASE_SERVING_NETWORK": "stack",
    "DOCKER_HOST": "unix:///var/run/docker.sock", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2",
    "SLACK_WEBHOOK_URL": "https://hooks/secret", "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
    "PIP_INDEX_URL": "https://mirror/simple",
    # a signing key in the task's own environment (e.g. `make services` sourced): no step inherits it
    "TFS_RELEASE_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----...", "TFS_RELEASE_SIGNING_KEY_FILE": "/keys/release.pem",
    "TFS_RELEASE_SIGNING_KEY_PASSWORD": "pw",
}
S3 = {"AWS_ENDPOINT_URL": "http://s3:9000", "AWS_ACCESS_KEY_ID": "pipeline-key",
      "AWS_SECRET_ACCESS_KEY": "pipeline-secret", "AWS_REGION": "us-east-1"}


def test_only_allow_listed_names_and_the_connections_s3_settings_pass():
    assert step_env(S3, base=TASK_ENV) == {
        "PATH": "/usr/bin:/bin", "HOME": "/home/airflow", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
        "AWS_CA_BUNDLE": "/etc/ca.pem", "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost",
        "TFS_RELEASE_CONFIG": "/cfg/models.yaml", "TFS_RELEASE_SERVING_NETWORK": "stack",
        "DOCKER_HOST": "unix:///var/run/docker.sock", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2",
        "PIP_INDEX_URL": "https://mirror/simple", **S3}


def test_ambient_aws_credentials_never_pass_even_without_a_connection_value():
    env = step_env({"AWS_ENDPOINT_URL": "http://s3:9000"}, base=TASK_ENV)
    assert not {"AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env.keys()


def test_no_airflow_setting_passes():
    assert not [k for k in step_env(S3, base=TASK_ENV) if "AIRFLOW" in k]


def test_the_signing_key_reaches_a_step_only_from_its_connection():
    """The key passes only as the caller's explicit extra environment (operators.py ``signing_env``,
    given to the confirm step alone): never inherited from the task's environment."""
    env = step_env(S3, base=TASK_ENV)
    assert not [k for k in env if k.startswith("TFS_RELEASE_SIGNING")]
    assert step_env({**S3, "TFS_RELEASE_SIGNING_KEY": "pem"}, base=TASK_ENV)["TFS_RELEASE_SIGNING_KEY"] == "pem"
