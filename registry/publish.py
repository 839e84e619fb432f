"""Publish a staged candidate as the next numeric version, atomically for every reader.

0. already published? The same candidate (staging uri + candidate digest) returns its existing
   version, never N+1; one whose version was retired is refused;
1. the verdict must be this candidate's: same model, same candidate digest (else exit 2);
2. the store must honour If-None-Match (probed once per bucket, else exit 2);
3. claim ``_claims/<N>`` with If-None-Match: * (on 412 another run holds N: take N+1; a 412 on
   our own retried create, after a lost response, is recognised by reading the claim back);
4. server-side copy the staged files into ``<N>/``, ``saved_model.pb`` last, and verify every copy
   (size and the sha256 carried as object metadata);
5. with a signing key, write ``_signatures/<N>.sig`` (If-None-Match: *): the signed statement over
   the files' sha256s and the manifest's exact bytes (registry/signing.py);
6. write ``_manifests/<N>.json`` (also If-None-Match: *; a 412 after a lost response reads the
   manifest back and succeeds if it is byte-for-byte ours): only now is N published. A tombstone
   for N (``clean-orphans`` retired the number while this publish was slow) is checked before and
   after the write; a publish that finds one withdraws its manifest and fails.

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
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from registry import index, layout, manifest
from registry.errors import CandidateError, IntegrityError, VersionError
from registry.layout import SAVED_MODEL
from registry.s3 import S3Uri, check_bucket, get_bytes, put_if_absent, require_conditional_writes, s3_errors
from registry.signing import FORMAT as SIGNATURE_FORMAT, SignatureError, SigningKey, TrustedKeys
from registry.staging import candidate_digest, read_candidate

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
    already_published: bool = False
    signed_by: str | None = None  # the signing key's id

    def to_json(self) -> dict:
        return {"version": self.version, "uri": self.uri, "manifest": self.manifest_uri,
                "seconds": round(self.seconds, 3), "claim_attempts": self.claim_attempts,
                "already_published": self.already_published, "signed_by": self.signed_by}


class RetiredError(IntegrityError):
    """The version number this publish holds was retired (tombstone) before it committed. Exit 1."""


def claim_next(client, serving: S3Uri, run_id: str, *, max_attempts: int = 1000) -> tuple[int, int]:
    """Claim the next free version number; returns (N, attempts). The store must honour
    If-None-Match (probed first, once per bucket)."""
    require_conditional_writes(client, serving.bucket, serving.prefix + layout.CLAIMS)
    n = layout.scan(client, serving).highest_number + 1
    body = json.dumps({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "claimed": manifest.utc_now(), "nonce": uuid.uuid4().hex}).encode()
    for attempt in range(1, max_attempts + 1):
        key = layout.claim_key(serving, n)
        if put_if_absent(client, serving.bucket, key, body):
            return n, attempt
        if get_bytes(client, serving.bucket, key) == body:  # our create went through, its answer was lost
            log.info("claim %d is ours (the create's response was lost and its retry got 412)", n)
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


def _tombstone(client, serving: S3Uri, n: int) -> dict | None:
    raw = get_bytes(client, serving.bucket, layout.tombstone_key(serving, n))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"reason": "unreadable tombstone"}


def _retired(n: int, tomb: dict, withdrawn: bool) -> RetiredError:
    return RetiredError(
        f"version {n} was retired while this publish ran ({tomb.get('reason', 'tombstone')}, "
        f"{tomb.get('time', '?')}; e.g. clean-orphans with a grace shorter than this publish took), so "
        f"it was {'withdrawn right after' if withdrawn else 'not'} committed. Publish again: the "
        "candidate gets a new number.")


def commit(client, serving: S3Uri, n: int, m: dict) -> str:
    """Write the manifest of N unless N was retired; withdraw it if N was retired meanwhile.

    clean-orphans writes the tombstone, then looks for a manifest; this writes the manifest, then
    looks for a tombstone: whichever writes second sees the other's record, so a retired number
    never stays committed and a committed version never loses its files."""
    key = layout.manifest_key(serving, n)
    tomb = _tombstone(client, serving, n)
    if tomb is not None:
        raise _retired(n, tomb, withdrawn=False)
    body = manifest.dumps(m)
    if not put_if_absent(client, serving.bucket, key, body):
        if get_bytes(client, serving.bucket, key) != body:
            raise IntegrityError(f"manifest for version {n} already exists although this run claimed {n}: "
                                 "someone wrote outside the claim protocol. Run `tfs-release verify`.")
        log.info("manifest %d is ours (the write's response was lost and its retry got 412)", n)
    tomb = _tombstone(client, serving, n)
    if tomb is not None:
        with s3_errors(serving.bucket, key):
            client.delete_object(Bucket=serving.bucket, Key=key)
        index.touch(client, serving, f"version {n} withdrawn")
        raise _retired(n, tomb, withdrawn=True)
    index.touch(client, serving, f"version {n} committed")  # after the commit: see registry/index.py
    return f"s3://{serving.bucket}/{key}"


def write_signature(client, serving: S3Uri, model: str, n: int, m: dict, signer: SigningKey) -> None:
    """``_signatures/<N>.sig`` over N's files and the manifest's exact bytes, before the manifest
    commits (a replica that sees the manifest finds the signature). Never overwritten: a 412 after a
    lost response is accepted only when the stored signature is ours over this very manifest."""
    key = layout.signature_key(serving, n)
    raw = manifest.dumps(m)
    bundle = signer.sign(model, n, m["files"], raw)
    if put_if_absent(client, serving.bucket, key, bundle):
        return
    try:
        TrustedKeys({}).with_key(signer).verify(get_bytes(client, serving.bucket, key), model=model, n=n,
                                                files=m["files"], manifest_raw=raw, where=key)
    except SignatureError as exc:
        raise IntegrityError(f"s3://{serving.bucket}/{key} exists and is not this publish's signature ({exc}) "
                             f"although this run claimed {n}: someone wrote outside the claim protocol. "
                             "Run `tfs-release verify`.") from None
    log.info("signature %d is ours (the write's response was lost and its retry got 412)", n)


def publish_files(client, serving: S3Uri, model: str, *, run_id: str, src_bucket: str, src_prefix: str,
                  files: list[dict], candidate: dict, validation: dict, candidate_uri: str | None,
                  rollback_of: int | None = None, digest: str | None = None,
                  rollback_reason: str | None = None, signer: SigningKey | None = None) -> Published:
    t0 = time.monotonic()
    n, attempts = claim_next(client, serving, run_id)
    log.info("claimed version %d of %s after %d attempt(s)", n, model, attempts)
    copy_version(client, serving, n, src_bucket, src_prefix, files)
    signed_by = ({"key_id": signer.key_id, "format": SIGNATURE_FORMAT,
                  "signature": f"s3://{serving.bucket}/{layout.signature_key(serving, n)}"} if signer else None)
    m = manifest.build(model=model, version=n, run_id=run_id, files=files, candidate=candidate,
                       validation=validation, candidate_uri=candidate_uri, rollback_of=rollback_of,
                       candidate_digest=digest, rollback_reason=rollback_reason, signed_by=signed_by)
    if signer is not None:
        write_signature(client, serving, model, n, m, signer)
    else:
        log.warning("version %d of %s is published unsigned (no signing key): replicas that verify "
                    "signatures will not serve it", n, model)
    uri = commit(client, serving, n, m)
    dt = time.monotonic() - t0
    log.info("published %s version %d: %d files, %d bytes in %.2fs", model, n, len(files),
             sum(f["size"] for f in files), dt)
    return Published(version=n, manifest_uri=uri, uri=f"s3://{serving.bucket}/{layout.version_prefix(serving, n)}",
                     seconds=dt, claim_attempts=attempts, signed_by=signer.key_id if signer else None)


def read_verdict(client, serving: S3Uri, run_id: str) -> dict | None:
    return layout.read_json(client, serving.bucket, f"{serving.prefix}{layout.REPORTS}{run_id}/verdict.json")


def check_verdict(verdict: dict, *, model: str, digest: str, candidate_uri: str, where: str) -> None:
    """The verdict must be this candidate's: same model, same candidate digest (exit 2 otherwise)."""
    if verdict.get("model") != model:
        raise CandidateError(f"the verdict {where} is for model {verdict.get('model')!r}, not {model!r}: it "
                             f"does not validate {candidate_uri}. Run `tfs-release validate {model} "
                             f"--candidate {candidate_uri}` first.")
    if not verdict.get("candidate_digest"):
        raise CandidateError(f"the verdict {where} names no candidate digest (written by an older "
                             f"validator), so it cannot be bound to {candidate_uri}. Validate it again.")
    if verdict["candidate_digest"] != digest:
        raise CandidateError(f"the verdict {where} was given to other candidate contents "
                             f"({verdict['candidate_digest']}) than {candidate_uri} holds now ({digest}): the "
                             "candidate changed after validation, or its run id was reused. Validate it again.")


