"""What a step command (``tfs-release <step>`` as a subprocess of an Airflow task) may inherit from
the task's environment: an allow-list, not a deny-list.

An Airflow task process holds the deployment's secrets in its environment (``AIRFLOW__CORE__FERNET_KEY``,
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, ``AIRFLOW__API_AUTH__JWT_SECRET``, every ``AIRFLOW_CONN_*``
and ``AIRFLOW_VAR_*``) and possibly ambient cloud credentials (``AWS_PROFILE``, ``AWS_*``). A step
gets none of them: only what a program needs to run (paths, locale, temp folder, proxy and CA
settings), the project's own settings (``TFS_RELEASE_*``), the Docker client's (``DOCKER_*``: the
validate step starts its serving container), TensorFlow/BLAS tuning, pip's (``PIP_*``: the worker
env is built on first use), and the S3 settings of the model's Airflow connection, which the
caller passes in.

Stdlib only: importable at DAG parse time and testable without Airflow.
"""
from __future__ import annotations

import os

STEP_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CACHE_HOME",
    "PYTHON", "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE",  # bin/venv, output
    "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
# PIP_: bin/venv builds the worker env on first use (index and CA settings)
STEP_ENV_PREFIXES = ("LC_", "TFS_RELEASE_", "DOCKER_", "TF_", "OMP_", "KMP_", "MKL_", "STANDIN_", "PIP_")


# the signing key (registry/signing.py) reaches only the step that publishes, from its connection
# (``extra_env``), never from the task's own environment
STEP_ENV_DENIED = frozenset({"TFS_RELEASE_SIGNING_KEY", "TFS_RELEASE_SIGNING_KEY_FILE",
                             "TFS_RELEASE_SIGNING_KEY_PASSWORD"})


def allowed(name: str) -> bool:
    return name not in STEP_ENV_DENIED and (name in STEP_ENV_NAMES or name.startswith(STEP_ENV_PREFIXES))


def step_env(s3_env: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The step's environment: the allow-listed part of ``base`` (default: this process's), plus
    ``s3_env`` (the model's connection: ``AWS_ENDPOINT_URL``, keys, region)."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if allowed(k)}
    env.update(s3_env)
    return env
