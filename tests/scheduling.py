"""How `make test` shares its pytest-xdist workers (``-n 3``; tests/conftest.py installs this
scheduler).

Three kinds of work unit:

- ``docker``: every test in a file marked ``pytest.mark.docker`` outside ``tests/e2e/``, on one
  worker, in the suite's order, taken first: the Docker engine and the stand-in image are started
  and built once, by that worker, before anything else needs them, and two such tests never load
  the engine at once. (They assert on their own containers only: the runs of their candidates,
  ``validation_containers`` in tests/integration/conftest.py; end-to-end modules run beside them.)
- one unit per other file outside ``tests/e2e/`` (unit tests, SeaweedFS, exports, stand-in
  processes): either of the first two workers, as soon as it is free. The background training
  uses a core meanwhile.
- one unit per end-to-end module (its module fixtures, e.g. one ``airflow standalone``, stay on one
  worker), after the others, longest first; a worker takes the next unit when the one it runs is on
  its last test.

Two workers keep both cores busy while the unit and integration tests run (they compute). The end-
to-end modules wait about a fifth of their time (a scheduler's loop, a health check, a deadline:
measured, the cores idle 20 % of that stage with two of them), so the workers after the first two
(``E2E_ONLY_FROM``) take end-to-end modules only, and only once nothing else is left to hand out:
three modules then run at once.
"""
from __future__ import annotations

import functools
import os

from xdist.scheduler.loadscope import LoadScopeScheduling

DOCKER = "docker"
E2E = "tests/e2e/"
E2E_ONLY_FROM = 2  # gw0 and gw1 take anything; gw2 and later only end-to-end modules, at the end
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def uses_docker(path: str) -> bool:
    """Whether the test file ``path`` (relative to the project) is marked ``docker`` (tests/conftest.py
    refuses a Docker test in a file that is not: it would run beside the docker unit)."""
    try:
        with open(os.path.join(ROOT, path)) as fh:
            return "pytest.mark.docker" in fh.read()
    except OSError:
        return False


class StagedScheduling(LoadScopeScheduling):
    def __init__(self, config, log=None):
        super().__init__(config, log)
        config.option.loadscopereorder = False  # the collection's order (tests/conftest.py) is the plan

    uses_docker = staticmethod(uses_docker)

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return path if path.startswith(E2E) or not self.uses_docker(path) else DOCKER

    @staticmethod
    def e2e_only(node) -> bool:
        """Workers after the first two wait for the end-to-end stage."""
        return int(node.gateway.id.lstrip("gw") or 0) >= E2E_ONLY_FROM

    def _assign_work_unit(self, node) -> None:
        if not self.workqueue:
            return
        if self.e2e_only(node) and not all(scope.startswith(E2E) for scope in self.workqueue):
            return  # not yet: the unit and integration files (and the Docker tests) go to the first two
        if DOCKER in self.workqueue:  # the longest unit, and it builds what the others need: first
            self.workqueue.move_to_end(DOCKER, last=False)
        super()._assign_work_unit(node)

    def _reschedule(self, node) -> None:
        if node.shutting_down:
            return
        # Keep two tests queued on a worker: holding a single one (a one-test module) it would wait
        # for the next event on another worker, which may be minutes away. So a worker takes the
        # next module when the one it runs is on its last test.
        while self._pending_of(self.assigned_work[node]) < 2 and self.workqueue:
            left = len(self.workqueue)
            self._assign_work_unit(node)
            if len(self.workqueue) == left:
                break  # nothing this worker may take yet
        if not self.workqueue:
            node.shutdown()

    def mark_test_complete(self, node, item_index, duration=0) -> None:
        super().mark_test_complete(node, item_index, duration)
        for other in self.nodes:  # an idle end-to-end worker gets no event of its own: wake it here
            if other is not node and self.e2e_only(other) and not self._pending_of(self.assigned_work[other]):
                self._reschedule(other)
