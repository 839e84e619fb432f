"""How `make test` shares its two pytest-xdist workers (``-n 2``; tests/conftest.py installs this
scheduler).

The end-to-end modules spend about half their time waiting (an Airflow scheduler's loop, a
container becoming healthy, a deadline), so two of them at once nearly halve that stage. Everything
else runs on one worker, in the suite's order (unit, integration without trained models,
integration with them; the background training uses the other core meanwhile), and no end-to-end
module starts before all of it is done: integration tests assert that *no* validation container is
left on the engine, which a concurrent end-to-end run would break, and the Docker engine and the
images are started and built once, by that one worker, before anything else needs them.

- one work unit ``serial``: every test outside ``tests/e2e/``;
- one work unit per end-to-end module (its module fixtures, e.g. one ``airflow standalone``, stay
  on one worker), handed out longest first once ``serial`` is complete; a worker takes the next
  module when the one it runs is on its last test.
"""
from __future__ import annotations

from xdist.scheduler.loadscope import LoadScopeScheduling

SERIAL = "serial"
E2E = "tests/e2e/"


class StagedScheduling(LoadScopeScheduling):
    def __init__(self, config, log=None):
        super().__init__(config, log)
        config.option.loadscopereorder = False  # the collection's order (tests/conftest.py) is the plan

    def _split_scope(self, nodeid: str) -> str:
        return nodeid.split("::", 1)[0] if nodeid.startswith(E2E) else SERIAL

    def _serial_pending(self) -> int:
        """Tests outside tests/e2e/ not yet complete."""
        return len(self.workqueue.get(SERIAL, ())) + sum(
            list(unit[SERIAL].values()).count(False) for unit in self.assigned_work.values() if SERIAL in unit)

    def _may_take(self, node) -> bool:
        """Whether ``node`` may take the next unit now. A worker runs a test only once it holds the
        next one (pytest needs ``nextitem``), so the worker on ``serial`` gets its first module while
        its last test is still held; any other worker waits until ``serial`` is complete."""
        if not self.workqueue:
            return False
        if next(iter(self.workqueue)) == SERIAL:
            return True
        return self._serial_pending() <= (1 if SERIAL in self.assigned_work[node] else 0)

    def _assign_work_unit(self, node) -> None:
        if self._may_take(node):
            super()._assign_work_unit(node)

    def _reschedule(self, node) -> None:
        if node.shutting_down:
            return
        # Keep two tests queued on a worker: holding a single one (a one-test module) it would wait
        # for the next event on another worker, which may be minutes away. So a worker takes the
        # next module when the one it runs is on its last test.
        while self._pending_of(self.assigned_work[node]) < 2 and self._may_take(node):
            super()._assign_work_unit(node)
        if not self.workqueue:
            node.shutdown()

    def mark_test_complete(self, node, item_index: int, duration: float = 0) -> None:
        super().mark_test_complete(node, item_index, duration)
        if self._serial_pending() == 0:  # the barrier is down: idle workers start end-to-end modules
            for other in self.nodes:
                if other is not node:
                    self._reschedule(other)
