"""Publish a staged candidate as the next numeric version, atomically for every reader.

1. claim ``_claims/<N>`` with If-None-Match: * (on 412 another run holds N: take N+1);
2. server-side copy the staged files into ``<N>/``, ``saved_model.pb`` last;
3. verify every copy (size and the sha256 carried as object metadata);
4. write ``_manifests/<N>.json`` (also If-None-Match: *): only now is N published.

A run killed anywhere leaves at worst a claim and a partial ``<N>/`` without manifest: an orphan
that readers ignore, `verify` reports and `clean-orphans` removes. N is never reused and nothing
under a published ``<N>/`` is ever written again.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from registry import layout, manifest
from registry.errors import CandidateError, IntegrityError, VersionError
from registry.layout import SAVED_MODEL
from registry.s3 import S3Uri, check_bucket, put_if_absent, s3_errors
from registry.staging import read_candidate

log = logging.getLogger(__name__)
COPY_WORKERS = 8
MAX_SINGLE_COPY = 5 * 1024 ** 3


@dataclass
class Published:
    version: int
    manifest_uri: str
    uri: str
    seconds: float
    claim_attempts: int

    def to_json(self) -> dict:
        return {"version": self.version, "uri": self.uri, "manifest": self.manifest_uri,
                "seconds": round(self.seconds, 3), "claim_attempts": self.claim_attempts}


def claim_next(client, serving: S3Uri, run_id: str, *, max_attempts: int = 1000) -> tuple[int, int]:
    """Claim the next free version number; returns (N, attempts)."""
    n = layout.scan(client, serving).highest_number + 1
    body = json.dumps({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "claimed": manifest.utc_now()}).encode()
    for attempt in range(1, max_attempts + 1):
        if put_if_absent(client, serving.bucket, layout.claim_key(serving, n), body):
            return n, attempt
        log.info("version %d is claimed by another run (412); trying %d", n, n + 1)
        n += 1
    raise IntegrityError(f"could not claim a version after {max_attempts} attempts under {serving}")


def _copy(client, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, size: int) -> None:
    with s3_errors(dst_bucket, dst_key):
        source = {"Bucket": src_bucket, "Key": src_key}
        if size < MAX_SINGLE_COPY:
            client.copy_object(CopySource=source, Bucket=dst_bucket, Key=dst_key, MetadataDirective="COPY")
        else:
            client.copy(source, dst_bucket, dst_key)


def _verify_copy(client, bucket: str, key: str, f: dict) -> str | None:
    with s3_errors(bucket, key):
        head = client.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != f["size"]:
        return f"{f['path']}: {head['ContentLength']} bytes, expected {f['size']}"
    sha = head.get("Metadata", {}).get("sha256")
    if sha and sha != f["sha256"]:
        return f"{f['path']}: sha256 metadata {sha} != {f['sha256']}"
    return None


def copy_version(client, serving: S3Uri, n: int, src_bucket: str, src_prefix: str, files: list[dict]) -> None:
    """Copy ``files`` (paths relative to src_prefix) into <N>/, saved_model.pb last, then verify."""
    dst = layout.version_prefix(serving, n)
    first = [f for f in files if f["path"] != "saved_model.pb"]
    last = [f for f in files if f["path"] == "saved_model.pb"]
    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        list(pool.map(lambda f: _copy(client, src_bucket, src_prefix + f["path"], serving.bucket,
                                      dst + f["path"], f["size"]), first))
        for f in last:
            _copy(client, src_bucket, src_prefix + f["path"], serving.bucket, dst + f["path"], f["size"])
        problems = [p for p in pool.map(lambda f: _verify_copy(client, serving.bucket, dst + f["path"], f),
                                        files) if p]
    if problems:
        raise IntegrityError(f"copies under s3://{serving.bucket}/{dst} do not match the source "
                             f"({'; '.join(problems[:5])}); version {n} stays unpublished. Run again.")


def commit(client, serving: S3Uri, n: int, m: dict) -> str:
    key = layout.manifest_key(serving, n)
    if not put_if_absent(client, serving.bucket, key, manifest.dumps(m)):
        raise IntegrityError(f"manifest for version {n} already exists although this run claimed {n}: "
                             "someone wrote outside the claim protocol. Run `tfs-release verify`.")
    return f"s3://{serving.bucket}/{key}"


def publish_files(client, serving: S3Uri, model: str, *, run_id: str, src_bucket: str, src_prefix: str,
                  files: list[dict], candidate: dict, validation: dict, candidate_uri: str | None,
                  rollback_of: int | None = None) -> Published:
    t0 = time.monotonic()
    n, attempts = claim_next(client, serving, run_id)
    log.info("claimed version %d of %s after %d attempt(s)", n, model, attempts)
    copy_version(client, serving, n, src_bucket, src_prefix, files)
    m = manifest.build(model=model, version=n, run_id=run_id, files=files, candidate=candidate,
                       validation=validation, candidate_uri=candidate_uri, rollback_of=rollback_of)
    uri = commit(client, serving, n, m)
    dt = time.monotonic() - t0
    log.info("published %s version %d: %d files, %d bytes in %.2fs", model, n, len(files),
             sum(f["size"] for f in files), dt)
    return Published(version=n, manifest_uri=uri, uri=f"s3://{serving.bucket}/{layout.version_prefix(serving, n)}",
                     seconds=dt, claim_attempts=attempts)


def read_verdict(client, serving: S3Uri, run_id: str) -> dict | None:
    return layout.read_json(client, serving.bucket, f"{serving.prefix}{layout.REPORTS}{run_id}/verdict.json")


def publish(client, serving: S3Uri, model: str, candidate_uri: str, *, allow_unvalidated: bool = False,
            run_id: str | None = None) -> Published:
    """Publish the candidate at ``candidate_uri`` as the next version of ``model``."""
    check_bucket(client, serving.bucket)
    cand, body = read_candidate(client, candidate_uri)
    run = body.get("run_id") or run_id or cand.prefix.rstrip("/").rsplit("/", 1)[-1]
    verdict = read_verdict(client, serving, run)
    if verdict is not None and not verdict.get("passed"):
        raise CandidateError(f"candidate {candidate_uri} failed validation "
                             f"({verdict.get('reason', 'see the report')}); it cannot be published. "
                             "Fix the model and export again.")
    if verdict is None and not allow_unvalidated:
        raise CandidateError(f"candidate {candidate_uri} has no validation verdict "
                             f"(s3://{serving.bucket}/{serving.prefix}{layout.REPORTS}{run}/verdict.json). "
                             "Run `tfs-release validate` first, or pass --unvalidated to publish anyway.")
    validation = ({"verdict": "passed", "report": verdict.get("report")} if verdict
                  else {"verdict": "not-validated", "report": None})
    return publish_files(client, serving, model, run_id=run_id or run, src_bucket=cand.bucket,
                         src_prefix=cand.prefix + SAVED_MODEL, files=body["files"], candidate=body,
                         validation=validation, candidate_uri=candidate_uri)


def rollback(client, serving: S3Uri, model: str, to: int, *, run_id: str) -> Published:
    """Publish a copy of committed version ``to`` as a new, higher version (TF Serving serves the
    highest). The new manifest records ``rollback_of``."""
    check_bucket(client, serving.bucket)
    state = layout.scan(client, serving)
    if to not in state.manifests:
        known = ", ".join(str(v) for v in sorted(state.manifests)) or "none"
        raise VersionError(f"cannot roll back {model} to version {to}: it is not a published version "
                           f"(published: {known}).")
    key = layout.manifest_key(serving, to)
    with s3_errors(serving.bucket, key):
        raw = client.get_object(Bucket=serving.bucket, Key=key)["Body"].read()
    src = manifest.parse(raw, where=f"s3://{serving.bucket}/{key}")
    return publish_files(client, serving, model, run_id=run_id, src_bucket=serving.bucket,
                         src_prefix=layout.version_prefix(serving, to), files=src["files"],
                         candidate=src, validation=src.get("validation") or {},
                         candidate_uri=src.get("candidate"), rollback_of=to)
