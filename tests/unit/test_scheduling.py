"""The suite's pytest-xdist scheduler (tests/scheduling.py), driven the way xdist's controller drives
it, with two workers that behave like xdist's: a worker runs a test only once it holds the next one
(or is told to shut down), because pytest needs ``nextitem``."""
from __future__ import annotations

from types import SimpleNamespace

from tests.scheduling import StagedScheduling

DOCKER = ["tests/integration/d/test_d1.py::t1", "tests/integration/d/test_d1.py::t2"] + [
    f"tests/integration/d/test_d2.py::t{i}" for i in range(10)]  # the longest unit
OTHER = ["tests/unit/test_a.py::t1", "tests/unit/test_a.py::t2", "tests/unit/test_c.py::t1",
         "tests/integration/x/test_b.py::t1", "tests/integration/x/test_b.py::t2"]
SERIAL = DOCKER + OTHER  # everything outside tests/e2e/
E2E = ["tests/e2e/test_long.py::t1", "tests/e2e/test_long.py::t2", "tests/e2e/test_mid.py::t1",
       "tests/e2e/test_short.py::t1", "tests/e2e/test_short.py::t2"]


HANDED_OUT: list[tuple[str, list[int]]] = []  # (worker, test indices) as the scheduler hands them out


class Worker:
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log
        self.queue: list[int] = []
        self.shutting_down = False
        self.gateway = SimpleNamespace(id=name)

    def send_runtest_some(self, indices):
        self.queue.extend(indices)
        HANDED_OUT.append((self.name, list(indices)))

    def shutdown(self):
        self.shutting_down = True

    def runnable(self) -> bool:
        return len(self.queue) >= 2 or (self.shutting_down and bool(self.queue))


def run(collection: list[str], stalls: str | None = None, n: int = 2) -> list[tuple[str, str]]:
    """(worker, nodeid) in the order tests ran, the ``n`` workers taking turns; ``stalls``: a worker
    that stops once it runs end-to-end tests (its first one takes forever)."""
    config = SimpleNamespace(getvalue=lambda name: [f"{n}*popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=True), hook=None)
    sched = StagedScheduling(config)
    sched.uses_docker = lambda path: "/d/" in path  # the files marked docker
    assert config.option.loadscopereorder is False  # the collection's order is the plan
    ran: list[tuple[str, str]] = []
    HANDED_OUT.clear()
    workers = [Worker(f"gw{i}", ran) for i in range(n)]
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


def test_docker_tests_on_one_worker_the_rest_on_the_other_then_end_to_end_on_both():
    ran = run(OTHER + DOCKER + E2E)  # the suite's order puts unit tests first: the docker unit still goes first
    assert sorted(n for _, n in ran) == sorted(SERIAL + E2E)  # every test once
    order = [n for _, n in ran]
    assert order[0] == DOCKER[0], order  # the docker unit is taken first (it builds the images)
    first_e2e = min(order.index(n) for n in E2E)
    assert all(order.index(n) < first_e2e for n in OTHER), order  # end-to-end modules come last
    assert first_e2e < max(order.index(n) for n in DOCKER), order  # ...beside the Docker tests (no barrier)
    docker_workers = {w for w, n in ran if n in DOCKER}
    assert len(docker_workers) == 1, ran  # one worker, in the suite's order
    assert [n for _, n in ran if n in DOCKER] == DOCKER
    assert {w for w, n in ran if n in OTHER} == {"gw0", "gw1"} - docker_workers, ran  # the other worker meanwhile
    for path in {n.split("::")[0] for n in OTHER}:  # a file's tests stay together, in order
        assert [n for _, n in ran if n.startswith(path)] == [n for n in OTHER if n.startswith(path)]
        assert len({w for w, n in ran if n.startswith(path)}) == 1
    by_module = {}
    for w, n in ran:
        if n in E2E:
            by_module.setdefault(n.split("::")[0], set()).add(w)
    assert all(len(ws) == 1 for ws in by_module.values()), by_module  # a module stays on its worker
    assert order.index(E2E[0]) == min(order.index(n) for n in E2E)  # longest first


def test_other_files_use_both_workers_when_there_is_no_docker_test():
    ran = run(OTHER + E2E)
    assert {w for w, n in ran if n in OTHER} == {"gw0", "gw1"}, ran
    assert sorted(n for _, n in ran) == sorted(OTHER + E2E)


def test_only_end_to_end_or_only_the_rest():
    assert sorted(n for _, n in run(E2E)) == sorted(E2E)
    ran = run(DOCKER)
    assert [n for _, n in ran] == DOCKER and len({w for w, _ in ran}) == 1


def test_a_one_test_module_runs_while_the_other_worker_is_busy():
    """The other worker is in a long test (no event from it for minutes): a worker given a module
    of one test must not hold it waiting for a next test; it gets the next module too."""
    e2e = ["tests/e2e/test_long.py::t1", "tests/e2e/test_long.py::t2", "tests/e2e/test_one.py::t1",
           "tests/e2e/test_other.py::t1", "tests/e2e/test_other.py::t2"]
    ran = run(DOCKER + e2e, stalls="gw1")
    assert {w for w, n in ran if n in DOCKER} == {"gw0"}  # gw1 took test_long meanwhile, and stalls in it
    assert ("gw1", "tests/e2e/test_long.py::t1") in ran and ("gw1", "tests/e2e/test_long.py::t2") not in ran
    # gw1 holds test_one (the next unit, taken while on test_long's last test): the module after it
    # is not held too; gw0 runs it once the Docker tests are done
    assert [n for w, n in ran if w == "gw0" and n in e2e] == e2e[3:], ran


def test_a_third_worker_takes_end_to_end_modules_only_once_nothing_else_is_left():
    more = [f"tests/unit/test_u{i}.py::t{j}" for i in range(6) for j in range(3)]
    ran = run(DOCKER + OTHER + more + E2E, n=3)
    assert sorted(n for _, n in ran) == sorted(SERIAL + more + E2E)  # every test once
    order = [n for _, n in ran]
    third = [n for w, n in ran if w == "gw2"]
    assert third and all(n in E2E for n in third), ran  # it runs end-to-end modules, nothing else
    collection = DOCKER + OTHER + more + E2E
    handed = [(w, collection[i]) for w, ix in HANDED_OUT for i in ix]
    first_to_gw2 = next(k for k, (w, _) in enumerate(handed) if w == "gw2")
    assert all(n in E2E for _, n in handed[first_to_gw2:]), handed  # only once the rest was handed out
    assert {w for w, n in ran if n in DOCKER} == {"gw0"}, ran  # the Docker tests stay on one worker
    by_module = {}
    for w, n in ran:
        if n in E2E:
            by_module.setdefault(n.split("::")[0], set()).add(w)
    assert all(len(ws) == 1 for ws in by_module.values()), by_module


def test_a_third_worker_with_no_end_to_end_module_is_shut_down():
    ran = run(DOCKER + OTHER, n=3)
    assert sorted(n for _, n in ran) == sorted(SERIAL) and "gw2" not in {w for w, _ in ran}