def find_published(client, serving: S3Uri, candidate_uri: str, digest: str | None) -> tuple[int, dict, bool] | None:
    """The version this candidate (same staging uri; same digest when given) was published as:
    (N, manifest or tombstone lineage, retired) or None. Rollbacks don't count."""
    from registry.versions import load_manifests, load_tombstones
    state = layout.scan(client, serving)

    def same(rec: dict) -> bool:
        return (not rec.get("rollback_of") and rec.get("candidate") == candidate_uri
                and (digest is None or rec.get("candidate_digest") == digest))

    for n, m in sorted(load_manifests(client, serving, state).items()):
        if same(m):
            return n, m, False
    for n, t in sorted(load_tombstones(client, serving, state).items()):
        if same(t.get("lineage") or {}):
            return n, t, True
    return None


def _existing(serving: S3Uri, model: str, candidate_uri: str, found: tuple[int, dict, bool], t0: float,
              client=None) -> Published:
    n, rec, retired = found
    if retired:
        raise VersionError(f"{candidate_uri} was published as version {n} of {model}, which has since been "
                           f"retired ({rec.get('reason', 'tombstone')}, {rec.get('time', '?')}); it is not "
                           "published again. Use `tfs-release rollback` for an earlier version, or export anew.")
    log.info("%s is already published as version %d of %s: nothing to do", candidate_uri, n, model)
    if client is not None:  # a retry after a publish killed between its commit and its touch
        index.touch(client, serving, f"version {n} committed")
    return Published(version=n, manifest_uri=f"s3://{serving.bucket}/{layout.manifest_key(serving, n)}",
                     uri=f"s3://{serving.bucket}/{layout.version_prefix(serving, n)}",
                     seconds=time.monotonic() - t0, claim_attempts=0, already_published=True)


