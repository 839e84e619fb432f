"""Containers left behind: who owns a container, when it expires, and what removes it.

Every container this project starts on a Docker engine (a validation's temporary serving container,
role ``validation``; a step container of the worker-image mode, role ``step``) carries labels that
name its owner (the validator process, or the Airflow task process that runs the step):

  tfs-release.role             validation | step
  tfs-release.host             the owner's hostname (in a container: its container id)
  tfs-release.host-id          the owner's PID namespace on its kernel (boot id + pid-namespace
                               inode, hashed): equal only where the owner's pid can be checked
  tfs-release.pid              the owner's pid
  tfs-release.pid-start        the owner's start time (a reused pid has another one)
  tfs-release.expires          unix time after which the container is garbage, whoever owns it
  tfs-release.owner-container  set by an owner that runs in a container on the same engine: its id

``decide`` removes a container only when
- its expiry passed (its own command also ends then: ``expiring_entrypoint`` wraps it in
  ``timeout``), or
- its owner runs in this PID namespace (same host-id) and that process is gone, or
- its owner is a container on this engine that is gone or no longer running.
Anything else (another host's container, an owner we cannot check) stays until it expires.

The reaper (``spawn_reaper``; ``python -m serving.sweep watch NAME ...``) is a small detached
process an owner starts beside each container: it removes the container as soon as the owner is
gone (SIGKILL, a lost task) or the expiry passes, and exits once the container is gone. So a
container outlives a killed owner by about a second, even when no other validation runs; the sweep
at the start of each validation (``sweep``) and ``python -m serving.sweep sweep`` (cron) catch the
rest (an engine on another machine, a reaper that died with its host).

Stdlib and the docker SDK only (imported lazily): the Airflow side uses it too.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from functools import lru_cache
from typing import Callable

log = logging.getLogger(__name__)

ROLE = "tfs-release.role"
HOST = "tfs-release.host"
HOST_ID = "tfs-release.host-id"
PID = "tfs-release.pid"
PID_START = "tfs-release.pid-start"
EXPIRES = "tfs-release.expires"
OWNER_CONTAINER = "tfs-release.owner-container"
ROLES = ("validation", "step")
DEFAULT_TTL_S = 3600.0
TTL_ENV = "TFS_RELEASE_SERVING_TTL_S"  # set by the release DAG's validate task: its execution_timeout
KILL_AFTER_S = 10  # `timeout -k`: SIGKILL this long after the expiry's SIGTERM


@lru_cache(maxsize=1)
def host_id() -> str:
    """This process's PID namespace on this kernel boot: owners with the same host-id can check each
    other's pids; anything else (another machine, another container) cannot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the hostname is all we have
        boot, ns = "", socket.gethostname()
    return hashlib.sha256(f"{boot}/{ns}".encode()).hexdigest()[:16]


def proc_start(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, /proc/PID/stat field 22); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Is ``pid`` running, and (given its start time) still the same process?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start:
        now = proc_start(pid)
        return now is None or now == start
    return True


def owner_labels(role: str, *, ttl_s: float, pid: int | None = None,
                 owner_container: str | None = None, now: float | None = None) -> dict[str, str]:
    """The labels that let ``decide`` tell a leftover from a container in use (owner: ``pid``,
    default this process)."""
    pid = os.getpid() if pid is None else pid
    now = time.time() if now is None else now
    labels = {ROLE: role, HOST: socket.gethostname(), HOST_ID: host_id(), PID: str(pid),
              EXPIRES: str(int(now + ttl_s))}
    start = proc_start(pid)
    if start:
        labels[PID_START] = start
    if owner_container:
        labels[OWNER_CONTAINER] = owner_container
    return labels


