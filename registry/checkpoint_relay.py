"""The checkpoint relay: one process for every model of a fleet, instead of one watcher per model.

New complete checkpoints become Asset events of the models' checkpoints Assets (the release DAGs'
schedules) through Airflow's REST API (``registry/airflow_events.py``). What tells the relay to look:

- **the store's own notifications**, posted to the relay's HTTP endpoint: SeaweedFS's filer webhook
  (``notification.webhook``), S3 event notifications (``Records``: MinIO's webhook target, an SNS or
  SQS body) and EventBridge ``Object Created`` events. A notification only says *where* to look:
  it schedules one check of that model (debounced: a save writes several files; the state file,
  written last, is checked at once), nothing else;
- **a sweep**, the fallback for a lost or never-sent notification: one paginated listing per
  training location (bucket and the models' common prefix) every ``sweep_s``, whatever the number
  of models; a model whose files changed since the last sweep is checked.

A check is what a release run does to find its checkpoint (``registry.checkpoints.list_checkpoints``:
one LIST and the state file) and the watcher's decision (``registry.checkpoint_watch.decide``):
fire only for a complete checkpoint not announced and not published. Before it announces, it reads
the Asset's newest event back from Airflow: a checkpoint that event names is not announced again.
So the relay keeps no state (a restarted one announces nothing twice) and a checkpoint the training
job announced itself is not announced a second time; Airflow's event log is the record.

No Airflow here: the relay runs beside the store or in the compose stack (``tfs-release
checkpoint-relay``), with a user allowed to create asset events.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import posixpath
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Protocol

from registry.checkpoint_watch import (FIRE, RECORD, STATE_FILE, WAIT, Decision, backoff, decide, fingerprint,
                                      listing_digest)
from registry.checkpoints import list_checkpoints
from registry.s3 import S3Uri, list_objects

log = logging.getLogger(__name__)

DEFAULT_SWEEP_S = 300.0    # one listing per training location every 5 minutes (the fallback)
DEFAULT_DEBOUNCE_S = 1.0   # a save's files arrive within a second: one check after the last of them
MAX_DEBOUNCE_S = 5.0       # ... but never later than this after the first
TOKEN_ENV = "TFS_RELEASE_RELAY_TOKEN"   # the bearer token notifications must carry


class Sink(Protocol):
    """Where announcements go: ``registry.airflow_events.AirflowAssets`` in production."""

    def latest(self, uri: str) -> dict | None: ...

    def post(self, uri: str, extra: dict) -> dict: ...


class NotificationError(ValueError):
    """A body the relay cannot read: HTTP 400 with this text."""


def notified_keys(body) -> list[tuple[str, str]]:
    """``(bucket, key)`` of every object a notification names: SeaweedFS's filer webhook
    (``{"event_type", "key": "/buckets/<bucket>/<key>", "message": {...}}``), S3 event notifications
    (``{"Records": [{"s3": {"bucket": {"name"}, "object": {"key"}}}]}``, keys URL-encoded), an SNS
    ``Notification`` wrapping one, or EventBridge (``{"detail": {"bucket": {"name"}, "object": {"key"}}}``)."""
    if not isinstance(body, dict):
        raise NotificationError("a notification is a JSON object")
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):  # SNS
        try:
            return notified_keys(json.loads(body["Message"]))
        except json.JSONDecodeError:
            raise NotificationError("an SNS Notification whose Message is not JSON") from None
    if isinstance(body.get("Records"), list):
        out = []
        for r in body["Records"]:
            s3 = (r or {}).get("s3") or {}
            bucket, key = (s3.get("bucket") or {}).get("name"), (s3.get("object") or {}).get("key")
            if bucket and key:
                out.append((bucket, urllib.parse.unquote_plus(key)))
        return out
    detail = body.get("detail")
    if isinstance(detail, dict) and "bucket" in detail:
        bucket, key = (detail.get("bucket") or {}).get("name"), (detail.get("object") or {}).get("key")
        return [(bucket, key)] if bucket and key else []
    if isinstance(body.get("key"), str) and "event_type" in body:
        paths = [body["key"]]
        msg = body.get("message") or {}
        if msg.get("new_parent_path") and (msg.get("new_entry") or {}).get("name"):  # a rename's target
            paths.append(posixpath.join(msg["new_parent_path"], msg["new_entry"]["name"]))
        out = []
        for path in paths:
            parts = path.split("/", 3)   # "", "buckets", bucket, key
            if len(parts) == 4 and parts[1] == "buckets" and parts[3] and (parts[2], parts[3]) not in out:
                out.append((parts[2], parts[3]))
        return out
    raise NotificationError("not a notification the relay reads: send SeaweedFS filer webhook events, S3 event "
                            "notifications (Records), SNS Notifications of them, or EventBridge Object Created events")


@dataclass
class Watched:
    """One model the relay watches."""
    name: str
    checkpoints: S3Uri
    serving: S3Uri
    asset: str                       # s3://<bucket>/<prefix>: the checkpoints Asset
    reported: str | None = None      # fingerprint last announced (or found published or announced)
    listing: str | None = None       # digest of its keys in the last sweep
    errors: int = 0
    last: str | None = None          # the last decision, for the health record


@dataclass
class Location:
    """A training bucket and the longest common folder of its models' checkpoints prefixes."""
    bucket: str
    prefix: str
    models: list[Watched] = field(default_factory=list)