def publish(client, serving: S3Uri, model: str, candidate_uri: str, *, allow_unvalidated: bool = False,
            run_id: str | None = None, approval: dict | None = None, signer: SigningKey | None = None) -> Published:
    """Publish the candidate at ``candidate_uri`` as the next version of ``model``; a candidate
    that is already published returns its existing version."""
    t0 = time.monotonic()
    candidate_uri = str(S3Uri.parse(candidate_uri))
    check_bucket(client, serving.bucket)
    try:
        cand, body = read_candidate(client, candidate_uri)
    except CandidateError:
        # a cleared publish task after clean_staging removed the candidate it had published
        found = find_published(client, serving, candidate_uri, None)
        if found is None:
            raise
        return _existing(serving, model, candidate_uri, found, t0, client)
    if body.get("model") not in (None, model):
        raise CandidateError(f"{candidate_uri} was exported for model {body['model']!r}, not {model!r}: "
                             "publish it under its own model, or export this model.")
    digest = candidate_digest(body["files"])
    found = find_published(client, serving, candidate_uri, digest)
    if found is not None:
        return _existing(serving, model, candidate_uri, found, t0, client)
    run = body.get("run_id") or run_id or cand.prefix.rstrip("/").rsplit("/", 1)[-1]
    where = f"s3://{serving.bucket}/{serving.prefix}{layout.REPORTS}{run}/verdict.json"
    verdict = read_verdict(client, serving, run)
    if verdict is not None:
        check_verdict(verdict, model=model, digest=digest, candidate_uri=candidate_uri, where=where)
    if verdict is not None and not verdict.get("passed"):
        raise CandidateError(f"candidate {candidate_uri} failed validation "
                             f"({verdict.get('reason', 'see the report')}); it cannot be published. "
                             "Fix the model and export again.")
    if verdict is None and not allow_unvalidated:
        raise CandidateError(f"candidate {candidate_uri} has no validation verdict ({where}). "
                             "Run `tfs-release validate` first, or pass --unvalidated to publish anyway.")
    validation = ({"verdict": "passed", "report": verdict.get("report")} if verdict
                  else {"verdict": "not-validated", "report": None})
    if approval:  # who approved this release, and their comment (the DAG's approve task)
        validation["approval"] = {k: approval.get(k) for k in ("approved_by", "comment", "decided")}
    gate = (verdict or {}).get("regression") or {}
    if gate:  # what the regression gate said, and who accepted a regression, and why
        validation["regression"] = {"status": gate.get("status"), "summary": gate.get("summary"),
                                    "baseline": (gate.get("baseline") or {}).get("version"),
                                    "accepted_reason": gate.get("accepted_reason")}
    return publish_files(client, serving, model, run_id=run_id or run, src_bucket=cand.bucket,
                         src_prefix=cand.prefix + SAVED_MODEL, files=body["files"], candidate=body,
                         validation=validation, candidate_uri=candidate_uri, digest=digest, signer=signer)


