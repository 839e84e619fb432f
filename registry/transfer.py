"""Parallel, verified, resumable transfers between S3 and a local folder, in bounded memory.

Download: a thread pool of ranged GETs (``PART`` bytes each) streamed in ``CHUNK`` pieces straight
into a preallocated ``<file>.partial`` with ``os.pwrite`` (never a whole part in memory), each GET
pinned to the object's ETag with If-Match. Finished parts of a multi-part file are appended to
``<file>.partial.parts`` so a killed download resumes where it stopped (a single-part file just
starts over). A file is renamed into place only after its size (and its MD5 when the ETag is a
plain MD5, and its sha256 when one is expected) matched. The digests are computed while the file
downloads, by a small pool that reads back each run of finished parts in order, so verifying
overlaps the transfer instead of re-reading every file after it; only the digests that are
checked are computed.

Upload: files are hashed (sha256, kept as object metadata ``sha256`` and returned for manifests)
by a small pool while s3transfer's manager uploads the hashed ones with large parts.
"""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import botocore.exceptions
from boto3.s3.transfer import TransferConfig, create_transfer_manager

from registry.errors import IntegrityError, StorageError
from registry.s3 import check_key, local_path_for, s3_errors, translate

log = logging.getLogger(__name__)

MB = 1024 * 1024
PART = 8 * MB
CHUNK = 1 * MB
WORKERS = 8
HASHERS = 2  # threads digesting finished parts while the rest downloads
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RemoteFile:
    key: str
    dest: str
    size: int
    etag: str = ""
    sha256: str | None = None  # expected; verified after download when given


@dataclass
class TransferStats:
    files: int = 0
    bytes: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds else 0.0


def sha256_file(path: str, *, md5: bool = False) -> tuple[str, str | None]:
    h = hashlib.sha256()
    m = hashlib.md5() if md5 else None
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            if m:
                m.update(view[:n])
    return h.hexdigest(), (m.hexdigest() if m else None)


