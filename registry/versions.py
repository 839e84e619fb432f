"""Published versions: listing with lineage, verification, orphans, retention."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from registry import index, layout, manifest
from registry.errors import BadInput
from registry.s3 import S3Uri, check_bucket, delete_prefix, get_bytes, list_objects, s3_errors

log = logging.getLogger(__name__)


def load_manifests(client, serving: S3Uri, state: layout.State | None = None) -> dict[int, dict]:
    state = state or layout.scan(client, serving)

    def read(n):
        key = layout.manifest_key(serving, n)
        with s3_errors(serving.bucket, key):
            raw = client.get_object(Bucket=serving.bucket, Key=key)["Body"].read()
        return n, manifest.parse(raw, where=f"s3://{serving.bucket}/{key}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(read, sorted(state.manifests)))


def load_tombstones(client, serving: S3Uri, state: layout.State | None = None) -> dict[int, dict]:
    """N -> tombstone body (``{}`` when unreadable): why N was retired, and since retention records
    it, the lineage of the version it retired."""
    state = state or layout.scan(client, serving)

    def read(n):
        try:
            body = layout.read_json(client, serving.bucket, layout.tombstone_key(serving, n))
        except ValueError:
            body = None
        return n, body if isinstance(body, dict) else {}

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(read, sorted(state.tombstones)))


def load_rollouts(client, serving: S3Uri) -> dict[int, dict]:
    """N -> what production did with N (``_rollouts/N.json``; production/lifecycle.py)."""
    keys = [o["Key"] for o in list_objects(client, serving.bucket, serving.prefix + layout.ROLLOUTS)
            if o["Key"].endswith(".json")]

    def read(key):
        name = key.rsplit("/", 1)[-1][:-len(".json")]
        try:
            body = layout.read_json(client, serving.bucket, key)
        except ValueError:
            body = None
        return (int(name), body if isinstance(body, dict) else {}) if layout.is_version(name) else (None, None)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {n: b for n, b in pool.map(read, keys) if n is not None}


def list_versions(client, serving: S3Uri) -> list[dict]:
    """Committed versions, oldest first, with where each came from and what production did with it."""
    check_bucket(client, serving.bucket)
    out = []
    rollouts = load_rollouts(client, serving)
    for n, m in sorted(load_manifests(client, serving).items()):
        src = m.get("source_checkpoint") or {}
        out.append({
            "version": n, "created": m.get("created"), "run_id": m.get("run_id"),
            "checkpoint": src.get("uri"), "step": src.get("step"),
            "rollback_of": m.get("rollback_of"),
            "rollout": (rollouts.get(n) or {}).get("outcome"),
            "verdict": (m.get("validation") or {}).get("verdict"),
            "report": (m.get("validation") or {}).get("report"),
            "files": len(m["files"]), "bytes": sum(f["size"] for f in m["files"]),
            "signed_by": (m.get("signed_by") or {}).get("key_id"),  # as the manifest says: `verify` checks it
            "uri": f"s3://{serving.bucket}/{layout.version_prefix(serving, n)}",
        })
    return out


@dataclass
class Verification:
    versions: list[int] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)
    in_progress: list[dict] = field(default_factory=list)
    signatures: dict[int, dict] = field(default_factory=dict)  # N -> {key_id, verified, key}

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "versions": self.versions, "problems": self.problems,
                "orphans": self.orphans, "in_progress": self.in_progress, "signatures": self.signatures}


def _age_seconds(obj: dict) -> float:
    return (_dt.datetime.now(_dt.timezone.utc) - obj["LastModified"]).total_seconds()


def _hash_object(client, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    with s3_errors(bucket, key):
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_signature(client, serving: S3Uri, n: int, m: dict, trusted, v: Verification) -> None:
    """Who signed N: the bundle's key id; verified against ``trusted`` keys when there are any."""
    import json as _json
    sig_key = layout.signature_key(serving, n)
    raw_sig = get_bytes(client, serving.bucket, sig_key)
    hint = None
    if raw_sig is not None:
        try:
            hint = _json.loads(raw_sig)["verificationMaterial"]["publicKey"]["hint"]
        except (ValueError, KeyError, TypeError):
            hint = None
    entry = {"key_id": hint, "signed": raw_sig is not None, "verified": False}
    if trusted:
        from registry.signing import SignatureError
        raw = get_bytes(client, serving.bucket, layout.manifest_key(serving, n))
        try:
            ok = trusted.verify(raw_sig, model=m.get("model"), n=n, files=m["files"], manifest_raw=raw or b"",
                                where=f"s3://{serving.bucket}/{sig_key}")
            entry.update(verified=True, key=ok.key_source)
        except SignatureError as exc:
            v.problems.append({"version": n, "path": layout.SIGNATURES + f"{n}.sig", "problem": str(exc)})
    v.signatures[n] = entry