def check_signed(client, serving: S3Uri, model: str, n: int, signer: SigningKey | None,
                 trusted: TrustedKeys | None = None, *, action: str) -> None:
    """With a signing key, version ``n`` must carry a valid signature by that key or a trusted one
    before it is signed again (a rollback copy) or labelled: signing it would vouch for bytes the
    gate may never have passed (written into the bucket by hand, or changed since)."""
    if signer is None:
        return
    key = layout.manifest_key(serving, n)
    raw = get_bytes(client, serving.bucket, key)
    if raw is None:
        raise VersionError(f"version {n} of {model} has no manifest: it is not published")
    m = manifest.parse(raw, where=f"s3://{serving.bucket}/{key}")
    sig_key = layout.signature_key(serving, n)
    try:
        (trusted or TrustedKeys({})).with_key(signer).verify(
            get_bytes(client, serving.bucket, sig_key), model=model, n=n, files=m["files"], manifest_raw=raw,
            where=f"s3://{serving.bucket}/{sig_key}")
    except SignatureError as exc:
        raise VersionError(f"{model}: not {action} version {n}: {exc} Signing a copy of it would vouch for bytes "
                           "the release pipeline never passed. Choose a version that is signed (`tfs-release "
                           "versions` shows them), or trust the key that signed it (--trusted-key).") from None


def rollback(client, serving: S3Uri, model: str, to: int, *, run_id: str, reason: str | None = None,
             signer: SigningKey | None = None, trusted: TrustedKeys | None = None,
             source_checked: bool = False) -> Published:
    """Publish a copy of committed version ``to`` as a new, higher version (TF Serving serves the
    highest). The new manifest records ``rollback_of`` (and ``rollback_reason`` when given). With a
    signing key the copy is signed, and ``to`` must itself be signed by a trusted key (``check_signed``;
    ``source_checked``: the caller already did, before changing anything of its own)."""
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
    if not source_checked:
        check_signed(client, serving, model, to, signer, trusted, action="rolling back to")
    return publish_files(client, serving, model, run_id=run_id, src_bucket=serving.bucket,
                         src_prefix=layout.version_prefix(serving, to), files=src["files"],
                         candidate=src, validation=src.get("validation") or {},
                         candidate_uri=src.get("candidate"), rollback_of=to,
                         digest=src.get("candidate_digest"), rollback_reason=reason, signer=signer)
