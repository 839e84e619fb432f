"""The process launcher's server environment is an allow-list (serving/launchers.py server_env):
a hand-made validator environment in, exactly the allowed part out."""
from serving.launchers import server_env

VALIDATOR_ENV = {
    "PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "TMPDIR": "/tmp",
    "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2", "STANDIN_LOG_LEVEL": "DEBUG",
    "AWS_ENDPOINT_URL": "http://s3", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_PROFILE": "p",
    "AIRFLOW__CORE__FERNET_KEY": "f", "AIRFLOW_CONN_X": "c", "TFS_RELEASE_CONFIG": "/c.yaml",
    "DOCKER_HOST": "unix:///d.sock", "PYTHONPATH": "/elsewhere", "SSL_CERT_FILE": "/ca.pem",
    "TFS_RELEASE_SERVING_TTL_S": "60",
}


def test_only_locale_paths_and_tuning_pass():
    assert server_env(VALIDATOR_ENV) == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "TMPDIR": "/tmp",
        "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2", "STANDIN_LOG_LEVEL": "DEBUG"}
