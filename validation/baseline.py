"""Which version does production serve, and its files for the regression gate.

The baseline is what production TF Serving answers with now: when the model's config names
production endpoints (``production: {endpoints: [{rest: http://tf-serving:8501}, ...]}``), the highest version
they report AVAILABLE (the one TF Serving's *latest* policy serves); when none answers, or the
config names none, the newest committed version in the registry (what the sync sidecars serve once
they caught up). A version production reports that the registry does not hold is an error: the gate
cannot compare with files it cannot read.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error

from registry import layout, manifest
from registry.errors import BadInput
from registry.s3 import S3Uri, local_path_for, s3_errors
from registry.transfer import RemoteFile, download_files

log = logging.getLogger(__name__)


def production_version(endpoints: list[str], model: str, *, timeout: float = 5.0,
                       auth=None) -> tuple[int, str] | None:
    """(highest AVAILABLE version, endpoint) over the endpoints that answer; None when none does.
    ``auth``: the endpoints' credentials and TLS (default: TFS_RELEASE_PRODUCTION_AUTH)."""
    from validation.endpoint_auth import EndpointAuth
    auth = EndpointAuth.from_env() if auth is None else auth
    best = None
    for url in endpoints:
        status = f"{url.rstrip('/')}/v1/models/{model}"
        try:
            with auth.urlopen(status, timeout=timeout) as r:
                body = json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError) as exc:
            hint = (" (it wants credentials: production.conn_id)"
                    if isinstance(exc, urllib.error.HTTPError) and exc.code in (401, 403) else "")
            log.warning("production endpoint %s did not answer (%s)%s; trying the next / the registry", status,
                        exc, hint)
            continue
        avail = [int(v["version"]) for v in body.get("model_version_status", []) if v.get("state") == "AVAILABLE"]
        if avail and (best is None or max(avail) > best[0]):
            best = (max(avail), url)
    return best


def resolve(client, serving: S3Uri, model: str, endpoints: list[str] | None = None) -> dict | None:
    """{version, source, manifest} of the baseline, or None for a model with no committed version."""
    state = layout.scan(client, serving)
    committed = sorted(set(state.manifests) - set(state.tombstones))
    source, n = "registry", (committed[-1] if committed else None)
    if endpoints:
        found = production_version(endpoints, model)
        if found is not None:
            n, source = found[0], f"production {found[1]}"
            if n not in committed:
                raise BadInput(f"production ({found[1]}) serves {model} version {n}, but s3://{serving.bucket}/"
                               f"{serving.prefix} holds no committed version {n} (committed: {committed or 'none'}): "
                               "the regression gate cannot read the baseline. Check the model's serving bucket "
                               "in the config, or the production endpoints.")
    if n is None:
        return None
    key = layout.manifest_key(serving, n)
    with s3_errors(serving.bucket, key):
        raw = client.get_object(Bucket=serving.bucket, Key=key)["Body"].read()
    m = manifest.parse(raw, where=f"s3://{serving.bucket}/{key}")
    return {"version": n, "source": source, "manifest": m,
            "checkpoint": (m.get("source_checkpoint") or {}).get("uri")}


def download(client, serving: S3Uri, base: dict, dest: str) -> str:
    """The baseline's SavedModel into ``dest`` (verified against its manifest's sizes and sha256)."""
    prefix = layout.version_prefix(serving, base["version"])
    files = [RemoteFile(key=prefix + f["path"], dest=local_path_for(dest, f["path"]), size=f["size"],
                        sha256=f["sha256"]) for f in base["manifest"]["files"]]
    os.makedirs(dest, exist_ok=True)
    download_files(client, serving.bucket, files)
    return dest