def ttl_from_env(env=None, default: float = DEFAULT_TTL_S) -> float:
    """Seconds a serving container may live: ``TFS_RELEASE_SERVING_TTL_S`` (the release DAG sets it to
    the validate task's execution_timeout), else ``default``."""
    env = os.environ if env is None else env
    raw = (env.get(TTL_ENV) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise ValueError(f"{TTL_ENV}={raw!r}: use a number of seconds > 0")
    return value


def decide(labels: dict, *, now: float, my_host_id: str, my_hostname: str,
           alive: Callable[[int, str | None], bool],
           container_running: Callable[[str], bool | None]) -> tuple[bool, str]:
    """(remove?, why) for one container, from its labels alone plus two probes: ``alive(pid, start)``
    for a pid in this namespace, ``container_running(ref)``: True running, False exists but stopped,
    None no such container on this engine. Pure: the unit tests drive it with hand-made states."""
    expires = labels.get(EXPIRES, "")
    try:
        expiry = float(expires) if expires else None
    except ValueError:
        expiry = None
    if expiry is not None and now >= expiry:
        return True, f"expired {now - expiry:.0f}s ago"
    pid_raw, start = labels.get(PID, ""), labels.get(PID_START) or None
    pid = int(pid_raw) if pid_raw.isdigit() else 0
    owner_container = labels.get(OWNER_CONTAINER)
    if owner_container:
        running = container_running(owner_container)
        if running:
            return False, f"its owner container {owner_container} runs"
        return True, f"its owner container {owner_container} is {'stopped' if running is False else 'gone'}"
    same_ns = labels.get(HOST_ID) == my_host_id if labels.get(HOST_ID) else labels.get(HOST) == my_hostname
    if same_ns:
        if alive(pid, start):
            return False, f"its owner pid {pid} runs here"
        return True, f"its owner pid {pid} is gone"
    until = f"until it expires in {expiry - now:.0f}s" if expiry is not None else "(no expiry label: remove it by hand)"
    return False, f"owned by another host ({labels.get(HOST, '?')}): left alone {until}"


def _running_probe(client):
    import docker

    def running(ref: str) -> bool | None:
        try:
            return client.containers.get(ref).status in ("running", "restarting")
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError:
            return True  # cannot tell: keep
    return running


def sweep(client, roles: tuple[str, ...] = ("validation",), *, now: float | None = None) -> list[str]:
    """Remove this project's containers of ``roles`` that ``decide`` calls leftovers; their names."""
    import docker
    now = time.time() if now is None else now
    me, hostname, running = host_id(), socket.gethostname(), _running_probe(client)
    removed = []
    for role in roles:
        # ignore_removed: a container removed between the listing and its inspect (its own validator
        # cleaning up right now) is not an error, only gone
        for c in client.containers.list(all=True, filters={"label": f"{ROLE}={role}"}, ignore_removed=True):
            remove, why = decide(c.labels or {}, now=now, my_host_id=me, my_hostname=hostname,
                                 alive=pid_alive, container_running=running)
            if not remove:
                continue
            try:
                c.remove(force=True, v=True)  # v: a serving container's anonymous model volume
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:  # being removed by its owner right now
                log.info("could not remove leftover %s: %s", c.name, exc)
                continue
            remove_network(client, c.name)
            log.info("removed leftover %s container %s: %s", role, c.name, why)
            removed.append(c.name)
    return removed


def remove_network(client, name: str) -> None:
    """The internal network a serving container had to itself (it has the container's name:
    serving/launchers.py), once nothing uses it; a no-op when there is none or it is in use
    (the next validation's prune takes it then)."""
    import docker
    try:
        client.networks.get(name).remove()
    except docker.errors.APIError:  # NotFound included
        pass


def dependents(client, container) -> list:
    """Containers whose owner is ``container`` (serving containers of a containerised validator)."""
    refs = {container.id[:12], container.name}
    return [c for c in client.containers.list(all=True, filters={"label": OWNER_CONTAINER}, ignore_removed=True)
            if (c.labels or {}).get(OWNER_CONTAINER) in refs]


def stop_and_remove(client, ref: str, *, grace_s: float = 0.0, why: str = "") -> bool:
    """SIGTERM (when ``grace_s``: the owner inside may clean up), wait, then remove ``ref`` and what it
    owned. False when it was already gone."""
    import docker
    try:
        c = client.containers.get(ref)
    except docker.errors.NotFound:
        return False
    if grace_s > 0 and c.status == "running":
        try:
            c.kill(signal="SIGTERM")
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                c.reload()
                if c.status != "running":
                    break
                time.sleep(0.25)
        except docker.errors.APIError:
            pass
    owned = dependents(client, c)
    for d in owned:
        try:
            d.remove(force=True, v=True)
            log.info("removed %s (owned by %s)", d.name, c.name)
        except docker.errors.APIError:
            pass
    try:
        c.remove(force=True, v=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise
    for name in (c.name, *(d.name for d in owned)):  # once the validator's container left them too
        remove_network(client, name)
    log.info("removed %s%s", c.name, f": {why}" if why else "")
    return True


def watch(client, name: str, *, pid: int, pid_start: str | None, expires: float | None,
          grace_s: float = 0.0, poll_s: float = 0.5, check_s: float = 2.0, appear_s: float = 120.0,
          settle_s: float = 15.0) -> str:
    """The reaper's loop: remove ``name`` when its owner is gone or it expired; return why it ended.
    It starts before the container exists (``appear_s`` to wait for it); an owner that dies before
    the container was seen may have left a create request in flight: the reaper watches for it
    ``settle_s`` longer."""
    import docker
    last, seen, t0 = 0.0, False, time.monotonic()
    while True:
        now = time.time()
        if not pid_alive(pid, pid_start):
            why = f"its owner pid {pid} is gone"
            removed = stop_and_remove(client, name, grace_s=grace_s, why=why)
            if not removed and not seen:
                until = time.monotonic() + settle_s
                while not removed and time.monotonic() < until:
                    time.sleep(poll_s)
                    removed = stop_and_remove(client, name, grace_s=grace_s, why=why)
            return "owner gone"
        if expires is not None and now >= expires:
            stop_and_remove(client, name, grace_s=grace_s, why="expired")
            return "expired"
        if time.monotonic() - last >= check_s:
            last = time.monotonic()
            try:
                client.containers.get(name)
                seen = True
            except docker.errors.NotFound:
                if seen or time.monotonic() - t0 > appear_s:
                    return "container gone"
            except docker.errors.APIError:
                pass
        time.sleep(poll_s)


def spawn_reaper(name: str, *, pid: int | None = None, expires: float | None = None,
                 grace_s: float = 0.0, python: str | None = None) -> subprocess.Popen | None:
    """Start the reaper for container ``name`` (owner ``pid``, default this process) in its own
    session, so that whatever kills the owner does not reach it. None if it cannot start."""
    pid = os.getpid() if pid is None else pid
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [python or sys.executable, "-m", "serving.sweep", "watch", name, "--pid", str(pid),
            "--grace", str(grace_s)]
    start = proc_start(pid)
    if start:
        argv += ["--pid-start", start]
    if expires is not None:
        argv += ["--expires", str(int(expires))]
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        return subprocess.Popen(argv, env=env, cwd=root, start_new_session=True, close_fds=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        log.warning("no reaper for %s (%s): a leftover is removed at its expiry or the next sweep", name, exc)
        return None


def stop_reaper(proc: subprocess.Popen | None) -> None:
    """The owner removed the container itself: the reaper has nothing left to do."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def expiring_entrypoint(image_config: dict, ttl_s: float) -> list[str] | None:
    """The image's entrypoint wrapped in ``timeout`` (coreutils; tensorflow/serving and the stand-in
    have it): the server ends at its expiry even if nothing on the host is left to stop it. None
    when the image has no entrypoint to wrap."""
    entry = (image_config or {}).get("Entrypoint")
    if not entry:
        return None
    entry = [entry] if isinstance(entry, str) else list(entry)
    return ["timeout", "-k", f"{KILL_AFTER_S}s", f"{int(max(ttl_s, 1))}s", *entry]


def _client():
    import docker
    return docker.from_env(timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.sweep", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch", help="remove container NAME when its owner pid is gone or it expired")
    w.add_argument("name")
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--pid-start")
    w.add_argument("--expires", type=float)
    w.add_argument("--grace", type=float, default=0.0, help="seconds between SIGTERM and removal")
    s = sub.add_parser("sweep", help="remove leftovers now (e.g. from cron)")
    s.add_argument("--role", action="append", choices=ROLES, help="default: every role")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "watch":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the owner
        watch(_client(), args.name, pid=args.pid, pid_start=args.pid_start, expires=args.expires,
              grace_s=args.grace)
        return 0
    removed = sweep(_client(), tuple(args.role or ROLES))
    print(f"removed {len(removed)} leftover container(s){': ' + ', '.join(removed) if removed else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
