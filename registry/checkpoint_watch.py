"""What the checkpoint watcher decides on each poll (no Airflow here; the trigger that runs it on
Airflow's triggerer is ``plugins/tfs_release_airflow/checkpoint_watch.py``).

A poll costs one conditional GET of the training job's ``checkpoint`` state file while nothing
changes (If-None-Match: 304; a GET costs a twelfth of a LIST at S3 prices). The prefix is listed
only when that file changed, while a checkpoint newer than the newest complete one is still being
written (its shards arrive after the state file), when the prefix has no state file (a trainer that
writes none: then every poll lists, as before), and at least every ``reconcile_s`` seconds (a
checkpoint written without touching the state file). When the listing differs from the previous
poll's, the newest *complete* checkpoint is found exactly as a release run finds
it (``registry.checkpoints.list_checkpoints``: the state file's entry when complete, else the
highest complete N; an index without all its shards never counts) and:

- ``wait``:   no complete checkpoint, or the newest is the one already reported;
- ``record``: the newest is already published (e.g. released by hand, or the watcher restarted
  without its state): remember it, start nothing;
- ``fire``:   a new complete checkpoint that is not published: one Asset event, remembered.

"Reported" is a fingerprint of the checkpoint (uri, and every file's key, size and ETag), so a
checkpoint re-written under the same name counts as new. The trigger keeps it in Airflow's asset
state store, so a restarted triggerer does not report the same checkpoint twice; without that
store, "already published" is the fallback (at worst one extra run, which ``is_new`` skips).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

from registry.checkpoints import Checkpoint, list_checkpoints
from registry.s3 import S3Uri, list_objects

log = logging.getLogger(__name__)

WAIT, RECORD, FIRE = "wait", "record", "fire"
UNCHANGED = "nothing changed under the prefix"


MAX_BACKOFF_S = 600.0
STATE_FILE = "checkpoint"        # tf.train.CheckpointManager's state file, written after the shards
DEFAULT_RECONCILE_S = 600.0      # a listing at least this often, whatever the state file says


def backoff(poll_s: float, errors: int) -> float:
    """Seconds to wait after ``errors`` failed polls in a row: poll_s doubled each time, at most 10 min."""
    return min(max(poll_s, 1.0) * 2 ** max(errors - 1, 0), MAX_BACKOFF_S)


def fingerprint(ck: Checkpoint) -> str:
    """sha256 over the checkpoint's uri and its files (key, size, ETag), order-independent."""
    files = sorted((f["key"], int(f["size"]), f.get("etag") or "") for f in ck.files)
    return hashlib.sha256(json.dumps([ck.uri, files]).encode()).hexdigest()


def listing_digest(objects: list[dict]) -> str:
    """What one LIST of the prefix saw (keys, sizes, ETags): equal digests, nothing changed."""
    rows = sorted((o["Key"], int(o.get("Size", 0)), o.get("ETag", "")) for o in objects)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    action: str                 # wait | record | fire
    reason: str
    checkpoint: str | None = None   # uri of the newest complete checkpoint
    step: int | None = None
    fingerprint: str | None = None
    published_as: int | None = None


def decide(newest: Checkpoint | None, reported: str | None, published: Callable[[], int | None],
           incomplete: list[Checkpoint] = ()) -> Decision:
    """The pure decision, given the newest complete checkpoint (None: none), the fingerprint last
    reported (None: nothing yet) and a way to ask whether the checkpoint is published (called only
    for a checkpoint not reported yet)."""
    if newest is None:
        why = "; ".join(f"{c.name}: {c.reason}" for c in incomplete) or "the prefix holds no checkpoint"
        return Decision(WAIT, f"no complete checkpoint ({why})")
    fp = fingerprint(newest)
    if fp == reported:
        return Decision(WAIT, f"{newest.name} was already reported", newest.uri, newest.step, fp)
    done = published()
    if done is not None:
        return Decision(RECORD, f"{newest.name} is already published as version {done}: nothing to release",
                        newest.uri, newest.step, fp, done)
    pending = [c.name for c in incomplete if (c.step or -1) > (newest.step or -1)]
    note = f" ({', '.join(pending)} still being written)" if pending else ""
    return Decision(FIRE, f"new complete checkpoint {newest.name}{note}", newest.uri, newest.step, fp)


class Watch:
    """One model's watch: ``poll()`` asks whether the state file changed, lists the prefix when it
    did (or must), and decides; it remembers what it reported, the last listing and the state file's
    ETag (blocking boto3 calls: run it in a thread)."""

    def __init__(self, client, checkpoints: S3Uri, serving: S3Uri, reported: str | None = None, *,
                 reconcile_s: float = DEFAULT_RECONCILE_S, clock: Callable[[], float] = time.monotonic):
        self.client, self.checkpoints, self.serving = client, checkpoints, serving
        self.reported = reported
        self.last_listing: str | None = None
        self.reconcile_s, self.clock = reconcile_s, clock
        self.state_etag: str | None = None   # the state file as of the last decided listing
        self.settled = False                 # nothing pending then: an unchanged state file means no news
        self.listed_at: float | None = None

    def state_file(self) -> tuple[bool, str | None]:
        """One conditional GET of the state file: (changed, its ETag). Unchanged: 304 for the ETag of
        the last decided listing. No state file: (True, None)."""
        from botocore.exceptions import ClientError
        kw = {"IfNoneMatch": self.state_etag} if self.state_etag else {}
        try:
            r = self.client.get_object(Bucket=self.checkpoints.bucket, Key=self.checkpoints.prefix + STATE_FILE, **kw)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            if meta.get("HTTPStatusCode") == 304 or exc.response.get("Error", {}).get("Code") in ("304", "NotModified"):
                return False, self.state_etag
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return True, None
            raise
        r["Body"].close()
        return True, r.get("ETag")

    def listing(self) -> str:
        """One LIST of the prefix, as a digest (equal digests: nothing changed)."""
        return listing_digest(list(list_objects(self.client, self.checkpoints.bucket, self.checkpoints.prefix,
                                                delimiter="/")))

    def poll(self) -> Decision:
        now = self.clock()
        changed, etag = self.state_file()  # before the listing: a write in between is seen next poll
        due = self.listed_at is None or now - self.listed_at >= self.reconcile_s
        if not changed and self.settled and not due:
            return Decision(WAIT, UNCHANGED)
        digest = self.listing()
        if digest == self.last_listing:
            self.listed_at, self.state_etag = now, etag
            return Decision(WAIT, UNCHANGED)
        from registry.versions import published_from
        listing = list_checkpoints(self.client, self.checkpoints)
        newest = listing.newest
        incomplete = [c for c in listing.checkpoints if not c.complete]
        d = decide(newest, self.reported,
                   lambda: published_from(self.client, self.serving, newest.uri, newest.files), incomplete)
        if d.action in (RECORD, FIRE):
            self.reported = d.fingerprint
        # only once decided: an error above makes the next poll decide again
        self.last_listing, self.listed_at, self.state_etag = digest, now, etag
        self.settled = etag is not None and not any((c.step or -1) > (newest.step if newest else -1)
                                                     for c in incomplete)
        return d
