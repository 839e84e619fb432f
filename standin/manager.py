"""Version management of the TF-Serving stand-in: what TF Serving's FileSystemStoragePathSource,
AspiredVersionsManager (AvailabilityPreservingPolicy) and ServableStateMonitor do for one model.

- Polls ``model_base_path`` every ``file_system_poll_wait_seconds``: children whose names parse as
  integers are versions; others (``.tmp-3``, ``_manifests``) are ignored. Policy "latest": the
  highest version is the aspired one.
- A new aspired version is loaded (retried ``max_num_load_retries`` times, ``load_retry_interval``
  apart, while still aspired), warmed up, made AVAILABLE, and only then is the old one unloaded.
  A version that fails ends in state END with the error and is not retried while it stays aspired
  (as in TF Serving); the previous version keeps serving.
- States START/LOADING/AVAILABLE/UNLOADING/END are kept for every version ever seen.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time

from .errors import NOT_FOUND, OK, ServingError
from .servable import Servable

log = logging.getLogger("standin")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
STATE_NUMBERS = {START: 10, LOADING: 20, AVAILABLE: 30, UNLOADING: 40, END: 50}
_VERSION_RE = re.compile(r"\s*\+?\d+\s*")


def parse_versions(children) -> dict[int, str]:
    """absl::SimpleAtoi on each child name; duplicates ('1' and '01') keep the last in sorted order."""
    out: dict[int, str] = {}
    for child in sorted(children):
        if _VERSION_RE.fullmatch(child):
            v = int(child)
            if v in out:
                log.warning("[stand-in] Duplicate version directories detected. Version %d will be loaded "
                            "from %s, %s will be ignored.", v, child, out[v])
            out[v] = child
    return out


class ModelManager:
    def __init__(self, name: str, base_path: str, *, poll_seconds: float = 1.0, max_load_retries: int = 5,
                 load_retry_interval: float = 60.0, enable_warmup: bool = True, warmup_iterations: int = 1,
                 servable_kwargs: dict | None = None):
        self.name, self.base_path = name, base_path
        self.poll_seconds = max(poll_seconds, 0.05) if poll_seconds > 0 else 0.0
        self.max_load_retries = max_load_retries
        self.load_retry_interval = load_retry_interval
        self.enable_warmup = enable_warmup
        self.warmup_iterations = warmup_iterations
        self.servable_kwargs = servable_kwargs or {}
        self._lock = threading.Condition()
        self.states: dict[int, tuple[str, int, str]] = {}   # version -> (state, code, message)
        self.servables: dict[int, Servable] = {}            # AVAILABLE versions
        self.errored: set[int] = set()                      # aspired versions whose load failed
        self.aspired: int | None = None
        self._last_warning = None
        self.initial_done = threading.Event()               # first aspired version AVAILABLE or END
        self.initial_error: str | None = None

    # ------------------------------------------------------------------------------ states
    def _set(self, version: int, state: str, code: int = OK, message: str = "") -> None:
        with self._lock:
            self.states[version] = (state, code, message)
            self._lock.notify_all()

    def status(self, version: int | None = None) -> list[tuple[int, str, int, str]]:
        """GetModelStatusImpl: [(version, state, code, message)], highest version first."""
        with self._lock:
            if version is not None:
                if version not in self.states:
                    raise ServingError(NOT_FOUND, f"Could not find version {version} of model {self.name}")
                return [(version, *self.states[version])]
            if not self.states:
                raise ServingError(NOT_FOUND, f"Could not find any versions of model {self.name}")
            return [(v, *self.states[v]) for v in sorted(self.states, reverse=True)]

    def get(self, version: int | None = None) -> Servable:
        """A servable handle (acquired: call release()), like ServerCore::GetServableHandle."""
        with self._lock:
            if version is None:
                if self.servables:
                    return self.servables[max(self.servables)].acquire()
                raise ServingError(NOT_FOUND, f"Servable not found for request: Latest({self.name})")
            if version in self.servables:
                return self.servables[version].acquire()
            raise ServingError(NOT_FOUND, f"Servable not found for request: Specific({self.name}, {version})")

    # ------------------------------------------------------------------------------- polling
    def _aspired_version(self) -> int | None:
        if not os.path.exists(self.base_path):
            self._warn_once(logging.ERROR, f"File system storage path source: Could not find base path "
                            f"{self.base_path} for servable {self.name} with error NOT_FOUND: "
                            f"{self.base_path} not found")
            return None
        try:
            versions = parse_versions(os.listdir(self.base_path))
        except OSError as exc:
            log.error("[stand-in] Cannot list %s: %s", self.base_path, exc)
            return None
        if not versions:
            self._warn_once(logging.WARNING, f"No versions of servable {self.name} found under base path "
                            f"{self.base_path}. Did you forget to name your leaf directory as a number (eg. '/1/')?")
            return None
        self._last_warning = None
        return max(versions)

    def _warn_once(self, level: int, msg: str) -> None:
        """Polling repeats every second: say a problem once, until it changes."""
        if msg != self._last_warning:
            log.log(level, "[stand-in] %s", msg)
            self._last_warning = msg

    def poll_once(self, stop: threading.Event | None = None) -> None:
        latest = self._aspired_version()
        if latest is None:  # an empty aspired list is refused (TF Serving never unloads everything)
            return
        if latest != self.aspired:
            if self.aspired is not None:
                log.info("[stand-in] File-system polling update: aspired version of %s is now %d (was %d)",
                         self.name, latest, self.aspired)
            self.aspired = latest
        # errored harnesses that are no longer aspired are forgotten (a re-appearing folder is reloaded)
        self.errored = {v for v in self.errored if v == latest}
        if latest not in self.servables and latest not in self.errored:
            self._load(latest, stop)
        # AvailabilityPreservingPolicy: unload non-aspired versions once the aspired one serves
        while True:
            with self._lock:
                unaspired = sorted(v for v in self.servables if v != self.aspired)
                aspired_ready = self.aspired in self.servables
            if not unaspired or not (aspired_ready or len(unaspired) > 1):
                break
            self._unload(unaspired[0])

    def _load(self, version: int, stop: threading.Event | None) -> None:
        path = os.path.join(self.base_path, parse_versions(os.listdir(self.base_path)).get(version, str(version)))
        sid = f"{{name: {self.name} version: {version}}}"
        self._set(version, START)
        log.info("[stand-in] Approving load for servable version %s", sid)
        self._set(version, LOADING)
        attempt = 0
        t_all = time.monotonic()
        while True:
            servable = Servable(self.name, version, path, **self.servable_kwargs)
            try:
                log.info("[stand-in] Loading servable version %s from %s (TF1 Session loader, tags %s)",
                         sid, path, ",".join(servable.tags))
                took = servable.load()
                log.info("[stand-in] SavedModel load of %s: %d signatures, took %.3f s", sid,
                         len(servable.signature_defs()), took)
                if self.enable_warmup:
                    n, wt = servable.warmup(self.warmup_iterations)
                    if n:
                        log.info("[stand-in] Finished reading warmup data for model at %s. Number of warmup "
                                 "records read: %d. Elapsed time (microseconds): %d.", path, n, int(wt * 1e6))
                break
            except ServingError as err:
                servable.close()
                attempt += 1
                still_aspired = self._aspired_version() == version
                if attempt > self.max_load_retries or not still_aspired or (stop and stop.is_set()):
                    self._set(version, END, err.code, err.message)
                    self.errored.add(version)
                    log.error("[stand-in] Failed to load servable version %s after %d attempt(s) in %.3f s: %s",
                              sid, attempt, time.monotonic() - t_all, err)
                    self._initial(error=f"{{{sid} due to error: {err}}}")
                    return
                log.warning("[stand-in] Loading servable version %s failed (%s); retrying in %.1f s "
                            "(retry %d of %d)", sid, err, self.load_retry_interval, attempt, self.max_load_retries)
                if stop is not None and stop.wait(self.load_retry_interval):
                    self._set(version, END, err.code, err.message)  # shutting down
                    return
                if stop is None:
                    time.sleep(self.load_retry_interval)
        with self._lock:
            self.servables[version] = servable
        self._set(version, AVAILABLE)
        log.info("[stand-in] Successfully loaded servable version %s in %.3f s (warmup records: %d)", sid,
                 time.monotonic() - t_all, servable.warmup_records)
        self._initial()

    def _initial(self, error: str | None = None) -> None:
        if not self.initial_done.is_set():
            self.initial_error = error
            self.initial_done.set()

    def _unload(self, version: int) -> None:
        sid = f"{{name: {self.name} version: {version}}}"
        t0 = time.monotonic()
        self._set(version, UNLOADING)
        log.info("[stand-in] Quiescing servable version %s", sid)
        with self._lock:
            servable = self.servables.pop(version)
        servable.wait_idle()
        servable.close()
        self._set(version, END)
        log.info("[stand-in] Done unloading servable version %s in %.3f s", sid, time.monotonic() - t0)

    def run(self, stop: threading.Event) -> None:
        """The polling loop (a thread)."""
        while not stop.is_set():
            try:
                self.poll_once(stop)
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("[stand-in] polling %s failed", self.base_path)
            if self.poll_seconds <= 0 and self.initial_done.is_set():
                return  # file_system_poll_wait_seconds=0: load once, never poll again
            stop.wait(self.poll_seconds or 1.0)

    def close(self) -> None:
        with self._lock:
            servables = list(self.servables.values())
            self.servables.clear()
        for s in servables:
            s.close()