def locations(watched: list[Watched]) -> list[Location]:
    by_bucket: dict[str, list[Watched]] = {}
    for w in watched:
        by_bucket.setdefault(w.checkpoints.bucket, []).append(w)
    out = []
    for bucket, ws in sorted(by_bucket.items()):
        common = os.path.commonprefix([w.checkpoints.prefix for w in ws])
        out.append(Location(bucket, common[:common.rfind("/") + 1], ws))
    return out


class Relay:
    """Checks, the sweep and the schedule between them; thread-safe (HTTP handlers call
    ``notify``, one worker thread runs ``run``)."""

    def __init__(self, client, models, sink: Sink, *, sweep_s: float = DEFAULT_SWEEP_S,
                 debounce_s: float = DEFAULT_DEBOUNCE_S, clock: Callable[[], float] = time.monotonic):
        self.client, self.sink, self.sweep_s, self.debounce_s, self.clock = client, sink, sweep_s, debounce_s, clock
        self.watched = [Watched(m.name, m.checkpoints, m.serving,
                                f"s3://{m.checkpoints.bucket}/{m.checkpoints.prefix.rstrip('/')}") for m in models]
        self.locations = locations(self.watched)
        self._by_bucket: dict[str, list[Watched]] = {}
        for w in self.watched:
            self._by_bucket.setdefault(w.checkpoints.bucket, []).append(w)
        self._pending: dict[str, tuple[float, float]] = {}   # name -> (due, first notified)
        self._cv = threading.Condition()
        self._next_sweep = clock()
        self.stats = {"notifications": 0, "routed": 0, "checks": 0, "fired": 0, "sweeps": 0,
                      "last_sweep": None, "last_sweep_ok": None, "last_error": None}

    # -- what the store tells us -------------------------------------------------------------
    def route(self, bucket: str, key: str) -> Watched | None:
        for w in self._by_bucket.get(bucket, ()):
            rel = key[len(w.checkpoints.prefix):] if key.startswith(w.checkpoints.prefix) else None
            if rel and "/" not in rel:
                return w
        return None

    def notify(self, body) -> int:
        """Schedule a check of each model a notification touches; returns how many it touched."""
        keys = notified_keys(body)
        now = self.clock()
        hit: dict[str, bool] = {}   # model -> its state file was written (the last file of a save)
        for b, k in keys:
            w = self.route(b, k)
            if w is not None:
                hit[w.name] = hit.get(w.name, False) or posixpath.basename(k) == STATE_FILE
        with self._cv:
            self.stats["notifications"] += 1
            self.stats["routed"] += len(hit)
            for name, last_file in hit.items():
                first = self._pending.get(name, (None, now))[1]
                due = now if last_file else min(now + self.debounce_s, first + MAX_DEBOUNCE_S)
                self._pending[name] = (min(due, self._pending.get(name, (due,))[0]) if last_file else due, first)
            if hit:
                self._cv.notify()
        return len(hit)

    # -- one model -----------------------------------------------------------------------------
    def _announced_by(self, w: Watched, newest) -> str | None:
        """Who already announced ``newest`` (the Asset's newest event names it), or None. Asked
        before every announcement: a restarted relay, a second relay, the training job's own event."""
        try:
            ev = self.sink.latest(w.asset)
        except Exception as exc:  # noqa: BLE001 - e.g. Airflow answers 500 while an event's run is queued
            log.warning("checkpoint relay %s: cannot read back the Asset's newest event (%s): announcing %s anyway "
                        "(at worst one extra run, which finds it published or running and skips)", w.name, exc, newest.name)
            return None
        extra = (ev or {}).get("extra") or {}
        extra = extra.get("payload") or extra   # the triggerer's watcher nests its payload
        if extra.get("checkpoint") == newest.uri and extra.get("fingerprint") in (None, fingerprint(newest)):
            return str(extra.get("source") or "an Asset event")
        return None

    def check(self, w: Watched) -> Decision:
        """List the model's checkpoints, decide, announce. Raises on a storage or Airflow error
        (``w.reported`` then unchanged: the next check decides again)."""
        from registry.versions import published_from
        self.stats["checks"] += 1
        listing = list_checkpoints(self.client, w.checkpoints)
        newest = listing.newest
        incomplete = [c for c in listing.checkpoints if not c.complete]
        d = decide(newest, w.reported,
                   lambda: published_from(self.client, w.serving, newest.uri, newest.files), incomplete)
        if d.action == FIRE and (who := self._announced_by(w, newest)) is not None:
            w.reported = d.fingerprint
            d = Decision(WAIT, f"{newest.name} was already announced (by {who})", d.checkpoint, d.step, d.fingerprint)
        if d.action == FIRE:
            self.sink.post(w.asset, {"checkpoint": d.checkpoint, "step": d.step, "fingerprint": d.fingerprint,
                                     "model": w.name, "source": "relay"})
            self.stats["fired"] += 1
            log.info("checkpoint relay %s: %s: Asset event for %s", w.name, d.reason, w.asset)
        elif d.action == RECORD:
            log.info("checkpoint relay %s: %s", w.name, d.reason)
        if d.action in (RECORD, FIRE):
            w.reported = d.fingerprint
        w.errors, w.last = 0, f"{d.action}: {d.reason}"
        return d

    def _check_logged(self, w: Watched) -> Decision | None:
        try:
            return self.check(w)
        except Exception as exc:  # noqa: BLE001 - one model's problem never stops the others
            w.errors += 1
            w.last = f"error: {exc}"
            self.stats["last_error"] = f"{w.name}: {exc}"
            delay = backoff(self.debounce_s * 5, w.errors)
            log.error("checkpoint relay %s: check failed (again in %.0f s, and at every sweep): %s",
                      w.name, delay, exc)
            with self._cv:
                now = self.clock()
                self._pending.setdefault(w.name, (now + delay, now))
            return None

    # -- the fallback --------------------------------------------------------------------------
    def sweep(self) -> dict[str, Decision | None]:
        """One paginated listing per location; a model whose keys changed since the last sweep is
        checked. Returns the decisions of the models checked."""
        decided: dict[str, Decision | None] = {}
        ok = True
        for loc in self.locations:
            keys: dict[str, list[dict]] = {w.name: [] for w in loc.models}
            try:
                for obj in list_objects(self.client, loc.bucket, loc.prefix):
                    w = self.route(loc.bucket, obj["Key"])
                    if w is not None and w.name in keys:
                        keys[w.name].append(obj)
            except Exception as exc:  # noqa: BLE001 - the next sweep lists again
                ok = False
                self.stats["last_error"] = f"listing s3://{loc.bucket}/{loc.prefix}: {exc}"
                log.error("checkpoint relay: listing s3://%s/%s failed (again next sweep): %s",
                          loc.bucket, loc.prefix, exc)
                continue
            for w in loc.models:
                digest = listing_digest(keys[w.name])
                if digest == w.listing and not w.errors:
                    continue
                if not keys[w.name] and not w.errors:  # nothing there: nothing to decide, no request
                    w.listing, w.last = digest, f"{WAIT}: the prefix holds no checkpoint"
                    continue
                decided[w.name] = d = self._check_logged(w)
                if d is not None:
                    w.listing = digest
                else:
                    ok = False
        self.stats["sweeps"] += 1
        self.stats["last_sweep"] = time.time()
        self.stats["last_sweep_ok"] = ok
        return decided

    # -- the loop ------------------------------------------------------------------------------
    def due(self) -> list[Watched]:
        """Pop the models whose debounced check is due."""
        now = self.clock()
        with self._cv:
            names = [n for n, (at, _) in self._pending.items() if at <= now]
            for n in names:
                del self._pending[n]
        return [w for w in self.watched if w.name in names]

    def step(self) -> float:
        """Run what is due (checks, then the sweep); returns seconds until something is due."""
        for w in self.due():
            self._check_logged(w)
        if self.clock() >= self._next_sweep:
            self.sweep()
            self._next_sweep = self.clock() + self.sweep_s
        with self._cv:
            dues = [at for at, _ in self._pending.values()] + [self._next_sweep]
        return max(0.0, min(dues) - self.clock())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            wait = self.step()
            with self._cv:
                if not stop.is_set():
                    self._cv.wait(timeout=min(wait, 1.0) if self._pending else wait)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def health(self) -> dict:
        last = self.stats["last_sweep"]
        healthy = last is not None and bool(self.stats["last_sweep_ok"]) and time.time() - last <= 3 * self.sweep_s + 60
        return {"healthy": healthy, "models": len(self.watched),
                "locations": [f"s3://{loc.bucket}/{loc.prefix}" for loc in self.locations],
                **self.stats, "pending": sorted(self._pending),
                "failing": {w.name: w.last for w in self.watched if w.errors}}


