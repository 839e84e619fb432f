"""S3 plumbing: URIs, safe keys, a configured client, and ClientError -> typed errors.

Settings come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION); an Airflow hook can hand in an already configured client.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Iterator

import boto3
import botocore.config
import botocore.exceptions

from registry.errors import BadInput, StorageError

MAX_POOL = 32
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str  # no leading slash; "" or ends with "/" when it names a folder

    @classmethod
    def parse(cls, uri: str, *, folder: bool = True) -> "S3Uri":
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise BadInput(f"{uri!r} is not an s3:// URI: write it as s3://BUCKET/PREFIX/")
        rest = uri[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise BadInput(f"{uri!r} has no bucket name: write it as s3://BUCKET/PREFIX/")
        if prefix:
            check_key(prefix, what=f"prefix of {uri!r}")
        if folder and prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(bucket, prefix)

    def join(self, *parts: str) -> "S3Uri":
        key = self.prefix + "/".join(p.strip("/") for p in parts if p)
        return S3Uri(self.bucket, key)

    def child(self, *parts: str) -> "S3Uri":
        """A sub-folder (trailing slash)."""
        u = self.join(*parts)
        return S3Uri(u.bucket, u.prefix if u.prefix.endswith("/") else u.prefix + "/")

    @property
    def key(self) -> str:
        return self.prefix

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def check_key(key: str, *, what: str = "key") -> str:
    """Refuse keys that could escape a prefix or a local folder: '..', '.', absolute, empty parts,
    backslashes and NUL. Returns the key unchanged."""
    if not key:
        raise BadInput(f"empty {what}")
    problems = []
    if key.startswith("/"):
        problems.append("it is absolute (starts with '/')")
    if "\\" in key or "\x00" in key:
        problems.append("it contains a backslash or NUL byte")
    parts = key.rstrip("/").split("/")
    if any(p in ("..", ".") for p in parts):
        problems.append("it contains a '.' or '..' path segment")
    if any(p == "" for p in parts):
        problems.append("it contains an empty path segment ('//')")
    if problems:
        raise BadInput(f"refusing {what} {key!r}: {'; '.join(problems)}. "
                       "Rename the object so its key is a plain relative path.")
    return key


def local_path_for(root: str, relative_key: str) -> str:
    """Where ``relative_key`` lands under ``root``; raises if it would land outside it."""
    check_key(relative_key)
    root_abs = os.path.realpath(root)
    dest = os.path.realpath(os.path.join(root_abs, *relative_key.split("/")))
    if os.path.commonpath([root_abs, dest]) != root_abs:
        raise BadInput(f"refusing key {relative_key!r}: it would be written outside {root}")
    return dest


def make_client(max_pool: int = MAX_POOL, **overrides):
    """A boto3 S3 client from the standard AWS environment variables.

    Path-style addressing (S3-compatible servers), checksums only when required (faster, the
    registry verifies its own sha256), a connection pool big enough for parallel transfers.
    """
    cfg = botocore.config.Config(
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        signature_version="s3v4",
        max_pool_connections=max_pool,
        retries={"max_attempts": 5, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=120,
    )
    session = boto3.session.Session()
    kwargs = {"config": cfg}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        kwargs["region_name"] = "us-east-1"
    kwargs.update(overrides)
    return session.client("s3", **kwargs)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    if isinstance(exc, botocore.exceptions.ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidSecurity"}


def translate(exc: BaseException, *, bucket: str = "", key: str = "") -> Exception:
    """A typed error for a botocore failure; never includes credentials."""
    where = f"s3://{bucket}/{key}" if bucket else "object storage"
    code = error_code(exc)
    status = http_status(exc)
    if code in _AUTH_CODES or status == 403:
        return StorageError(
            f"object storage refused the request for {where} ({code or status}): the credentials are "
            "wrong or lack permission. Check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the Airflow "
            "connection) and the bucket policy.")
    if code == "NoSuchBucket":
        return StorageError(f"bucket {bucket!r} does not exist at {os.environ.get('AWS_ENDPOINT_URL', 'the endpoint')}"
                            f": create it, or fix the bucket in config/models.yaml.")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectTimeoutError)):
        return StorageError(f"cannot reach object storage for {where}: {type(exc).__name__}. "
                            "Is AWS_ENDPOINT_URL right and the server running (make services)?")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "(or source .run/services.env).")
    return StorageError(f"object storage error for {where}: {code or type(exc).__name__} "
                        f"(HTTP {status or '?'})")


@contextlib.contextmanager
def s3_errors(bucket: str = "", key: str = "") -> Iterator[None]:
    """Turn botocore failures inside the block into typed, credential-free errors."""
    try:
        yield
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise translate(exc, bucket=bucket, key=key) from None


def list_objects(client, bucket: str, prefix: str, *, delimiter: str | None = None):
    """Yield object dicts (Key, Size, ETag, LastModified) under prefix, all pages."""
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    with s3_errors(bucket, prefix):
        for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
            yield from page.get("Contents", [])


def delete_prefix(client, bucket: str, prefix: str) -> int:
    """Delete every object under prefix (batches of 1000); returns how many."""
    keys = [o["Key"] for o in list_objects(client, bucket, prefix)]
    for i in range(0, len(keys), 1000):
        with s3_errors(bucket, prefix):
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                         "Quiet": True})
    return len(keys)


def list_folders(client, bucket: str, prefix: str) -> list[str]:
    """Immediate sub-folder names under prefix."""
    out = []
    with s3_errors(bucket, prefix):
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                out.append(cp["Prefix"][len(prefix):].rstrip("/"))
    return out


def check_bucket(client, bucket: str) -> None:
    """Fail early, clearly, when the bucket is missing or the credentials are wrong."""
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"bucket {bucket!r} does not exist: create it, or fix the bucket in "
                               "config/models.yaml.") from None
        raise translate(exc, bucket=bucket) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, bucket=bucket) from None


def get_bytes(client, bucket: str, key: str) -> bytes | None:
    """Small objects only (manifests, state files). None when absent."""
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise translate(exc, bucket=bucket, key=key) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, bucket=bucket, key=key) from None


def put_if_absent(client, bucket: str, key: str, body: bytes, content_type: str = "application/json") -> bool:
    """Create ``key`` only if nothing is there (If-None-Match: *). False on 412/409 (taken)."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", ContentType=content_type)
        return True
    except botocore.exceptions.ClientError as exc:
        if http_status(exc) in (412, 409) or error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise translate(exc, bucket=bucket, key=key) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, bucket=bucket, key=key) from None


