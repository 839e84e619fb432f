"""Where the suite's CPU goes (opt-in: ``TFSR_CPU_PROFILE=1 make test``). On two cores the suite is
bound by CPU work, not by waiting (docs/tests.md), so the timeline's wall times alone cannot say what
to cut. The controller samples every process's CPU time (``/proc/<pid>/stat``) once a second and
charges each second's growth to what the process is: the background training, a ``tfs-release``
subcommand, an Airflow process, a process in a Docker container (by its command), a pytest worker,
else its program; and to the test file it ran for (``PYTEST_CURRENT_TEST``, which a test's
subprocesses inherit). The session's end prints both tables and the share of the two cores in use.
Linux only; ~1 % of a core. A process's last second before it exits is not counted (a few percent).
"""
from __future__ import annotations

import collections
import os
import re
import threading
import time

ENV = "TFSR_CPU_PROFILE"
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
XDIST_WORKER = "exec(eval(sys.stdin.readline()))"


def kind_of(cmd: str, in_container: bool, worker: str | None) -> str:
    """What a process is, from its command line (a short, stable name for the table)."""
    if XDIST_WORKER in cmd:
        return "pytest workers"
    m = re.search(r"-m cli (\w[\w-]*)|bin/tfs-release (\w[\w-]*)", cmd)
    where = " (container)" if in_container else ""
    if m:
        return f"tfs-release {m.group(1) or m.group(2)}{where}"
    if "checkpoint_cache" in cmd or "demo/train.py" in cmd or "golden_gate.py" in cmd or (
            "multiprocessing" in cmd and worker is None):
        return "demo model training"
    if "standin.server" in cmd:
        return f"stand-in server{where}"
    m = re.search(r"airflow[\"']?\s+([a-z][\w-]*)", cmd)
    if m or "airflow" in cmd.split(" ", 1)[0]:
        return f"airflow {m.group(1) if m else ''}".rstrip() + where
    prog = os.path.basename(cmd.split(" ", 1)[0]) if cmd else "?"
    return f"{prog}{where}"


def _stat(pid: str) -> tuple[float, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / HZ, int(fields[19])  # utime + stime, start time


def _describe(pid: str) -> tuple[str, str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:400]
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        with open(f"/proc/{pid}/cgroup") as fh:
            in_container = "docker" in fh.read()
    except OSError:
        return None
    worker = env.get(b"PYTEST_XDIST_WORKER", b"").decode() or None
    test = env.get(b"PYTEST_CURRENT_TEST", b"").decode().split("::")[0]
    return kind_of(cmd, in_container, worker), test or ""


class Sampler:
    def __init__(self, interval: float = 1.0):
        self.interval, self.stop = interval, threading.Event()
        self.by_kind: collections.Counter = collections.Counter()
        self.by_file: collections.Counter = collections.Counter()
        self.seen: dict[tuple[str, int], list] = {}  # (pid, start) -> [cpu so far, kind, file]
        self.t0 = time.time()
        self.busy0 = self._busy()

    @staticmethod
    def _busy() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)  # busy jiffies (all but idle and iowait), all

    def sample(self, first: bool = False) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            st = _stat(pid)
            if st is None:
                continue
            cpu, start = st
            known = self.seen.get((pid, start))
            if known is None:
                what = _describe(pid)
                if what is None:
                    continue
                # processes older than the session count from the first sample on
                known = self.seen[(pid, start)] = [cpu if first else 0.0, *what]
            grew = cpu - known[0]
            if grew > 0:
                known[0] = cpu
                self.by_kind[known[1]] += grew
                self.by_file[known[2] or "(no test)"] += grew

    def run(self) -> None:
        self.sample(first=True)
        while not self.stop.wait(self.interval):
            self.sample()

    def start(self) -> "Sampler":
        threading.Thread(target=self.run, name="cpu-profile", daemon=True).start()
        return self

    def report(self, top: int = 15) -> list[str]:
        self.stop.set()
        busy, total = (b - a for a, b in zip(self.busy0, self._busy()))
        wall = time.time() - self.t0
        counted = sum(self.by_kind.values())
        lines = [f"cpu: {wall:.0f}s of wall time, the cores {100 * busy / max(total, 1):.0f}% busy; "
                 f"{counted:.0f} CPU-seconds counted, by what ran:"]
        lines += [f"cpu: {v:7.0f}s {k}" for k, v in self.by_kind.most_common(top)]
        lines.append("cpu: by the test file it ran for (subprocesses and containers inherit the test):")
        lines += [f"cpu: {v:7.0f}s {k}" for k, v in self.by_file.most_common(top)]
        return lines


def pytest_configure(config):
    if os.environ.get(ENV) == "1" and not hasattr(config, "workerinput") and os.path.isdir("/proc"):
        config._tfsr_cpu = Sampler().start()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    sampler = getattr(config, "_tfsr_cpu", None)
    if sampler is not None:
        for line in sampler.report():
            terminalreporter.write_line(line)
