"""Run by the Airflow env's python (not pytest): the "Validation report" extra link of a release DAG's
validate task, as the worker computes it at task end, for a given report URI.

    python report_link_probe.py DAG_FILE REPORT_URI DAG_ID...   # prints one JSON line

The DAG is parsed the way the DAG processor does (DagBag); the link object is the one on the task
and ``link_for`` is what its ``get_link`` returns once it has read the verdict's ``report`` from
XCom (the XCom read itself is covered by the e2e run in tests/e2e/test_release_alerts.py).
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    dag_file, report_uri, *dag_ids = sys.argv[1:]
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    bag = DagBag(dag_folder=dag_file)
    out = {"import_errors": {str(k): v for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id in dag_ids:
        dag = bag.dags[dag_id]
        [link] = [x for x in dag.get_task("validate").operator_extra_links if x.name == "Validation report"]
        ser = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.serialize_dag(dag)["tasks"]}
        out["dags"][dag_id] = {
            "link": [type(link).__name__, link.name, link.xcom_key, link.report_base_url, link.model,
                     link.reports_root],
            "serialized_links": ser["validate"].get("_operator_extra_links"),
            "url": link.link_for(report_uri),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