def verify(client, serving: S3Uri, *, deep: bool = False, grace_seconds: float = 3600,
           trusted=None) -> Verification:
    """Check every committed version against its manifest (sizes; sha256 too when ``deep``) and
    find orphans: a ``<N>/`` without manifest, or a claim older than ``grace_seconds`` whose run
    never committed. Younger claims are reported as in progress, not as orphans. Signatures: who
    signed each version; with ``trusted`` keys (registry/signing.py) a version without a valid
    signature by one of them is a problem."""
    check_bucket(client, serving.bucket)
    state = layout.scan(client, serving)
    manifests = load_manifests(client, serving, state)
    v = Verification(versions=sorted(manifests))
    for n, m in sorted(manifests.items()):
        _check_signature(client, serving, n, m, trusted, v)
        prefix = layout.version_prefix(serving, n)
        stored = {o["Key"][len(prefix):]: o for o in list_objects(client, serving.bucket, prefix)}
        expected = {f["path"]: f for f in m["files"]}
        for path, f in expected.items():
            o = stored.get(path)
            if o is None:
                v.problems.append({"version": n, "path": path, "problem": "missing"})
            elif o["Size"] != f["size"]:
                v.problems.append({"version": n, "path": path,
                                   "problem": f"size {o['Size']} != manifest {f['size']}"})
            elif deep:
                sha = _hash_object(client, serving.bucket, prefix + path)
                if sha != f["sha256"]:
                    v.problems.append({"version": n, "path": path, "problem": f"sha256 {sha} != manifest"})
        for path in sorted(set(stored) - set(expected)):
            v.problems.append({"version": n, "path": path, "problem": "not in the manifest"})
    for n in sorted(state.folders - set(manifests)):
        v.orphans.append({"version": n, "kind": "version without manifest",
                          "uri": f"s3://{serving.bucket}/{layout.version_prefix(serving, n)}",
                          "claimed": n in state.claims})
    for n, obj in sorted(state.claims.items()):
        if n in manifests or n in state.tombstones or n in state.folders:
            continue
        entry = {"version": n, "kind": "claim without version",
                 "uri": f"s3://{serving.bucket}/{layout.claim_key(serving, n)}"}
        (v.orphans if _age_seconds(obj) >= grace_seconds else v.in_progress).append(entry)
    # a version folder whose claim is young may be a publish in progress
    young = {n for n, o in state.claims.items() if _age_seconds(o) < grace_seconds}
    v.in_progress += [o for o in v.orphans if o["kind"] == "version without manifest" and o["version"] in young]
    v.orphans = [o for o in v.orphans if not (o["kind"] == "version without manifest" and o["version"] in young)]
    return v


def _tombstone(client, serving: S3Uri, n: int, reason: str, lineage: dict | None = None) -> None:
    key = layout.tombstone_key(serving, n)
    body = {"version": n, "reason": reason, "time": manifest.utc_now()}
    if lineage is not None:
        body["lineage"] = lineage
    with s3_errors(serving.bucket, key):
        client.put_object(Bucket=serving.bucket, Key=key, ContentType="application/json",
                          Body=json.dumps(body).encode())
    index.touch(client, serving, f"version {n} retired")


def _has_manifest(client, serving: S3Uri, n: int) -> bool:
    return next(iter(list_objects(client, serving.bucket, layout.manifest_key(serving, n))), None) is not None


