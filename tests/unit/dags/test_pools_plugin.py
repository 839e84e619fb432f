"""The serving-pool plugin in a task process: Airflow 3 blocks the ORM there, and the plugin must
notice and stay quiet (it used to log a "could not create the tfs-release serving pool" warning
in every task's log, because task processes forked from the scheduler keep its argv)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

PROBE = r"""
import json, logging, sys
sys.path.insert(0, sys.argv[1])
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("tfs_release_airflow.pools").addHandler(Keep())
logging.getLogger("tfs_release_airflow.pools").setLevel(logging.DEBUG)
from airflow import settings
from tfs_release_airflow import pools
before = pools._orm_blocked()
from airflow.sdk.execution_time.supervisor import block_orm_access
block_orm_access()
after = pools._orm_blocked()
sys.argv = ["airflow", "scheduler"]  # what a LocalExecutor task process still has
pools.TfsReleasePoolPlugin.on_load()
print(json.dumps({"before": before, "after": after, "records": records}))
"""


@pytest.fixture(scope="module")
def airflow_python() -> str:
    venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(venv, "bin", "python")


def test_a_task_process_with_the_orm_blocked_skips_the_pool_quietly(airflow_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path), TFS_RELEASE_CONFIG=os.path.join(ROOT, "config", "models.yaml"),
               PYTHONPATH=os.path.join(ROOT, "plugins"))
    p = subprocess.run([airflow_python, "-c", PROBE, ROOT], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["before"] is False      # the scheduler's own process: it has a database session
    assert out["after"] is True        # after Airflow's block_orm_access, as in every task process
    assert not [r for r in out["records"] if "could not create" in r], out["records"]
