"""The demo's task logs: `airflow dags test` output split per task into the files Airflow's UI reads."""
from __future__ import annotations

import json
import os

from demo.run_demo import write_task_logs

RUN = "manual__2026-12-07T00:55:49.538493+00:00"
OUT = """\
2026-12-07T00:55:49.504584Z [info     ] get next_dagrun_info_v2        [airflow.serialization.definitions.dag]
2026-12-07T00:55:49.768358Z [info     ] [DAG TEST] starting task_id=export map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
exporting ckpt-40
2026-12-07T00:55:54.522072Z [info     ] [DAG TEST] end task task_id=export map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-12-07T00:55:54.526348Z [info     ] [DAG TEST] starting task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-12-07T00:55:54.564893Z [warning  ] 3 golden images below the margin [validation] loc=x.py:9
2026-12-07T00:55:54.565033Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
Traceback (most recent call last):
RuntimeError: 97 check(s) failed
2026-12-07T00:55:54.585103Z [info     ] [DAG TEST] end task task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-12-07T00:55:55.000000Z [info     ] [DAG TEST] starting task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-12-07T00:55:56.000000Z [info     ] [DAG TEST] starting task_id=fanout map_index=2 [airflow.sdk.definitions.dag] loc=dag.py:1501
cut off here
"""


def _read(path):
    with open(path) as fh:
        return [json.loads(ln) for ln in fh]


def test_each_task_gets_its_own_log_file_where_airflow_reads_it(tmp_path):
    written = write_task_logs(str(tmp_path), "release__m", RUN, OUT)
    base = os.path.join(str(tmp_path), "dag_id=release__m", f"run_id={RUN}")
    assert written == [os.path.join(base, "task_id=export", "attempt=1.log"),
                       os.path.join(base, "task_id=validate", "attempt=1.log"),
                       os.path.join(base, "task_id=validate", "attempt=2.log"),   # a retry: its own try
                       os.path.join(base, "task_id=fanout", "map_index=2", "attempt=1.log")]
    export = _read(written[0])
    assert [e["event"] for e in export][1] == "exporting ckpt-40"   # a step's own output, as is
    assert "get next_dagrun_info_v2" not in json.dumps(export)       # lines outside a task stay out
    validate = _read(written[1])
    assert {"timestamp": "2026-12-07T00:55:54.565033Z", "level": "error",
            "event": "Task failed with exception     [task] loc=task_runner.py:1676"} in validate
    assert validate[-2:-1] == [{"event": "RuntimeError: 97 check(s) failed"}]
    assert [e.get("level") for e in validate[:3]] == ["info", "warning", "error"]
    assert _read(written[3])[-1] == {"event": "cut off here"}  # a run that ended mid-task keeps its lines


def test_the_closing_summary_links_reports_on_make_airflow(monkeypatch):
    from demo.run_demo import report_link
    monkeypatch.delenv("AIRFLOW_PORT", raising=False)
    uri = "s3://serving/shapes-classifier/_reports/manual__2026-12-07T01:02:03.4+00:00-t1/index.html"
    assert report_link(uri, "shapes-classifier") == (
        "http://127.0.0.1:8080/tfs-release/reports/shapes-classifier/"
        "manual__2026-12-07T01%3A02%3A03.4%2B00%3A00-t1/index.html")
    assert report_link("s3://serving/other/x.html", "shapes-classifier") == "s3://serving/other/x.html"
