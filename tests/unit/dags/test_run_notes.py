"""The run note's text (plugins/tfs_release_airflow/run_notes.py), from the XComs a run leaves. The
listener that writes it is exercised by the end-to-end tests (test_demo: `airflow dags test`;
test_standalone: the scheduler). Runs in the Airflow env's python (the module imports Airflow)."""
from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import ROOT
from tests.unit.dags.test_dag_integrity import airflow_python  # noqa: F401 - fixture

CASES = [
    # (state, xcoms as [task, key, value], dry_run, msg) -> note
    ("failed", [["validate", "failure_summary", "release FAILED at validate: the checkpoint looks untrained "
                 "(95 of 150 golden images wrong)"]], False, "task_failure"),
    ("failed", [], False, "timed_out"),
    ("success", [["newest_checkpoint", "return_value", {"uri": "s3://t/m/checkpoints/ckpt-40", "published_as": None}],
                 ["publish", "return_value", {"version": 3}]], False, "success"),
    ("success", [["newest_checkpoint", "return_value", {"uri": "s3://t/m/checkpoints/ckpt-40", "published_as": None}],
                 ["publish", "return_value", {"version": 4, "labels": {"stable": 3, "canary": 4}}]], False, "success"),
    ("success", [["newest_checkpoint", "return_value", {"uri": "s3://t/m/checkpoints/ckpt-40", "published_as": None}]],
     True, "success"),
    ("success", [["newest_checkpoint", "return_value", {"uri": "s3://t/m/checkpoints/ckpt-40/", "published_as": 3}]],
     False, "success"),
]
EXPECTED = [
    "release FAILED at validate: the checkpoint looks untrained (95 of 150 golden images wrong)",
    "run failed (timed_out)",
    "published v3 (ckpt-40)",
    "published v4 as canary beside stable v3 (ckpt-40)",
    "dry run: ckpt-40 validated, not published",
    "nothing new: ckpt-40 is already v3",
]
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tfs_release_airflow import run_notes as rn
out = []
for state, xcoms, dry, msg in json.loads(sys.argv[2]):
    x = {(t, k): v for t, k, v in xcoms}
    out.append(rn.failure_note(x, msg) if state == "failed" else rn.success_note(x, dry))
out.append(rn.summary("[tfs-release] m-1: release FAILED at export", "m-1"))
out.append([type(p).__name__ for p in rn.TfsReleaseRunNotesPlugin.listeners])
print(json.dumps(out))
"""


def test_notes_say_what_each_run_did(airflow_python, tmp_path):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    p = subprocess.run([airflow_python, "-c", PROBE, os.path.join(ROOT, "plugins"), json.dumps(CASES)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out[:len(EXPECTED)] == EXPECTED
    assert out[len(EXPECTED)] == "release FAILED at export"
    assert out[-1] == ["RunNotes"]