class _Handler(BaseHTTPRequestHandler):
    relay: Relay
    token: str | None

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/health", "/healthz"):
            h = self.relay.health()
            self._answer(200 if h["healthy"] else 503, h)
        else:
            self._answer(404, {"error": "GET /health, or POST notifications to any other path"})

    def do_POST(self):  # noqa: N802
        if self.token is not None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                self._answer(401, {"error": "a notification needs 'Authorization: Bearer <the relay's token>' "
                                            f"(the relay reads it from {TOKEN_ENV})"})
                return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            routed = self.relay.notify(body)
        except (ValueError, NotificationError) as exc:
            self._answer(400, {"error": str(exc)})
            return
        self._answer(202, {"routed": routed})

    def log_message(self, fmt, *args):  # the relay logs what it decides, not every request
        log.debug("relay http: " + fmt, *args)


def serve(relay: Relay, host: str, port: int, token: str | None) -> ThreadingHTTPServer:
    """The notification endpoint on ``host:port`` (port 0: a free one), serving in a daemon thread."""
    handler = type("RelayHandler", (_Handler,), {"relay": relay, "token": token})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="relay-http", daemon=True).start()
    return server


__all__ = ["Relay", "Watched", "Location", "locations", "notified_keys", "serve", "NotificationError",
           "DEFAULT_SWEEP_S", "DEFAULT_DEBOUNCE_S", "TOKEN_ENV", "FIRE", "RECORD", "WAIT"]
