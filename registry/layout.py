"""Where things live under s3://<serving>/<model>/ (DESIGN.md "Object storage layout"), and the
listings every registry command starts from."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from registry.s3 import S3Uri, get_bytes, list_folders, list_objects, s3_errors

STAGING = "_staging/"
REPORTS = "_reports/"
CLAIMS = "_claims/"
MANIFESTS = "_manifests/"
TOMBSTONES = "_tombstones/"
ROLLOUTS = "_rollouts/"            # what production did with version N (production/lifecycle.py)
SIGNATURES = "_signatures/"        # <N>.sig: the signed statement over N's files and manifest (registry/signing.py)
SAVED_MODEL = "saved_model/"       # SavedModel files inside a staged candidate
CANDIDATE_JSON = "candidate.json"  # written last by staging: the candidate is complete
_NUM = re.compile(r"^[1-9][0-9]{0,17}$")


def is_version(name: str) -> bool:
    return bool(_NUM.match(name))


def version_prefix(serving: S3Uri, n: int) -> str:
    return f"{serving.prefix}{n}/"


def rollout_key(serving: S3Uri, n: int) -> str:
    return f"{serving.prefix}{ROLLOUTS}{n}.json"


def manifest_key(serving: S3Uri, n: int) -> str:
    return f"{serving.prefix}{MANIFESTS}{n}.json"


def signature_key(serving: S3Uri, n: int) -> str:
    return f"{serving.prefix}{SIGNATURES}{n}.sig"


def claim_key(serving: S3Uri, n: int) -> str:
    return f"{serving.prefix}{CLAIMS}{n}"


def tombstone_key(serving: S3Uri, n: int) -> str:
    return f"{serving.prefix}{TOMBSTONES}{n}.json"


def _numbers(client, bucket: str, prefix: str, suffix: str = "") -> dict[int, dict]:
    out = {}
    for obj in list_objects(client, bucket, prefix):
        name = obj["Key"][len(prefix):]
        if suffix:
            if not name.endswith(suffix):
                continue
            name = name[: -len(suffix)]
        if is_version(name):
            out[int(name)] = obj
    return out


@dataclass
class State:
    """One listing of a model's serving prefix."""
    manifests: dict[int, dict] = field(default_factory=dict)   # N -> list entry of the manifest
    claims: dict[int, dict] = field(default_factory=dict)
    tombstones: dict[int, dict] = field(default_factory=dict)
    folders: set[int] = field(default_factory=set)

    @property
    def highest_number(self) -> int:
        return max([0, *self.manifests, *self.claims, *self.tombstones, *self.folders])


def scan(client, serving: S3Uri) -> State:
    b, p = serving.bucket, serving.prefix
    return State(
        manifests=_numbers(client, b, p + MANIFESTS, ".json"),
        claims=_numbers(client, b, p + CLAIMS),
        tombstones=_numbers(client, b, p + TOMBSTONES, ".json"),
        folders={int(f) for f in list_folders(client, b, p)
                 if is_version(f) and _has_objects(client, b, f"{p}{f}/")},
    )


def scan_committed(client, serving: S3Uri) -> State:
    """What is committed and what is retired, nothing else: the manifests and the tombstones (two
    paginated listings, whatever the number of versions). Enough for whoever only reads versions
    (the sync sidecar, "is this checkpoint published?"); claims and version folders (numbering,
    orphans) need ``scan``, which lists each version folder."""
    b, p = serving.bucket, serving.prefix
    return State(manifests=_numbers(client, b, p + MANIFESTS, ".json"),
                 tombstones=_numbers(client, b, p + TOMBSTONES, ".json"))


def _has_objects(client, bucket: str, prefix: str) -> bool:
    """Some servers (SeaweedFS) keep empty folders after their objects are deleted."""
    with s3_errors(bucket, prefix):
        return client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0


def read_json(client, bucket: str, key: str) -> dict | None:
    raw = get_bytes(client, bucket, key)
    return None if raw is None else json.loads(raw)
