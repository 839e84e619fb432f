"""Mirror committed versions into a local TF Serving ``model_base_path``, never taking it down.

TF Serving (2.7+) cannot read s3://, so production serves from a local volume that this fills:
each committed version is downloaded into ``<dest>/.tmp-<N>/`` (a name TF Serving ignores: it only
loads numeric folders), every file's sha256 is checked against the manifest, and only then the
folder is renamed to ``<dest>/<N>`` (atomic on one filesystem). A killed sync leaves only
``.tmp-<N>``, which the next sync resumes. One sync per folder at a time (an flock on
``<dest>/.sync.lock``).

What a round promises (TF Serving unloads a version whose folder vanishes):
- it never deletes on uncertainty: when the listing shows no committed version, or a local
  version is neither committed nor retired (no tombstone under ``_tombstones/``), the round
  deletes nothing, says why (log, ``problems``, the health file) and is not a success;
- it never deletes the newest local version unless a newer committed one is in place;
- versions are fetched newest first and one version's failure (corrupt manifest, checksum
  mismatch, missing object) is recorded with its reason and does not stop the others; the
  next round retries it;
- with trusted keys (registry/signing.py) a version is fetched only when its signature, made by a
  trusted key, covers exactly its manifest's bytes and its files' sha256s; an unsigned, badly
  signed or untrusted version is a failed version like any other (recorded with its reason, never
  renamed into place, retried next round) and the previous version keeps serving;
- every round writes the health file (``<dest>/.tfs-release-sync.json`` by default): time of the
  last successful round, versions present, problems; ``tfs-release sync-health`` reads it.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

from registry import layout, manifest
from registry.errors import BadInput, IntegrityError, ReleaseError
from registry.s3 import S3Uri, check_bucket, get_bytes, local_path_for, s3_errors
from registry.signing import TrustedKeys
from registry.transfer import RemoteFile, download_files

log = logging.getLogger(__name__)
HEALTH_FILE = ".tfs-release-sync.json"
_said_empty: set[str] = set()  # serving locations whose "nothing to sync yet" was logged
STALE_INTERVALS = 3    # sync-health: stale after this many intervals without a successful round
MIN_MAX_AGE_S = 120.0  # a passing S3 hiccup or a container restart next door is not "unhealthy"


@dataclass
class SyncResult:
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    present: list[int] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)     # {version, reason}: not fetched this round
    held: list[dict] = field(default_factory=list)       # {version, reason}: would go, kept
    problems: list[str] = field(default_factory=list)    # why the round is not a success
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "added": self.added, "removed": self.removed, "versions": self.present,
                "failed": self.failed, "held": self.held, "problems": self.problems,
                "bytes": self.bytes, "seconds": round(self.seconds, 3)}


def local_versions(dest: str) -> list[int]:
    return sorted(int(n) for n in os.listdir(dest) if layout.is_version(n) and os.path.isdir(os.path.join(dest, n)))


class _Lock:
    def __init__(self, dest: str):
        self.path = os.path.join(dest, ".sync.lock")

    def __enter__(self):
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise BadInput(f"another sync is running on {os.path.dirname(self.path)}; run only one "
                           "sync per model_base_path.") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _fetch_version(client, serving: S3Uri, n: int, m: dict, dest: str) -> int:
    tmp = os.path.join(dest, f".tmp-{n}")
    os.makedirs(tmp, exist_ok=True)
    prefix = layout.version_prefix(serving, n)
    files = [RemoteFile(key=prefix + f["path"], dest=local_path_for(tmp, f["path"]), size=f["size"],
                        sha256=f["sha256"]) for f in m["files"]]
    stats = download_files(client, serving.bucket, files)
    # the folder must hold exactly the manifest's files (leftovers of an older attempt go)
    want = {os.path.normpath(rf.dest) for rf in files}
    for root, _, names in os.walk(tmp):
        for name in names:
            p = os.path.normpath(os.path.join(root, name))
            if p not in want:
                os.unlink(p)
    for rf in files:
        if not os.path.isfile(rf.dest) or os.path.getsize(rf.dest) != rf.size:
            raise IntegrityError(f"version {n}: {rf.key} did not arrive complete")
    _fsync_tree(tmp)
    os.rename(tmp, os.path.join(dest, str(n)))
    _fsync_dir(dest)
    return stats.bytes


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    for root, _, names in os.walk(path):
        for n in names:
            fd = os.open(os.path.join(root, n), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _remove_version(dest: str, n: int) -> None:
    trash = os.path.join(dest, f".trash-{n}-{os.getpid()}")
    os.rename(os.path.join(dest, str(n)), trash)
    shutil.rmtree(trash)


def _read_manifests(client, serving: S3Uri, numbers, trusted: TrustedKeys | None = None,
                    model: str | None = None) -> tuple[dict[int, dict], dict[int, str]]:
    """Each listed manifest on its own: (N -> manifest, N -> why it is unusable). With ``trusted``
    keys, a manifest whose signature does not verify is unusable."""
    good, bad = {}, {}
    for n in numbers:
        key = layout.manifest_key(serving, n)
        try:
            with s3_errors(serving.bucket, key):
                raw = client.get_object(Bucket=serving.bucket, Key=key)["Body"].read()
            m = manifest.parse(raw, where=f"s3://{serving.bucket}/{key}")
            if not isinstance(m.get("files"), list) or not all(
                    isinstance(f, dict) and {"path", "size", "sha256"} <= set(f) for f in m["files"]):
                raise IntegrityError(f"manifest s3://{serving.bucket}/{key} has a malformed file list")
            if m.get("version") != n or (model is not None and m.get("model") != model):
                raise IntegrityError(f"manifest s3://{serving.bucket}/{key} is for {m.get('model')} version "
                                     f"{m.get('version')}, not {model or 'this model'} version {n}: copied by hand?")
            if trusted:
                sig = layout.signature_key(serving, n)
                v = trusted.verify(get_bytes(client, serving.bucket, sig), model=model or m.get("model"), n=n,
                                   files=m["files"], manifest_raw=raw, where=f"s3://{serving.bucket}/{sig}")
                log.debug("version %d: signature by key %s verified", n, v.key_id[:12])
            good[n] = m
        except ReleaseError as exc:
            bad[n] = str(exc)
    return good, bad


def uncertainty(committed: set[int], tombstones: set[int], have: set[int], serving, dest: str) -> str | None:
    """Why this listing cannot be trusted to delete anything, or None (pure: unit-tested)."""
    if have and not committed:
        return (f"the listing of {serving} shows no committed version while {dest} holds versions "
                f"{sorted(have)}: deleting nothing (manifests deleted by mistake, a wrong serving prefix, "
                "a bucket restored from an old backup?). Check the serving location; versions that were "
                "really retired have a tombstone under _tombstones/.")
    unexplained = sorted(n for n in have - committed if n not in tombstones)
    if unexplained:
        return (f"local versions {unexplained} in {dest} are neither committed nor retired (no manifest, no "
                f"tombstone) under {serving}: deleting nothing. Check the serving location and "
                "`tfs-release versions`; retention and clean-orphans always leave a tombstone.")
    return None


def sync_once(client, serving: S3Uri, dest: str, *, keep: int | None = None,
              health: "Health | None" = None, pinned: set[int] | None = None,
              trusted: TrustedKeys | None = None, model: str | None = None) -> SyncResult:
    """One round. ``pinned``: committed versions kept whatever ``keep`` says (a canary model's
    stable and canary: registry/labels.py). ``trusted``: serve only versions signed by these keys;
    ``model``: the model's name (a manifest for another model is refused)."""
    if keep is not None and keep < 1:
        raise BadInput(f"--keep must be at least 1, got {keep}")
    t0 = time.monotonic()
    os.makedirs(dest, exist_ok=True)
    if health is not None:
        health.round_started()
    try:
        res = _round(client, serving, dest, keep, pinned or set(), trusted, model)
    except Exception as exc:
        if health is not None:
            health.round_failed(exc)
        raise
    res.seconds = time.monotonic() - t0
    if health is not None:
        health.round_done(res)
    return res


