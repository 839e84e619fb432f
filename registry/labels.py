"""Canary releases: where the state of which version is ``stable`` and which is ``canary`` is kept.

Only production/lifecycle.py changes it (publish, promote, abort, rollback); the sync sidecar
reads it. For a model with ``rollout: canary`` the label state lives in the registry,
``s3://<serving>/<model>/_labels.json``, so that every production replica's sync sidecar turns it
into the same TF Serving model config file (registry/serving_config.py). Every change is a
read-modify-write with a conditional put (If-Match on the ETag read, If-None-Match: * for the first
write): two writers never lose each other's change; the loser re-reads and re-applies.

    {"stable": 3, "canary": 4, "aborted": [2], "history": [{time, action, stable, canary, version,
     reason, by}]}

(production/lifecycle.py and production/rules.py say what each change means.)
"""
from __future__ import annotations

import datetime as _dt
import json
import logging

import botocore.exceptions

from registry import index
from registry.errors import ReleaseError
from registry.s3 import S3Uri, error_code, http_status, translate

log = logging.getLogger(__name__)
LABELS = "_labels.json"
HISTORY_KEPT = 50
MAX_TRIES = 8


class LabelConflict(ReleaseError):
    exit_code = 1


def key(serving: S3Uri) -> str:
    return f"{serving.prefix}{LABELS}"


def empty() -> dict:
    return {"stable": None, "canary": None, "aborted": [], "history": []}


def read(client, serving: S3Uri) -> tuple[dict, str | None]:
    """(state, etag); the empty state and None when nothing was written yet."""
    try:
        obj = client.get_object(Bucket=serving.bucket, Key=key(serving))
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return empty(), None
        raise translate(exc, bucket=serving.bucket, key=key(serving)) from None
    try:
        state = json.loads(obj["Body"].read())
    except ValueError:
        raise ReleaseError(f"s3://{serving.bucket}/{key(serving)} is not valid JSON: fix or delete it "
                           "(the canary state of this model)") from None
    return {**empty(), **state}, obj["ETag"]


def _put(client, serving: S3Uri, state: dict, etag: str | None) -> bool:
    body = json.dumps(state, indent=2, sort_keys=True).encode()
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=serving.bucket, Key=key(serving), Body=body, ContentType="application/json", **cond)
        index.touch(client, serving, "labels")
        return True
    except botocore.exceptions.ClientError as exc:
        if http_status(exc) in (412, 409) or error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise translate(exc, bucket=serving.bucket, key=key(serving)) from None


def update(client, serving: S3Uri, change, *, action: str, reason: str | None = None, by: str | None = None) -> dict:
    """Apply ``change(state) -> version`` (it edits the state in place, raises BadInput to refuse)
    with a conditional put; re-read and re-apply when another writer got there first."""
    for _ in range(MAX_TRIES):
        state, etag = read(client, serving)
        version = change(state)
        state["history"] = (state.get("history") or [])[-(HISTORY_KEPT - 1):] + [{
            "time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "action": action,
            "version": version, "stable": state["stable"], "canary": state["canary"], "reason": reason, "by": by}]
        if _put(client, serving, state, etag):
            log.info("labels of %s: %s (version %s): stable %s, canary %s", serving, action, version,
                     state["stable"], state["canary"])
            return state
        log.info("labels of %s changed while %s was applied; re-reading", serving, action)
    raise LabelConflict(f"the labels of {serving} kept changing while applying {action}: try again")


def pinned(state: dict) -> set[int]:
    """Versions a sync must keep locally whatever its --keep: the labelled ones."""
    return {v for v in (state.get("stable"), state.get("canary")) if v is not None}
