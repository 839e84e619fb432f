"""The suite's pytest-xdist scheduler (tests/scheduling.py), driven the way xdist's controller drives
it, with two workers that behave like xdist's: a worker runs a test only once it holds the next one
(or is told to shut down), because pytest needs ``nextitem``."""
from __future__ import annotations

from types import SimpleNamespace

from tests.scheduling import StagedScheduling

SERIAL = ["tests/unit/test_a.py::t1", "tests/unit/test_a.py::t2", "tests/integration/x/test_b.py::t1",
          "tests/integration/x/test_b.py::t2"]
E2E = ["tests/e2e/test_long.py::t1", "tests/e2e/test_long.py::t2", "tests/e2e/test_mid.py::t1",
       "tests/e2e/test_short.py::t1", "tests/e2e/test_short.py::t2"]


class Worker:
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log
        self.queue: list[int] = []
        self.shutting_down = False
        self.gateway = SimpleNamespace(id=name)

    def send_runtest_some(self, indices):
        self.queue.extend(indices)

    def shutdown(self):
        self.shutting_down = True

    def runnable(self) -> bool:
        return len(self.queue) >= 2 or (self.shutting_down and bool(self.queue))


def run(collection: list[str], stalls: str | None = None) -> list[tuple[str, str]]:
    """(worker, nodeid) in the order tests ran, the two workers taking turns; ``stalls``: a worker
    that stops once it runs end-to-end tests (its first one takes forever)."""
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=True), hook=None)
    sched = StagedScheduling(config)
    assert config.option.loadscopereorder is False  # the collection's order is the plan
    ran: list[tuple[str, str]] = []
    workers = [Worker("gw0", ran), Worker("gw1", ran)]
    for w in workers:
        sched.add_node(w)
    for w in workers:
        sched.add_node_collection(w, collection)
    sched.schedule()
    for _ in range(10 * len(collection)):
        progressed = False
        for w in workers:
            if w.name == stalls and any(n in E2E for _, n in ran if _ == w.name):
                continue
            if w.runnable():
                i = w.queue.pop(0)
                ran.append((w.name, collection[i]))
                sched.mark_test_complete(w, i)
                progressed = True
        if not progressed:
            break
    if stalls is None:
        assert sched.tests_finished, (ran, [w.queue for w in workers])
    return ran


def test_end_to_end_modules_wait_for_everything_else_then_run_two_at_a_time():
    ran = run(SERIAL + E2E)
    assert sorted(n for _, n in ran) == sorted(SERIAL + E2E)  # every test once
    order = [n for _, n in ran]
    last_serial = max(order.index(n) for n in SERIAL)
    assert all(order.index(n) > last_serial for n in E2E), order  # nothing e2e before the rest is done
    serial_workers = {w for w, n in ran if n in SERIAL}
    assert len(serial_workers) == 1, ran  # one worker, in the suite's order
    assert [n for _, n in ran if n in SERIAL] == SERIAL
    by_module = {}
    for w, n in ran:
        if n in E2E:
            by_module.setdefault(n.split("::")[0], set()).add(w)
    assert all(len(ws) == 1 for ws in by_module.values()), by_module  # a module stays on its worker
    assert len({w for ws in by_module.values() for w in ws}) == 2, by_module  # both workers run modules
    # longest first: the first module listed goes first, to the worker that ran the rest
    serial_worker = serial_workers.pop()
    assert next(n for w, n in ran if w == serial_worker and n in E2E) == E2E[0]


def test_only_end_to_end_or_only_the_rest():
    assert sorted(n for _, n in run(E2E)) == sorted(E2E)
    ran = run(SERIAL)
    assert [n for _, n in ran] == SERIAL and len({w for w, _ in ran}) == 1


def test_a_one_test_module_runs_while_the_other_worker_is_busy():
    """The other worker is in a long test (no event from it for minutes): a worker given a module
    of one test must not hold it waiting for a next test; it gets the next module too."""
    e2e = ["tests/e2e/test_long.py::t1", "tests/e2e/test_long.py::t2", "tests/e2e/test_one.py::t1",
           "tests/e2e/test_other.py::t1", "tests/e2e/test_other.py::t2"]
    ran = run(SERIAL + e2e, stalls="gw0")
    assert {w for w, n in ran if n in SERIAL} == {"gw0"}  # the stalling one ran the rest, then test_long
    assert [n for w, n in ran if w == "gw1"][:2] == ["tests/e2e/test_one.py::t1", "tests/e2e/test_other.py::t1"], ran
