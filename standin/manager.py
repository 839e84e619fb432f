"""Version management of the TF-Serving stand-in: what TF Serving's FileSystemStoragePathSource,
AspiredVersionsManager (AvailabilityPreservingPolicy) and ServableStateMonitor do for one model.

- Polls ``base_path`` every ``file_system_poll_wait_seconds``: children whose names parse as
  integers are versions; others (``.tmp-3``, ``_manifests``) are ignored. The model's version
  policy picks the aspired versions among them: ``latest`` (the ``num_versions`` highest, default
  1), ``all``, or ``specific`` (the listed versions that exist; missing ones are logged).
- AvailabilityPreservingPolicy, one action at a time: unload the lowest un-aspired AVAILABLE
  version when no version is aspired, or an aspired one is AVAILABLE, or more than one un-aspired
  one is; otherwise load the highest new aspired version. So a new version is loaded (retried
  ``max_num_load_retries`` times, ``load_retry_interval`` apart, while still aspired), warmed up,
  made AVAILABLE, and only then is the old one unloaded. A version that fails ends in state END
  with the error and is not retried while it stays aspired; the others keep serving.
- At server start the first batch of aspired versions loads in parallel (ServerCore's fast
  initial load); later loads run one at a time in this model's polling thread.
- ``configure`` changes the base path / policy (a config reload) or, with ``None``, un-aspires
  every version (the model left the config): its versions are unloaded, states are kept.
- States START/LOADING/AVAILABLE/UNLOADING/END are kept for every version ever seen.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time

from .config import VersionPolicy
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


def servable_id(name: str, version: int) -> str:
    """ServableId::DebugString()."""
    return f"{{name: {name} version: {version}}}"


class ModelManager:
    def __init__(self, name: str, base_path: str, *, policy: VersionPolicy | None = None,
                 poll_seconds: float = 1.0, max_load_retries: int = 5, load_retry_interval: float = 60.0,
                 enable_warmup: bool = True, warmup_iterations: int = 1, servable_kwargs: dict | None = None,
                 fast_initial_load: bool = False):
        self.name, self.base_path = name, base_path
        self.policy: VersionPolicy | None = policy or VersionPolicy()
        self.poll_seconds = max(poll_seconds, 0.05) if poll_seconds > 0 else 0.0
        self.max_load_retries = max_load_retries
        self.load_retry_interval = load_retry_interval
        self.enable_warmup = enable_warmup
        self.warmup_iterations = warmup_iterations
        self.servable_kwargs = servable_kwargs or {}
        self.fast_initial_load = fast_initial_load
        self._lock = threading.Condition()
        self.states: dict[int, tuple[str, int, str]] = {}   # version -> (state, code, message)
        self.servables: dict[int, Servable] = {}            # AVAILABLE versions
        self.load_seconds: dict[int, float] = {}            # version -> seconds of its last successful load
        self.errored: set[int] = set()                      # aspired versions whose load failed
        self.aspired: set[int] | None = None
        self._warnings: set[str] = set()       # problems said at the last poll (not repeated)
        self._poll_warnings: set[str] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # ServableStateMonitor's "any version of this model reached AVAILABLE or END" since the model
        # was (re-)added: what ServerCore waits for at startup and for new models on a reload
        self.reached = threading.Event()
        self.reached_error: str | None = None

    # ------------------------------------------------------------------------------ states
    def _set(self, version: int, state: str, code: int = OK, message: str = "") -> None:
        with self._lock:
            self.states[version] = (state, code, message)
            self._lock.notify_all()

    def state_of(self, version: int) -> str | None:
        with self._lock:
            entry = self.states.get(version)
            return entry[0] if entry else None

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

    # ------------------------------------------------------------------------- configuration
    def configure(self, base_path: str | None, policy: VersionPolicy | None) -> None:
        """A config reload: new base path and policy, or (policy None) the model left the config."""
        with self._lock:
            re_added = self.policy is None and policy is not None
            changed = (base_path or self.base_path, policy) != (self.base_path, self.policy)
            if base_path:
                self.base_path = base_path
            self.policy = policy
            if re_added:
                self.reached = threading.Event()
                self.reached_error = None
        if changed:
            log.info("[stand-in] Model %s: %s", self.name,
                     "removed from the config: unloading its versions" if policy is None
                     else f"version policy {policy}, base path {self.base_path}")
        self._wake.set()

    # ------------------------------------------------------------------------------- polling
    def _versions_on_disk(self, base_path: str, warn: bool) -> dict[int, str] | None:
        """{version: child folder}, or None when the base path cannot be listed."""
        if not os.path.exists(base_path):
            if warn:
                self._warn(logging.ERROR, f"File system storage path source: Could not find base path "
                           f"{base_path} for servable {self.name} with error NOT_FOUND: {base_path} not found")
            return None
        try:
            return parse_versions(os.listdir(base_path))
        except OSError as exc:
            if warn:
                self._warn(logging.ERROR, f"Cannot list {base_path}: {exc}")
            return None

    def _aspired_now(self, warn: bool = False) -> tuple[set[int], dict[int, str]] | None:
        """(aspired versions, version folders) for the current policy; None when nothing can be
        said (base path missing or unreadable, or no aspired version found: TF Serving's source
        would emit an empty aspired list, which the stand-in does not act on)."""
        with self._lock:
            base_path, policy = self.base_path, self.policy
        if policy is None:
            return set(), {}
        on_disk = self._versions_on_disk(base_path, warn)
        if on_disk is None:
            return None
        aspired, missing = policy.aspired(on_disk)
        if warn:
            for v in missing:
                self._warn(logging.WARNING, f"Version {v} of servable {self.name}, which was requested to be served "
                           "as a 'specific' version in the servable's version policy, was not found in the file system")
            if policy.kind == "specific" and not policy.versions:
                self._warn(logging.WARNING, f"No specific versions requested for servable {self.name}.")
            elif not aspired:
                self._warn(logging.WARNING, f"No versions of servable {self.name} found under base path {base_path}. "
                           "Did you forget to name your leaf directory as a number (eg. '/1/')?")
        return (aspired, on_disk) if aspired else None

    def _warn(self, level: int, msg: str) -> None:
        """Polling repeats every second: say a problem once, until it goes away."""
        self._poll_warnings.add(msg)
        if msg not in self._warnings:
            log.log(level, "[stand-in] %s", msg)

    def poll_once(self, stop: threading.Event | None = None) -> None:
        self._poll_warnings = set()
        found = self._aspired_now(warn=True)
        self._warnings = self._poll_warnings
        if found is None:
            return
        aspired, on_disk = found
        if aspired != self.aspired:
            if self.aspired is not None:
                log.info("[stand-in] File-system polling update: aspired versions of %s are now %s (were %s)",
                         self.name, sorted(aspired) or "none", sorted(self.aspired) or "none")
            self.aspired = aspired
        with self._lock:
            # errored versions that are no longer aspired are forgotten (a re-appearing folder is reloaded)
            self.errored &= aspired
        self._apply(aspired, on_disk, stop)

    def _apply(self, aspired: set[int], on_disk: dict[int, str], stop: threading.Event | None) -> None:
        """AvailabilityPreservingPolicy::GetNextAction until there is nothing left to do."""
        while not (stop and stop.is_set()):
            with self._lock:
                serving = set(self.servables)
                errored = set(self.errored)
            unaspired = serving - aspired
            if unaspired and (not aspired or aspired & serving or len(unaspired) > 1):
                self._unload(min(unaspired))
                continue
            new = sorted(aspired - serving - errored, reverse=True)
            if not new:
                break
            paths = {v: os.path.join(self.base_path, on_disk.get(v, str(v))) for v in new}
            if self.fast_initial_load and len(new) > 1:
                threads = [threading.Thread(target=self._load, args=(v, paths[v], stop), daemon=True,
                                            name=f"load-{self.name}-{v}") for v in new]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                self._load(new[0], paths[new[0]], stop)
            self.fast_initial_load = False
        with self._lock:
            if aspired & set(self.servables):
                self._reached()

    def _load(self, version: int, path: str, stop: threading.Event | None) -> None:
        sid = servable_id(self.name, version)
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
                now = self._aspired_now()
                still_aspired = now is not None and version in now[0]
                if attempt > self.max_load_retries or not still_aspired or (stop and stop.is_set()):
                    self._set(version, END, err.code, err.message)
                    with self._lock:
                        self.errored.add(version)
                        self._reached(error=f"{sid} due to error: {err}")
                    log.error("[stand-in] Failed to load servable version %s after %d attempt(s) in %.3f s: %s",
                              sid, attempt, time.monotonic() - t_all, err)
                    return
                log.warning("[stand-in] Loading servable version %s failed (%s); retrying in %.1f s "
                            "(retry %d of %d)", sid, err, self.load_retry_interval, attempt, self.max_load_retries)
                if stop is not None and stop.wait(self.load_retry_interval):
                    self._set(version, END, err.code, err.message)  # shutting down
                    return
                if stop is None:
                    time.sleep(self.load_retry_interval)
        took_all = time.monotonic() - t_all
        with self._lock:
            self.servables[version] = servable
            self.load_seconds[version] = took_all
        self._set(version, AVAILABLE)
        # a stable line (standin/README.md): per-version load seconds, warmup included
        log.info("[stand-in] Successfully loaded servable version %s in %.3f s (warmup records: %d)", sid,
                 took_all, servable.warmup_records)
        with self._lock:
            self._reached()

    def _reached(self, error: str | None = None) -> None:
        """(lock held) the first version since the model was (re-)added is AVAILABLE or failed."""
        if not self.reached.is_set():
            self.reached_error = error
            self.reached.set()

    def _unload(self, version: int) -> None:
        sid = servable_id(self.name, version)
        t0 = time.monotonic()
        self._set(version, UNLOADING)
        log.info("[stand-in] Quiescing servable version %s", sid)
        with self._lock:
            servable = self.servables.pop(version)
        servable.wait_idle()
        servable.close()
        self._set(version, END)
        log.info("[stand-in] Done unloading servable version %s in %.3f s", sid, time.monotonic() - t0)

    def _sleep(self, stop: threading.Event) -> None:
        """Until the next poll: file_system_poll_wait_seconds, or a configure(); with polling off
        (0) the folder is looked at until a first version is found, then only on configure()."""
        if self.poll_seconds > 0:
            end = time.monotonic() + self.poll_seconds
        elif not self.reached.is_set():
            end = time.monotonic() + 1.0
        else:
            end = None
        while not stop.is_set():
            step = 0.5 if end is None else min(0.5, end - time.monotonic())
            if step <= 0:
                return
            if self._wake.wait(step):
                self._wake.clear()
                return

    def run(self, stop: threading.Event) -> None:
        """The polling loop (a thread)."""
        while not stop.is_set():
            try:
                self.poll_once(stop)
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("[stand-in] polling %s failed", self.base_path)
            self._sleep(stop)

    def start(self, stop: threading.Event) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, args=(stop,), name=f"fs-poll-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        with self._lock:
            servables = list(self.servables.values())
            self.servables.clear()
        for s in servables:
            s.close()
