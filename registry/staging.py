"""Stage a candidate: s3://<serving>/<model>/_staging/<run>/ holds

  saved_model/...     the SavedModel exactly as it will be published under <N>/
  <extra dirs>/...    e.g. reference/ (the exporter's answers for golden images)
  candidate.json      manifest fields the exporter owns + every saved_model file's size and sha256;
                      written last, so a candidate without it is incomplete.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import uuid

from registry.errors import CandidateError
from registry.layout import CANDIDATE_JSON, SAVED_MODEL, STAGING
from registry.s3 import S3Uri, check_bucket, delete_prefix, get_bytes, list_folders, list_objects, s3_errors
from registry.transfer import upload_dir

log = logging.getLogger(__name__)
_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,200}$")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+'; keep them readable but key-safe."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    if not _RUN.match(cleaned):
        raise CandidateError(f"run id {run_id!r} cannot name a staging folder")
    return cleaned


def stage(client, serving: S3Uri, saved_model_dir: str, *, run_id: str | None = None,
          fields: dict | None = None, extra_dirs: dict[str, str] | None = None) -> str:
    """Upload a local SavedModel (+ extra folders) as a candidate; returns its s3:// URI."""
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise CandidateError(f"{saved_model_dir} has no saved_model.pb: it is not a SavedModel "
                             "directory. Point at the folder that contains saved_model.pb and variables/.")
    check_bucket(client, serving.bucket)
    run = safe_run_id(run_id or new_run_id())
    prefix = f"{serving.prefix}{STAGING}{run}/"
    existing = next(iter(list_objects(client, serving.bucket, prefix + CANDIDATE_JSON)), None)
    if existing:
        raise CandidateError(f"s3://{serving.bucket}/{prefix} is already a staged candidate; use a "
                             "new run id (staged candidates are immutable).")
    files = upload_dir(client, saved_model_dir, serving.bucket, prefix + SAVED_MODEL)
    for name, local in (extra_dirs or {}).items():
        upload_dir(client, local, serving.bucket, prefix + name.strip("/") + "/")
    body = dict(fields or {})
    body.update({"run_id": run, "files": files, "staged": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    with s3_errors(serving.bucket, prefix + CANDIDATE_JSON):
        client.put_object(Bucket=serving.bucket, Key=prefix + CANDIDATE_JSON,
                          Body=json.dumps(body, indent=2, sort_keys=True).encode(),
                          ContentType="application/json")
    uri = f"s3://{serving.bucket}/{prefix}"
    log.info("staged candidate %s: %d files, %d bytes", uri, len(files), sum(f["size"] for f in files))
    return uri


def candidate_digest(files: list[dict]) -> str:
    """What a verdict is bound to: ``sha256:`` + the sha256 of one ``path<TAB>size<TAB>sha256`` line
    per SavedModel file of candidate.json, sorted by path. Same files, same digest; any file added,
    removed, resized or changed gives another."""
    try:
        lines = sorted(f"{f['path']}\t{int(f['size'])}\t{f['sha256']}\n" for f in files)
    except (KeyError, TypeError, ValueError):
        raise CandidateError("candidate.json's file list lacks a path, size or sha256: export "
                             "again.") from None
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def read_candidate(client, uri: str) -> tuple[S3Uri, dict]:
    """The candidate's location and its candidate.json, checked for completeness."""
    cand = S3Uri.parse(uri)
    check_bucket(client, cand.bucket)
    raw = get_bytes(client, cand.bucket, cand.prefix + CANDIDATE_JSON)
    if raw is None:
        any_obj = next(iter(list_objects(client, cand.bucket, cand.prefix)), None)
        if any_obj is None:
            raise CandidateError(f"no candidate at {uri}: nothing is staged there. Use the URI that "
                                 "`tfs-release export` printed.")
        raise CandidateError(f"candidate {uri} has no {CANDIDATE_JSON}: staging did not finish. "
                             "Export again.")
    try:
        body = json.loads(raw)
    except ValueError:
        raise CandidateError(f"{uri}{CANDIDATE_JSON} is not valid JSON: export again.") from None
    files = body.get("files") or []
    if not any(f.get("path") == "saved_model.pb" for f in files):
        raise CandidateError(f"candidate {uri} has no saved_model.pb: it is not a SavedModel. "
                             "Export it again.")
    staged = {o["Key"][len(cand.prefix + SAVED_MODEL):]: o["Size"]
              for o in list_objects(client, cand.bucket, cand.prefix + SAVED_MODEL)}
    bad = [f["path"] for f in files if staged.get(f["path"]) != f["size"]]
    if bad:
        raise CandidateError(f"candidate {uri} is incomplete or altered: {bad[:5]} missing or of the "
                             "wrong size. Export again.")
    return cand, body


def _staging_prefix(uri: str) -> S3Uri:
    cand = S3Uri.parse(uri)
    parts = cand.prefix.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] + "/" != STAGING or not _RUN.match(parts[-1]):
        raise CandidateError(f"{uri} is not a staged candidate (s3://BUCKET/<model>/{STAGING}<run>/): "
                             "refusing to delete it.")
    return cand


def remove(client, uri: str) -> int:
    """Delete one staged candidate (after it was published); returns the number of objects deleted."""
    cand = _staging_prefix(uri)
    n = delete_prefix(client, cand.bucket, cand.prefix.rstrip("/") + "/")
    log.info("removed staged candidate %s (%d objects)", uri, n)
    return n


def sweep(client, serving: S3Uri, *, older_than_s: float, now: _dt.datetime | None = None) -> list[dict]:
    """Delete staged candidates whose newest object is older than ``older_than_s`` (failed or dry
    runs are kept that long for inspection, then go). Returns what was removed."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    base = f"{serving.prefix}{STAGING}"
    removed = []
    for run in list_folders(client, serving.bucket, base):
        prefix = f"{base}{run}/"
        newest = max((o["LastModified"] for o in list_objects(client, serving.bucket, prefix)), default=None)
        if newest is None:
            continue
        age = (now - newest).total_seconds()
        if age < older_than_s:
            continue
        n = delete_prefix(client, serving.bucket, prefix)
        removed.append({"uri": f"s3://{serving.bucket}/{prefix}", "age_s": round(age), "objects_removed": n})
        log.info("removed stale staged candidate s3://%s/%s (%.1f days old, %d objects)",
                 serving.bucket, prefix, age / 86400, n)
    return removed
