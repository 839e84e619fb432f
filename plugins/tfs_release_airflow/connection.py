"""S3 settings from an Airflow AWS connection: a boto3 client for ``registry/`` in light tasks, and
the standard AWS variables for a step command's environment (never its command line)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None
    region: str | None
    access_key: str | None = field(repr=False)
    secret_key: str | None = field(repr=False)
    token: str | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """AWS_* variables for a step command (the CLI's make_client reads them)."""
        pairs = {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_REGION": self.region,
                 "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                 "AWS_SESSION_TOKEN": self.token}
        return {k: v for k, v in pairs.items() if v}

    def client(self):
        """The registry's tuned S3 client (path style, checksums when required) with these settings."""
        from registry.s3 import make_client
        kw = {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key,
              "aws_session_token": self.token, "endpoint_url": self.endpoint_url,
              "region_name": self.region}
        return make_client(**{k: v for k, v in kw.items() if v})


def s3_settings(conn_id: str) -> S3Settings:
    """Resolve the connection through the amazon provider's hook (login/password, role, profile...)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    hook = S3Hook(aws_conn_id=conn_id)
    creds = hook.get_credentials()
    return S3Settings(endpoint_url=hook.conn_config.endpoint_url, region=hook.conn_region_name,
                      access_key=creds.access_key, secret_key=creds.secret_key, token=creds.token)


def signing_pem(conn_id: str | None) -> str | None:
    """The PEM private key in the Airflow connection a model's ``signing_conn_id`` names (its
    password, or extra ``private_key``; a secrets backend serves it like any connection), or None
    without one. Airflow masks connection passwords in task logs; callers never log or return it."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from registry.errors import BadInput
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and backend errors alike
        raise BadInput(f"the signing connection {conn_id!r} (config signing_conn_id) cannot be read ({exc}): "
                       "create it with the PEM private key as its password (`tfs-release keygen` makes one), "
                       "or remove signing_conn_id to publish unsigned.") from None
    pem = (conn.extra_dejson or {}).get("private_key") or conn.password
    if not pem or "PRIVATE KEY" not in pem:
        raise BadInput(f"the signing connection {conn_id!r} (config signing_conn_id) holds no PEM private key in "
                       "its password or extra 'private_key': set it to the key `tfs-release keygen` wrote.")
    from airflow.sdk.log import mask_secret
    mask_secret(pem)
    return pem


def signing_key(conn_id: str | None):
    """The registry's ``SigningKey`` from that connection, or None (registry/signing.py)."""
    pem = signing_pem(conn_id)
    if pem is None:
        return None
    from registry.signing import SigningKey
    return SigningKey.from_pem(pem.encode(), source=f"Airflow connection {conn_id!r}")


def signing_env(conn_id: str | None) -> dict[str, str]:
    """The key for the one step that may publish (``confirm``: its automatic rollback publishes a copy)."""
    from registry.signing import KEY_ENV
    pem = signing_pem(conn_id)
    return {KEY_ENV: pem} if pem else {}


def production_auth(conn_id: str | None):
    """The production endpoints' credentials and TLS from the Airflow connection a model's
    ``production.conn_id`` names (tfs_api/endpoint_auth.py); no credentials without one."""
    from tfs_api.endpoint_auth import NONE, EndpointAuth
    if not conn_id:
        return NONE
    from airflow.sdk import BaseHook
    conn = BaseHook.get_connection(conn_id)
    return EndpointAuth.from_connection(login=conn.login, password=conn.password, extra=conn.extra_dejson,
                                        where=f"Airflow connection {conn_id!r} (production.conn_id)")
