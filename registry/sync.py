"""Mirror committed versions into a local TF Serving ``model_base_path``.

TF Serving (2.7+) cannot read s3://, so production serves from a local volume that this fills:
each committed version is downloaded into ``<dest>/.tmp-<N>/`` (a name TF Serving ignores: it only
loads numeric folders), every file's sha256 is checked against the manifest, and only then the
folder is renamed to ``<dest>/<N>`` (atomic on one filesystem). A killed sync leaves only
``.tmp-<N>``, which the next sync resumes. Versions that are no longer committed (retention,
clean-up) or fall outside ``keep`` are renamed away (``.trash-<N>``) and deleted.
One sync per folder at a time (an flock on ``<dest>/.sync.lock``).
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field

from registry import layout
from registry.errors import BadInput, IntegrityError
from registry.s3 import S3Uri, check_bucket
from registry.transfer import RemoteFile, download_files
from registry.s3 import local_path_for
from registry.versions import load_manifests

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    present: list[int] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"added": self.added, "removed": self.removed, "versions": self.present,
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


def sync_once(client, serving: S3Uri, dest: str, *, keep: int | None = None) -> SyncResult:
    if keep is not None and keep < 1:
        raise BadInput(f"--keep must be at least 1, got {keep}")
    t0 = time.monotonic()
    os.makedirs(dest, exist_ok=True)
    check_bucket(client, serving.bucket)
    res = SyncResult()
    with _Lock(dest):
        for name in os.listdir(dest):
            if name.startswith(".trash-"):
                shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
        manifests = load_manifests(client, serving)
        wanted = sorted(manifests)[-keep:] if keep else sorted(manifests)
        have = set(local_versions(dest))
        for n in wanted:
            if n not in have:
                res.bytes += _fetch_version(client, serving, n, manifests[n], dest)
                res.added.append(n)
                log.info("synced version %d into %s", n, dest)
        for name in os.listdir(dest):
            if name.startswith(".tmp-") and name[5:].isdigit() and int(name[5:]) not in wanted:
                shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
        for n in sorted(have - set(wanted)):
            _remove_version(dest, n)
            res.removed.append(n)
            log.info("removed local version %d (no longer committed or beyond keep=%s)", n, keep)
        res.present = local_versions(dest)
    res.seconds = time.monotonic() - t0
    return res


def sync_forever(client, serving: S3Uri, dest: str, *, keep: int | None = None, interval: float = 5.0,
                 on_result=None) -> None:
    """Poll until SIGTERM/SIGINT; a failing round is logged and retried next interval."""
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop["now"]:
        try:
            r = sync_once(client, serving, dest, keep=keep)
            if on_result and (r.added or r.removed):
                on_result(r)
        except Exception as exc:  # keep the sidecar alive; the next round retries
            log.error("sync round failed: %s", exc)
        deadline = time.monotonic() + interval
        while not stop["now"] and time.monotonic() < deadline:
            time.sleep(0.2)
