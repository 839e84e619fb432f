"""Canary releases: which version of a model is ``stable`` and which is ``canary``.

For a model with ``rollout: canary`` the label state lives in the registry,
``s3://<serving>/<model>/_labels.json``, so that every production replica's sync sidecar turns it
into the same TF Serving model config file (registry/serving_config.py). Every change is a
read-modify-write with a conditional put (If-Match on the ETag read, If-None-Match: * for the first
write): two writers never lose each other's change; the loser re-reads and re-applies.

    {"stable": 3, "canary": 4, "aborted": [2], "history": [{time, action, stable, canary, version,
     reason, by}]}

- publishing a version: the first becomes ``stable``; later ones become ``canary`` (a canary that
  was still waiting is replaced, and recorded as superseded);
- ``promote``: the canary becomes stable (TF Serving then unloads the old stable);
- ``abort``: the canary is removed (TF Serving unloads it); an aborted version never becomes stable.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging

import botocore.exceptions

from registry.errors import BadInput, ReleaseError
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


def on_publish(client, serving: S3Uri, version: int) -> dict:
    """A newly published version: the first is stable, later ones the canary."""
    def change(s):
        if s["stable"] is None:
            s["stable"] = version
        elif version not in (s["stable"], s["canary"]):
            if s["canary"] is not None:
                s["superseded"] = sorted(set(s.get("superseded") or []) | {s["canary"]})
            s["canary"] = version
        return version
    return update(client, serving, change, action="publish")


def _the_canary(s: dict, serving: S3Uri, expect: int | None, action: str) -> int:
    """The canary to act on; BadInput when there is none or it is not ``expect``."""
    c = s["canary"]
    if c is None:
        raise BadInput(f"nothing to {action}: {serving} has no canary (stable is {s['stable']})")
    if expect is not None and c != expect:
        raise BadInput(f"the canary of {serving} is version {c}, not {expect}: nothing done ({action})")
    return c


def promote(client, serving: S3Uri, *, reason: str, by: str | None = None, expect: int | None = None,
            failed=lambda v: False) -> dict:
    """The canary becomes stable. ``expect``: refuse unless the canary is that version.
    ``failed(v)``: True when v's rollout failed (it must never become stable)."""
    def change(s):
        c = _the_canary(s, serving, expect, "promote")
        if c in s["aborted"] or failed(c):
            raise BadInput(f"version {c} of {serving} was aborted or its rollout failed: it cannot become stable")
        s["stable"], s["canary"] = c, None
        return c
    return update(client, serving, change, action="promote", reason=reason, by=by)


def abort(client, serving: S3Uri, *, reason: str, by: str | None = None, expect: int | None = None) -> dict:
    """The canary is removed; it is remembered as aborted (never promoted later)."""
    def change(s):
        c = _the_canary(s, serving, expect, "abort")
        s["canary"] = None
        s["aborted"] = sorted(set(s["aborted"]) | {c})
        return c
    return update(client, serving, change, action="abort", reason=reason, by=by)


def pinned(state: dict) -> set[int]:
    """Versions a sync must keep locally whatever its --keep: the labelled ones."""
    return {v for v in (state.get("stable"), state.get("canary")) if v is not None}


def after_publish(client, model, version: int) -> dict | None:
    """The label state after publishing ``version`` of a ``rollout: canary`` model (None otherwise)."""
    if (model.extra or {}).get("rollout") != "canary":
        return None
    return on_publish(client, model.serving, version)


def rollout_failed(client, serving: S3Uri, version: int) -> bool:
    """True when version's rollout record (``_rollouts/N.json``) says anything but confirmed."""
    from registry import layout
    try:
        rec = layout.read_json(client, serving.bucket, layout.rollout_key(serving, version))
    except ValueError:
        return True
    return bool(rec) and rec.get("outcome") != "confirmed"
