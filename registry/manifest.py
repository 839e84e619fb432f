"""The commit record of a published version: ``_manifests/<N>.json`` (written last).

A version without a manifest is not published. Schema 1 fields:
  schema, model, version, run_id, created (UTC ISO-8601), source_checkpoint {uri, step, files:
  [{key,size,etag}]}, params_digest, exporter {name, version, tensorflow, tf_models_official},
  signatures {name: {...}}, files [{path, size, sha256}] (paths relative to <N>/),
  validation {verdict, report}, candidate (staging uri), candidate_digest (see
  ``registry.staging.candidate_digest``; what idempotent publishing and verdicts are keyed on),
  rollback_of (int or null), signed_by ({key_id, format, signature: the bundle's key} or null:
  unsigned; registry/signing.py).

Retiring a version (retention) copies its ``lineage`` into the tombstone, so "was this checkpoint /
candidate already published?" has the same answer after the manifest is gone.
"""
from __future__ import annotations

import datetime as _dt
import json

from registry.errors import IntegrityError

SCHEMA = 1
REQUIRED = ("schema", "model", "version", "files", "created", "run_id")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build(*, model: str, version: int, run_id: str, files: list[dict], candidate: dict,
          validation: dict, candidate_uri: str | None, rollback_of: int | None = None,
          candidate_digest: str | None = None, rollback_reason: str | None = None,
          signed_by: dict | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "model": model,
        "version": version,
        "run_id": run_id,
        "created": utc_now(),
        "source_checkpoint": candidate.get("source_checkpoint"),
        "params_digest": candidate.get("params_digest"),
        "exporter": candidate.get("exporter"),
        "signatures": candidate.get("signatures"),
        "labels": candidate.get("labels"),  # class id -> name (the regression gate compares them)
        "task": candidate.get("task"),
        "files": sorted(files, key=lambda f: f["path"]),
        "validation": validation,
        "candidate": candidate_uri,
        "candidate_digest": candidate_digest,
        "rollback_of": rollback_of,
        "signed_by": signed_by,
        **({"rollback_reason": rollback_reason} if rollback_reason else {}),
    }


LINEAGE = ("model", "version", "run_id", "created", "candidate", "candidate_digest", "source_checkpoint",
           "rollback_of", "rollback_reason")


def lineage(m: dict) -> dict:
    """The fields of a manifest that say where a version came from (kept in its tombstone)."""
    return {k: m.get(k) for k in LINEAGE if k != "rollback_reason" or m.get(k)}


def parse(raw: bytes, *, where: str) -> dict:
    try:
        m = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"manifest {where} is not valid JSON: it is corrupt. Run "
                             "`tfs-release verify` and republish or roll back.") from None
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise IntegrityError(f"manifest {where} lacks {missing}; it was not written by this tool.")
    if m["schema"] > SCHEMA:
        raise IntegrityError(f"manifest {where} has schema {m['schema']}, newer than this tool "
                             f"understands ({SCHEMA}): upgrade tfs-release.")
    return m


def dumps(m: dict) -> bytes:
    return json.dumps(m, indent=2, sort_keys=True).encode()