def _round(client, serving: S3Uri, dest: str, keep: int | None, pinned: set[int] = frozenset(),
           trusted: TrustedKeys | None = None, model: str | None = None) -> SyncResult:
    check_bucket(client, serving.bucket)
    res = SyncResult()
    with _Lock(dest):
        for name in os.listdir(dest):
            if name.startswith(".trash-"):
                shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
        state = layout.scan_committed(client, serving)  # the truth: manifests and tombstones
        committed, tombstones = set(state.manifests), set(state.tombstones)
        have = set(local_versions(dest))
        doubt = uncertainty(committed, tombstones, have, serving, dest)
        if doubt:
            res.problems.append(doubt)
            log.error("sync: %s", doubt)
        elif not committed:  # said once per serving location (a sidecar polls every few seconds)
            level = logging.DEBUG if str(serving) in _said_empty else logging.INFO
            _said_empty.add(str(serving))
            log.log(level, "no committed version of %s yet; nothing to sync", serving)
        wanted = sorted(committed, reverse=True)[:keep] if keep else sorted(committed, reverse=True)
        wanted = sorted(set(wanted) | (set(pinned) & committed), reverse=True)
        manifests, bad = _read_manifests(client, serving, [n for n in wanted if n not in have], trusted, model)
        for n in wanted:  # newest first
            if n in have:
                continue
            try:
                if n in bad:
                    raise IntegrityError(bad[n])
                res.bytes += _fetch_version(client, serving, n, manifests[n], dest)
                res.added.append(n)
                log.info("synced version %d into %s", n, dest)
            except (ReleaseError, OSError) as exc:
                res.failed.append({"version": n, "reason": str(exc)})
                res.problems.append(f"version {n} skipped (retried next round): {exc}")
                log.error("version %d skipped, retried next round: %s", n, exc)
        for name in os.listdir(dest):
            if name.startswith(".tmp-") and name[5:].isdigit() and int(name[5:]) not in wanted:
                shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
        present = local_versions(dest)
        newest = max(present, default=None)
        for n in sorted(set(present) - set(wanted)):
            if doubt:
                res.held.append({"version": n, "reason": "the listing is uncertain"})
                continue
            if n == newest:
                why = "the newest local version stays until a newer committed version is in place"
                res.held.append({"version": n, "reason": why})
                if n not in committed:
                    res.problems.append(f"version {n} is retired but still served: {why}")
                log.warning("keeping version %d: %s", n, why)
                continue
            _remove_version(dest, n)
            res.removed.append(n)
            log.info("removed local version %d (%s)", n,
                     "retired: tombstone" if n not in committed else f"beyond keep={keep}")
        res.present = local_versions(dest)
    return res