def clean_orphans(client, serving: S3Uri, *, grace_seconds: float = 3600) -> list[dict]:
    """Remove what `verify` reports as orphans (older than the grace period). Claims stay, with a
    tombstone, so their numbers are never handed out again.

    A slow publish may still hold such a number: this writes the tombstone, then looks for a
    manifest; the publish writes its manifest, then looks for a tombstone (registry/publish.py
    ``commit``). If the manifest is there, the publish got in first: its files stay and the
    tombstone goes (if the publish saw it meanwhile, it withdrew its manifest and the number is
    an orphan again for the next clean-up)."""
    cleaned = []
    for o in verify(client, serving, grace_seconds=grace_seconds).orphans:
        n = o["version"]
        _tombstone(client, serving, n, "abandoned publish")
        if _has_manifest(client, serving, n):
            key = layout.tombstone_key(serving, n)
            with s3_errors(serving.bucket, key):
                client.delete_object(Bucket=serving.bucket, Key=key)
            log.warning("orphan %d was committed by a slow publish while cleaning: left alone", n)
            continue
        removed = delete_prefix(client, serving.bucket, layout.version_prefix(serving, n))
        with s3_errors(serving.bucket, layout.signature_key(serving, n)):  # signed, killed before its commit
            client.delete_object(Bucket=serving.bucket, Key=layout.signature_key(serving, n))
        cleaned.append({**o, "objects_removed": removed})
        log.info("cleaned orphan version %d (%s): %d objects removed", n, o["kind"], removed)
    return cleaned


def retention(client, serving: S3Uri, keep: int, *, protected: set[int] | frozenset = frozenset()) -> list[int]:
    """Keep the ``keep`` highest committed versions, never the newest, never a version that a kept
    manifest rolls back to, never one in ``protected`` (what production serves or would roll back
    to: production/lifecycle.py ``protected``). Uncommit first (tombstone, then manifest), then
    delete the files, so an interrupted run leaves an orphan, never a committed version with missing
    files."""
    if keep < 1:
        raise BadInput(f"--keep must be at least 1 (the newest version is always kept), got {keep}")
    manifests = load_manifests(client, serving)
    ordered = sorted(manifests)
    kept = set(ordered[-keep:])
    protected = set(protected) | {m.get("rollback_of") for n, m in manifests.items()
                                  if n in kept and m.get("rollback_of")}
    removed = []
    for n in ordered:
        if n in kept or n in protected:
            continue
        _tombstone(client, serving, n, f"retention keep={keep}", manifest.lineage(manifests[n]))
        for key in (layout.manifest_key(serving, n), layout.signature_key(serving, n)):
            with s3_errors(serving.bucket, key):
                client.delete_object(Bucket=serving.bucket, Key=key)
        delete_prefix(client, serving.bucket, layout.version_prefix(serving, n))
        removed.append(n)
        log.info("retention removed version %d (keeping %d)", n, keep)
    return removed


def published_from(client, serving: S3Uri, checkpoint_uri: str, files: list[dict]) -> int | None:
    """The version exported from exactly this checkpoint (same uri, same file ETags), or None.
    Rollbacks don't count: they copy an older export. A version retired by retention still counts
    (its tombstone keeps the lineage): a checkpoint that production was rolled back from is not
    released again once retention has removed its version."""
    want = {f["key"]: f.get("etag") for f in files}

    def same(rec: dict) -> bool:
        src = rec.get("source_checkpoint") or {}
        if rec.get("rollback_of") or src.get("uri") != checkpoint_uri:
            return False
        return {f["key"]: f.get("etag") for f in src.get("files") or []} == want

    state = layout.scan_committed(client, serving)
    for n, m in sorted(load_manifests(client, serving, state).items(), reverse=True):
        if same(m):
            return n
    for n, t in sorted(load_tombstones(client, serving, state).items(), reverse=True):
        if same(t.get("lineage") or {}):
            log.info("%s was published as version %d, retired since (%s): it counts as published",
                     checkpoint_uri, n, t.get("reason"))
            return n
    return None
