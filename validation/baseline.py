"""The regression gate's baseline files: which version to compare with is production's call
(production/baseline.py chooses it); this reads its manifest and downloads it.
"""
from __future__ import annotations

import os

from registry import layout, manifest
from registry.errors import BadInput
from registry.s3 import S3Uri, local_path_for, s3_errors
from registry.transfer import RemoteFile, download_files


def load(client, serving: S3Uri, model: str, choice: dict | None) -> dict | None:
    """{version, source, manifest, checkpoint} of the chosen baseline ({version, source}), or None.
    A version the registry does not hold is an error: the gate cannot compare with files it cannot read."""
    if choice is None:
        return None
    n = choice["version"]
    state = layout.scan(client, serving)
    committed = sorted(set(state.manifests) - set(state.tombstones))
    if n not in committed:
        raise BadInput(f"{choice['source']} serves {model} version {n}, but s3://{serving.bucket}/{serving.prefix} "
                       f"holds no committed version {n} (committed: {committed or 'none'}): the regression gate "
                       "cannot read the baseline. Check the model's serving bucket in the config, or the "
                       "production endpoints.")
    key = layout.manifest_key(serving, n)
    with s3_errors(serving.bucket, key):
        raw = client.get_object(Bucket=serving.bucket, Key=key)["Body"].read()
    m = manifest.parse(raw, where=f"s3://{serving.bucket}/{key}")
    return {"version": n, "source": choice["source"], "manifest": m,
            "checkpoint": (m.get("source_checkpoint") or {}).get("uri")}


def download(client, serving: S3Uri, base: dict, dest: str) -> str:
    """The baseline's SavedModel into ``dest`` (verified against its manifest's sizes and sha256)."""
    prefix = layout.version_prefix(serving, base["version"])
    files = [RemoteFile(key=prefix + f["path"], dest=local_path_for(dest, f["path"]), size=f["size"],
                        sha256=f["sha256"]) for f in base["manifest"]["files"]]
    os.makedirs(dest, exist_ok=True)
    download_files(client, serving.bucket, files)
    return dest
