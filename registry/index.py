"""The serving bucket's change marker: what lets an idle sync sidecar cost one request per round,
whatever the number of models and versions (bench/fleet.py measures it).

Every writer of what a sidecar serves (a version's manifest: publish and rollback copies; a
tombstone: retention, clean-orphans; a model's labels: canary, promote, abort, rollback) calls
``touch`` *after* its write. ``touch`` rewrites one small object per bucket,
``s3://<bucket>/_tfs-release-changes.json``, so its ETag changes.

A sidecar asks with a conditional GET (``If-None-Match: <ETag it last settled on>``): 304 means
nothing it serves changed since, and the round is skipped (no listing). It settles on an ETag only
after a full round that succeeded with nothing left pending, and it reads the ETag *before* that
round's listing, so a write that lands during the round changes the ETag again and is seen next
round. The marker is a hint, never the truth: the manifests and tombstones are. So:
- no marker (never written, deleted): every round is a full one (today's cost, today's guarantees);
- a marker the sidecar cannot read (an S3 error): a full round;
- a change written without a touch (an older publisher, a person): found by the reconciliation, a
  full round every ``reconcile_s`` seconds whatever the marker says;
- a touch that fails (S3 refused it): logged by the writer; the reconciliation finds the change.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid

import botocore.exceptions

from registry.s3 import S3Uri, http_status

log = logging.getLogger(__name__)
KEY = "_tfs-release-changes.json"
# a full round at least this often, whatever the marker says (0: every round is a full one)
DEFAULT_RECONCILE_S = 86400.0


def touch(client, serving: S3Uri, what: str) -> bool:
    """Say that something under ``serving`` changed (after writing it). Never raises: the change
    itself is already written; a sidecar finds it at its next reconciliation at the latest."""
    body = json.dumps({"changed": what, "prefix": serving.prefix, "time": time.time(),
                       "token": uuid.uuid4().hex, "pid": os.getpid()}).encode()
    try:
        client.put_object(Bucket=serving.bucket, Key=KEY, Body=body, ContentType="application/json")
        return True
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        log.error("could not update the change marker s3://%s/%s after %s (%s): sync sidecars find the change at "
                  "their next reconciliation", serving.bucket, KEY, what, exc)
        return False


class ChangeGate:
    """Whether a sidecar's next round must list (a full round) or may be skipped.

    ``check()`` -> (full round?, what it saw); after each full round ``done(seen, ok)``, ``ok`` when
    it succeeded with nothing left pending (a failed or pending round keeps the next one full).
    ``reconcile_s`` 0: every round is a full one."""

    def __init__(self, client, buckets, *, reconcile_s: float = DEFAULT_RECONCILE_S, clock=time.monotonic):
        self.client, self.buckets = client, sorted(set(buckets))
        self.reconcile_s, self.clock = float(reconcile_s), clock
        self.etags: dict[str, str] = {}     # bucket -> the ETag the last settled full round saw
        self.last_full: float | None = None
        self.dirty = True                   # the last full round failed or left something pending
        self._said_missing: set[str] = set()
        self.requests = 0                   # GETs of the marker (for the health file and benchmarks)

    def _etag(self, bucket: str) -> str | None:
        """The marker's current ETag, the one settled on when unchanged, or None (no marker or unreadable)."""
        known = self.etags.get(bucket)
        self.requests += 1
        try:
            kw = {"IfNoneMatch": known} if known else {}
            obj = self.client.get_object(Bucket=bucket, Key=KEY, **kw)
            obj["Body"].close()
            return obj["ETag"]
        except botocore.exceptions.ClientError as exc:
            status = http_status(exc)
            if status == 304:
                return known
            if status == 404:
                if bucket not in self._said_missing:
                    self._said_missing.add(bucket)
                    log.info("s3://%s has no change marker (%s) yet: every round lists until a publish writes it",
                             bucket, KEY)
                return None
            log.warning("cannot read the change marker of s3://%s (%s): a full round", bucket, exc)
            return None
        except botocore.exceptions.BotoCoreError as exc:
            log.warning("cannot read the change marker of s3://%s (%s): a full round", bucket, exc)
            return None

    def check(self) -> tuple[bool, dict[str, str | None]]:
        if self.reconcile_s <= 0:
            return True, {}
        seen = {b: self._etag(b) for b in self.buckets}
        if self.dirty or self.last_full is None or self.clock() - self.last_full >= self.reconcile_s:
            return True, seen
        if any(v is None for v in seen.values()) or seen != self.etags:
            return True, seen
        return False, seen

    def done(self, seen: dict[str, str | None], ok: bool) -> None:
        """After a full round that listed after ``seen`` was read: ``ok`` when it succeeded with
        nothing left pending (then rounds are skipped until the marker changes)."""
        self.dirty = not ok
        if ok:
            self.etags = {b: e for b, e in seen.items() if e is not None}
            self.last_full = self.clock()