def _utc(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Health:
    """The health file a sidecar's health check reads (``tfs-release sync-health``): when the last
    successful round ended, the versions present, the last round's problems, a heartbeat while a
    round runs. Written atomically (temp file + rename)."""

    def __init__(self, path: str, *, serving: S3Uri, interval: float):
        self.path = path
        self.lock = threading.Lock()
        prev = read_health(path) or {}
        self.state = {"serving": str(serving), "interval_s": interval, "pid": os.getpid(),
                      "last_success": prev.get("last_success"), "last_success_unix": prev.get("last_success_unix"),
                      "last_round": None, "last_round_unix": None, "round_started_unix": None,
                      "heartbeat_unix": None, "ok": None, "versions": prev.get("versions", []),
                      "problems": [], "failed": [], "held": []}

    def _write(self) -> None:
        self.state["heartbeat_unix"] = time.time()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(self.state, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    def beat(self) -> None:
        with self.lock:
            try:
                self._write()
            except OSError as exc:
                log.error("cannot write the health file %s: %s", self.path, exc)

    def round_started(self) -> None:
        with self.lock:
            self.state["round_started_unix"] = time.time()
        self.beat()

    def _ended(self, ok: bool, problems: list[str], **extra) -> None:
        now = time.time()
        with self.lock:
            self.state.update(round_started_unix=None, last_round=_utc(now), last_round_unix=now, ok=ok,
                              problems=problems, last_full_round=_utc(now), **extra)
            if ok:
                self.state.update(last_success=_utc(now), last_success_unix=now)
        self.beat()

    def round_unchanged(self) -> None:
        """A round skipped: the change marker says nothing this sidecar serves changed since its
        last successful full round (registry/index.py). The sidecar looked, so it is a success."""
        now = time.time()
        with self.lock:
            self.state.update(round_started_unix=None, last_round=_utc(now), last_round_unix=now, ok=True,
                              last_success=_utc(now), last_success_unix=now,
                              rounds_skipped=self.state.get("rounds_skipped", 0) + 1)
        self.beat()

    def round_done(self, r: SyncResult) -> None:
        self._ended(r.ok, r.problems, versions=r.present, failed=r.failed, held=r.held)

    def round_failed(self, exc: BaseException) -> None:
        self._ended(False, [f"round failed: {exc}"], failed=[], held=[])


def health_path(dest: str, health_file: str | None = None) -> str:
    return health_file or os.path.join(dest, HEALTH_FILE)


def read_health(path: str) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def check_health(path: str, max_age_s: float | None = None, *, now: float | None = None) -> tuple[bool, str]:
    """(healthy, one line why) from a health file: healthy when a round succeeded within
    ``max_age_s`` (default: STALE_INTERVALS sync intervals, at least MIN_MAX_AGE_S), or when a
    round is running and its heartbeat is that fresh (a long download)."""
    now = time.time() if now is None else now
    h = read_health(path)
    if h is None:
        return False, (f"no readable health file at {path}: the sync has not finished a round yet, is not "
                       "running, or writes elsewhere (--health-file)")
    if max_age_s is None:
        max_age_s = max(STALE_INTERVALS * float(h.get("interval_s") or 0), MIN_MAX_AGE_S)
    beat = h.get("heartbeat_unix")
    if beat is None or now - beat > max_age_s:
        return False, (f"the sync wrote no heartbeat for {now - beat:.0f}s (> {max_age_s:.0f}s): it is not running"
                       if beat is not None else "the health file has no heartbeat")
    problems = "; ".join(h.get("problems") or []) or "none recorded"
    ok_at = h.get("last_success_unix")
    if ok_at is not None and now - ok_at <= max_age_s:
        return True, f"last successful round {now - ok_at:.0f}s ago; versions {h.get('versions')}"
    if h.get("round_started_unix") is not None:
        return True, (f"a round is running since {now - h['round_started_unix']:.0f}s (heartbeat "
                      f"{now - beat:.0f}s ago); versions {h.get('versions')}")
    since = f"{now - ok_at:.0f}s ago" if ok_at is not None else "never"
    return False, (f"no successful sync round within {max_age_s:.0f}s (last: {since}); versions "
                   f"{h.get('versions')}; problems: {problems}")


def run_forever(one_round, *, interval: float, health: Health | None = None, what: str = "sync round") -> None:
    """The sidecars' one loop (``tfs-release sync`` and ``sync-all``): ``one_round()`` every
    ``interval`` seconds until SIGTERM/SIGINT. A failing round is logged and retried next interval
    (the round itself records it in the health file); a heartbeat thread keeps the health file fresh
    while a long round (a big download) runs."""
    stop = threading.Event()

    def _stop(*_):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    beater = None
    if health is not None:
        def _beat():
            while not stop.wait(min(max(interval, 0.5), 10.0)):
                health.beat()
        beater = threading.Thread(target=_beat, name="sync-heartbeat", daemon=True)
        beater.start()
    while not stop.is_set():
        try:
            one_round()
        except Exception as exc:  # keep the sidecar alive; the next round retries
            log.error("%s failed (retried in %.0f s): %s", what, interval, exc)
        stop.wait(interval)
    if beater is not None:
        beater.join(timeout=15)


def gated(one_round, gate, health: Health | None = None):
    """``one_round() -> ok`` behind a ChangeGate (registry/index.py): skipped while the change
    marker says nothing changed and no reconciliation is due; a failed or pending round keeps the
    next one full."""
    def round_():
        full, seen = gate.check()
        if not full:
            if health is not None:
                health.round_unchanged()
            return
        ok = False
        try:
            ok = one_round()
        finally:
            gate.done(seen, ok)
    return round_


def sync_forever(client, serving: S3Uri, dest: str, *, interval: float, keep: int | None = None,
                 on_result=None, health: Health | None = None, reconcile_s: float | None = None,
                 trusted: TrustedKeys | None = None, model: str | None = None) -> None:
    """``sync_once`` every ``interval`` seconds until SIGTERM/SIGINT (``run_forever``), skipped
    while the bucket's change marker is unchanged (``reconcile_s``: a full round at least this
    often; 0: every round lists)."""
    from registry.index import DEFAULT_RECONCILE_S, ChangeGate
    gate = ChangeGate(client, [serving.bucket], reconcile_s=DEFAULT_RECONCILE_S if reconcile_s is None else reconcile_s)

    def one_round() -> bool:
        r = sync_once(client, serving, dest, keep=keep, health=health, trusted=trusted, model=model)
        if on_result and (r.added or r.removed):
            on_result(r)
        return r.ok
    run_forever(gated(one_round, gate, health), interval=interval, health=health)