_PROBED: set[tuple[str, str]] = set()
_PROBE_LOCK = threading.Lock()


def require_conditional_writes(client, bucket: str, prefix: str) -> None:
    """Refuse (StorageError, exit 2) a store that ignores ``If-None-Match: *``: there, two runs could
    both "create" the same claim and take one version number. Probed once per endpoint and bucket
    in this process: create a scratch key under ``prefix``, create it again (must be refused with
    412/409), delete it."""
    where = (str(getattr(client.meta, "endpoint_url", "")), bucket)
    with _PROBE_LOCK:
        if where in _PROBED:
            return
        key = f"{prefix}.conditional-write-probe-{uuid.uuid4().hex}"
        try:
            first = put_if_absent(client, bucket, key, b"{}")
            second = put_if_absent(client, bucket, key, b"{}") if first else None
        finally:
            with s3_errors(bucket, key):
                client.delete_object(Bucket=bucket, Key=key)
        if not first or second:
            raise StorageError(
                f"object storage at {where[0] or 'the endpoint'} ignores conditional writes "
                f"(If-None-Match: *) for bucket {bucket!r}: a second create of s3://{bucket}/{key} "
                f"{'succeeded' if second else 'was refused before the first'}. Two publishes could then "
                "take the same version number, so publishing refuses. Use a store (or gateway) that "
                "honours If-None-Match on PUT (AWS S3, SeaweedFS, MinIO since 2024).")
        _PROBED.add(where)
        log.info("s3://%s supports conditional writes (If-None-Match probe)", bucket)