class _FileState:
    """Bookkeeping of one file being downloaded (shared by its part workers and its hasher).

    The file's digests are computed while it downloads: a hasher reads back (from the page cache)
    the contiguous run of finished parts after the last one it hashed, so when the last part lands
    only the parts still in flight are left to hash, and the file is verified and renamed."""

    def __init__(self, rf: RemoteFile):
        self.rf = rf
        self.partial = rf.dest + ".partial"
        self.parts_log = self.partial + ".parts"
        self.lock = threading.Lock()
        n = max(1, -(-rf.size // PART))
        self.ranges = [(i * PART, min(rf.size, (i + 1) * PART) - 1) for i in range(n)]
        # a single-part file restarts from scratch anyway: no resume log for it (most small files)
        self.logged = n > 1
        done = self._read_done() if self.logged else set()
        if not rf.size:
            done = {0}
        self.done = set(done)
        self.todo = [i for i in range(n) if i not in done]
        self.remaining = len(self.todo)
        self.want_md5 = bool(rf.etag and _PLAIN_MD5.match(rf.etag))
        self.md5 = hashlib.md5() if self.want_md5 else None
        self.sha = hashlib.sha256() if rf.sha256 else None
        self.next_hash = 0      # parts [0, next_hash) are in the digests
        self.hashing = False    # a hasher task is running (at most one per file)
        os.makedirs(os.path.dirname(rf.dest), exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT
        self.fd = os.open(self.partial, flags, 0o644)
        if not done or not self.logged:
            os.ftruncate(self.fd, rf.size)
            if self.logged:
                with open(self.parts_log, "w") as fh:
                    fh.write(f"etag {rf.etag}\n")
        self.log_fh = open(self.parts_log, "a") if self.logged else None
        self.closed = False

    def _read_done(self) -> set[int]:
        try:
            with open(self.parts_log) as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return set()
        if not lines or lines[0] != f"etag {self.rf.etag}" or not os.path.exists(self.partial) \
                or os.path.getsize(self.partial) != self.rf.size:
            return set()  # a different object version, or no partial file: start over
        return {int(x) for x in lines[1:] if x.isdigit()}

    def start_hasher(self) -> bool:
        """True when the caller must run the hasher now (the next part to hash is there)."""
        with self.lock:
            if self.hashing or self.next_hash not in self.done:
                return False
            self.hashing = True
            return True

    def part_done(self, i: int) -> bool:
        """Record part i; True when the caller must run the hasher."""
        with self.lock:
            if self.log_fh:
                self.log_fh.write(f"{i}\n")
                self.log_fh.flush()
            self.done.add(i)
            self.remaining -= 1
            if self.hashing or i != self.next_hash:
                return False  # the running hasher picks it up, or an earlier part is missing
            self.hashing = True
            return True

    def hash_available(self) -> bool:
        """Digest every finished part in order; True once the whole file is digested (exactly once,
        to the one running hasher)."""
        buf = bytearray(CHUNK) if (self.md5 or self.sha) else None
        while True:
            with self.lock:
                i = self.next_hash
                if i >= len(self.ranges) or i not in self.done:
                    self.hashing = False
                    return i >= len(self.ranges)
            if buf is not None:
                start, end = self.ranges[i]
                off = start
                view = memoryview(buf)
                while off <= end:
                    n = os.preadv(self.fd, [view[:min(CHUNK, end + 1 - off)]], off)
                    if n <= 0:
                        raise IntegrityError(f"{self.partial}: short read at {off} while verifying")
                    if self.md5:
                        self.md5.update(view[:n])
                    if self.sha:
                        self.sha.update(view[:n])
                    off += n
            with self.lock:
                self.next_hash = i + 1

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.log_fh:
            self.log_fh.close()


def _get_range(client, bucket: str, st: _FileState, i: int) -> None:
    start, end = st.ranges[i]
    kwargs = {"Bucket": bucket, "Key": st.rf.key, "Range": f"bytes={start}-{end}"}
    if st.rf.etag:
        kwargs["IfMatch"] = st.rf.etag
    for attempt in range(4):
        off = start
        try:
            body = client.get_object(**kwargs)["Body"]
            try:
                while True:
                    chunk = body.read(CHUNK)
                    if not chunk:
                        break
                    os.pwrite(st.fd, chunk, off)
                    off += len(chunk)
            finally:
                body.close()
            break
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                raise IntegrityError(f"s3://{bucket}/{st.rf.key} changed while it was downloaded "
                                     "(ETag no longer matches): run again.") from None
            raise translate(exc, bucket=bucket, key=st.rf.key) from None
        except (botocore.exceptions.BotoCoreError, ConnectionError, OSError) as exc:
            if attempt == 3:
                raise StorageError(f"download of s3://{bucket}/{st.rf.key} bytes {start}-{end} failed "
                                   f"after retries: {type(exc).__name__}") from None
            time.sleep(0.5 * (attempt + 1))
    if off != end + 1:
        raise IntegrityError(f"s3://{bucket}/{st.rf.key}: got {off - start} bytes for range "
                             f"{start}-{end}; the object is shorter than listed. Run again.")


def _discard(st: _FileState) -> None:
    for p in (st.partial, st.parts_log):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _hash_then_maybe_finalize(bucket: str, st: _FileState) -> None:
    if st.hash_available():
        _finalize(bucket, st)


def _finalize(bucket: str, st: _FileState) -> None:
    """Every part is there and digested: check size and digests, then rename into place."""
    rf = st.rf
    st.close()
    size = os.path.getsize(st.partial)
    if size != rf.size:
        raise IntegrityError(f"s3://{bucket}/{rf.key}: downloaded {size} bytes, expected {rf.size}")
    if st.md5 and st.md5.hexdigest() != rf.etag:
        _discard(st)
        raise IntegrityError(f"s3://{bucket}/{rf.key}: MD5 {st.md5.hexdigest()} does not match ETag "
                             f"{rf.etag}; the download was corrupted. Run again.")
    if st.sha and st.sha.hexdigest() != rf.sha256:
        _discard(st)
        raise IntegrityError(f"s3://{bucket}/{rf.key}: sha256 {st.sha.hexdigest()} does not match the "
                             f"manifest's {rf.sha256}: the stored object is corrupt. Run `tfs-release verify`.")
    os.replace(st.partial, rf.dest)
    try:
        os.unlink(st.parts_log)
    except FileNotFoundError:
        pass


def _already_there(rf: RemoteFile) -> bool:
    """A finished earlier download of the same bytes (resume at file granularity)."""
    if os.path.exists(rf.dest + ".partial") or not os.path.isfile(rf.dest) \
            or os.path.getsize(rf.dest) != rf.size:
        return False
    return rf.sha256 is None or sha256_file(rf.dest)[0] == rf.sha256


def download_files(client, bucket: str, files: list[RemoteFile], *, workers: int = WORKERS) -> TransferStats:
    """Download ``files`` concurrently; resumes ``.partial`` leftovers; verifies before renaming."""
    t0 = time.monotonic()
    stats = TransferStats()
    states = []
    for rf in files:
        if _already_there(rf):
            stats.skipped += 1
            continue
        states.append(_FileState(rf))
    fin_pool = ThreadPoolExecutor(max_workers=HASHERS, thread_name_prefix="verify")
    finals: list[Future] = []
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="get") as pool:
            futures = []
            for st in states:
                if st.start_hasher():  # resumed parts, or an empty file: digest them meanwhile
                    finals.append(fin_pool.submit(_hash_then_maybe_finalize, bucket, st))
                for i in st.todo:
                    futures.append(pool.submit(_part_then_maybe_hash, client, bucket, st, i,
                                               fin_pool, finals))
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in done:
                f.result()
        for f in finals:
            f.result()
    finally:
        fin_pool.shutdown(wait=True, cancel_futures=True)
        for st in states:
            st.close()
    stats.files = len(states)
    stats.bytes = sum(st.rf.size for st in states)
    stats.seconds = time.monotonic() - t0
    return stats


def _part_then_maybe_hash(client, bucket, st, i, fin_pool, finals):
    _get_range(client, bucket, st, i)
    if st.part_done(i):
        finals.append(fin_pool.submit(_hash_then_maybe_finalize, bucket, st))


def download_prefix(client, bucket: str, prefix: str, dest_dir: str, *, workers: int = WORKERS,
                    expected: dict[str, str] | None = None, exclude=lambda rel: False) -> TransferStats:
    """Mirror every object under ``prefix`` into ``dest_dir`` (keys checked; none may escape it).
    ``expected`` maps relative keys to sha256s to verify."""
    from registry.s3 import list_objects
    files = []
    for obj in list_objects(client, bucket, prefix):
        rel = obj["Key"][len(prefix):]
        if not rel or rel.endswith("/") or exclude(rel):
            continue
        check_key(obj["Key"])
        files.append(RemoteFile(key=obj["Key"], dest=local_path_for(dest_dir, rel), size=obj["Size"],
                                etag=obj.get("ETag", "").strip('"'),
                                sha256=(expected or {}).get(rel)))
    return download_files(client, bucket, files, workers=workers)


def upload_config() -> TransferConfig:
    return TransferConfig(multipart_threshold=16 * MB, multipart_chunksize=16 * MB,
                          max_concurrency=20, use_threads=True)


def local_files(local_dir: str) -> list[tuple[str, str]]:
    """(relative posix path, absolute path) of every regular file under local_dir, sorted."""
    out = []
    for root, dirs, names in os.walk(local_dir):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.islink(p):
                raise StorageError(f"refusing to upload symlink {p}: copy the real file in instead.")
            rel = os.path.relpath(p, local_dir).replace(os.sep, "/")
            out.append((rel, p))
    return out


def upload_dir(client, local_dir: str, bucket: str, prefix: str) -> list[dict]:
    """Upload every file of ``local_dir`` under ``prefix``; returns [{path, size, sha256}] sorted.
    Each object carries its sha256 as metadata so copies can be checked without re-reading."""
    files = local_files(local_dir)
    results: dict[str, dict] = {}
    t0 = time.monotonic()
    tm = create_transfer_manager(client, upload_config())
    uploads = []
    lock = threading.Lock()

    def hash_and_upload(rel: str, path: str):
        sha, _ = sha256_file(path)
        size = os.path.getsize(path)
        with lock:
            results[rel] = {"path": rel, "size": size, "sha256": sha}
        key = prefix + check_key(rel)
        extra = {"Metadata": {"sha256": sha}}
        ctype = mimetypes.guess_type(rel)[0]
        if ctype:
            extra["ContentType"] = ctype
        fut = tm.upload(path, bucket, key, extra_args=extra)
        with lock:
            uploads.append((key, fut))

    with s3_errors(bucket, prefix):
        try:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="hash") as pool:
                for f in [pool.submit(hash_and_upload, rel, p) for rel, p in files]:
                    f.result()
            for key, fut in uploads:
                try:
                    fut.result()
                except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                    raise translate(exc, bucket=bucket, key=key) from None
        finally:
            tm.shutdown()
    total = sum(r["size"] for r in results.values())
    dt = time.monotonic() - t0
    log.info("uploaded %d files, %.1f MB to s3://%s/%s in %.2fs (%.0f MB/s)", len(results), total / MB,
             bucket, prefix, dt, total / MB / dt if dt else 0)
    return [results[k] for k in sorted(results)]
