"""Worker-image mode (TFS_RELEASE_STEP_IMAGE): the release DAG's step operators as Airflow builds them
(DagBag of dags/model_release.py in the Airflow venv, a subprocess): the Docker engine's socket is
mounted into the validate step only (it starts the temporary serving container), never into export."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

from tests.conftest import ROOT

from .test_dag_integrity import airflow_env, airflow_python  # noqa: F401 - the fixture

PROBE = textwrap.dedent("""
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    out = {}
    for dag_id, dag in bag.dags.items():
        for t in dag.tasks:
            if hasattr(t, "mounts"):
                out[f"{dag_id}.{t.task_id}"] = sorted(m["Target"] for m in t.mounts)
    print("PROBE " + json.dumps(out))
""")


def test_only_the_validate_step_gets_the_docker_socket(airflow_python, tmp_path):  # noqa: F811
    env = airflow_env(tmp_path / "airflow-home", TFS_RELEASE_STEP_IMAGE="tfs-release/worker:test",
                      TFS_RELEASE_STEP_NETWORK="stack", TFS_RELEASE_STEP_MOUNTS="golden-sets:/golden:ro",
                      TFS_RELEASE_SCHEDULES="off")
    p = subprocess.run([airflow_python, "-c", PROBE, os.path.join(ROOT, "dags", "model_release.py")], env=env,
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("PROBE ")]
    assert p.returncode == 0 and line, p.stderr[-3000:]
    mounts = json.loads(line[-1].split(" ", 1)[1])
    exports = {k: v for k, v in mounts.items() if k.endswith(".export")}
    validates = {k: v for k, v in mounts.items() if k.endswith(".validate")}
    assert exports and validates and len(exports) == len(validates), mounts
    for task, targets in exports.items():
        assert targets == ["/golden"], f"{task}: {targets}"
    for task, targets in validates.items():
        assert targets == ["/golden", "/var/run/docker.sock"], f"{task}: {targets}"
