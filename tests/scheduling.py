"""How `make test` shares its two pytest-xdist workers (``-n 2``; tests/conftest.py installs this
scheduler).

Three kinds of work unit:

- ``docker``: every test in a file marked ``pytest.mark.docker`` outside ``tests/e2e/``, on one
  worker, in the suite's order, taken first: the Docker engine and the stand-in image are started
  and built once, by that worker, before anything else needs them, and two such tests never load
  the engine at once. (They assert on their own containers only: the runs of their candidates,
  ``validation_containers`` in tests/integration/conftest.py; end-to-end modules run beside them.)
- one unit per other file outside ``tests/e2e/`` (unit tests, SeaweedFS, exports, stand-in
  processes): either worker, as soon as it is free. The background training uses a core meanwhile.
- one unit per end-to-end module (its module fixtures, e.g. one ``airflow standalone``, stay on one
  worker), after the others, longest first; a worker takes the next unit when the one it runs is on
  its last test. End-to-end modules spend about half their time waiting (a scheduler's loop, a
  health check), so one beside another (or beside the Docker tests) nearly halves their time.
"""
from __future__ import annotations

import functools
import os

from xdist.scheduler.loadscope import LoadScopeScheduling

DOCKER = "docker"
E2E = "tests/e2e/"
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

    def _assign_work_unit(self, node) -> None:
        if not self.workqueue:
            return
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
            self._assign_work_unit(node)
        if not self.workqueue:
            node.shutdown()
