"""Run by the Airflow env's python against an Airflow home's database (not pytest): the extra links of
one task instance exactly as the REST API computes them (``GET /api/v2/dags/{dag_id}/dagRuns/
{run_id}/taskInstances/{task_id}/links``: the route's own function, without the HTTP/auth layer).

    python extra_links_probe.py DAG_ID RUN_ID TASK_ID     # prints {"extra_links": {...}, ...}
"""
from __future__ import annotations

import sys


def main() -> None:
    dag_id, run_id, task_id = sys.argv[1:4]
    from airflow.api_fastapi.core_api.routes.public.extra_links import get_extra_links
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session
    with create_session() as session:
        resp = get_extra_links(dag_id=dag_id, dag_run_id=run_id, task_id=task_id, session=session,
                               dag_bag=DBDagBag())
    print(resp.model_dump_json())


if __name__ == "__main__":
    main()
