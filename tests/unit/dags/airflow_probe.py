"""Run by the Airflow env's python (not pytest): parse DAG files the way Airflow's DAG processor does
(DagBag), and write what the tests check as JSON.

    python airflow_probe.py OUT.json DAG_FILE... [--bad-params JSON]

For each file: import errors, the DAGs it defines (id, schedule, flags, tags, params, task graph),
seconds to parse, and whether ``tensorflow`` was in ``sys.modules`` afterwards. ``--bad-params``:
a list of conf dicts; for each DAG, which of them its Params refuse (as at trigger time).
"""
from __future__ import annotations

import json
import sys
import time


def describe(dag) -> dict:
    tt = dag.timetable
    return {
        "dag_id": dag.dag_id, "fileloc": dag.fileloc,
        "schedule": dag.schedule if dag.schedule is None or isinstance(dag.schedule, str) else repr(dag.schedule),
        "timetable": type(tt).__name__, "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags), "doc_md": dag.doc_md or "", "params": dag.params.dump(),
        "param_schemas": {k: dag.params.get_param(k).schema for k in dag.params},
        "edges": sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
        "outlets": {t.task_id: [getattr(o, "uri", str(o)) for o in t.outlets] for t in dag.tasks if t.outlets},
        "task_types": {t.task_id: type(t).__name__ for t in dag.tasks},
        "timeouts": {t.task_id: t.execution_timeout.total_seconds() if t.execution_timeout else None
                     for t in dag.tasks},
        "dagrun_timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "pools": {t.task_id: [t.pool, t.pool_slots] for t in dag.tasks},
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        **schedule_parts(tt),
        "serialization_error": serialization_error(dag),
        "first_run_in_s": first_run_in_s(dag),
    }


def first_run_in_s(dag) -> float | None:
    """Seconds from now to the first scheduled run the scheduler would create once the DAG is
    unpaused with no run yet (negative: one for a past point, at once); None: none by time."""
    import datetime

    from airflow.serialization.serialized_objects import DagSerialization
    try:
        info = DagSerialization.from_dict(DagSerialization.to_dict(dag)).next_dagrun_info(last_automated_run_info=None)
    except Exception:  # noqa: BLE001 - serialization_error says why
        return None
    if info is None or info.run_after is None:
        return None
    return (info.run_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


def serialization_error(dag) -> str | None:
    """What the DAG processor would say when storing the DAG (None: it serializes)."""
    from airflow.serialization.serialized_objects import DagSerialization
    try:
        DagSerialization.to_dict(dag)
    except Exception as exc:  # noqa: BLE001 - reported, the test asserts on it
        return f"{type(exc).__name__}: {exc}"[:2000]
    return None


def schedule_parts(tt) -> dict:
    """The assets a DAG is scheduled on (with their watchers' triggers) and its cron, if any."""
    def leaves(cond):
        if cond is None:
            return []
        if hasattr(cond, "objects"):  # AssetAll / AssetAny
            return [a for o in cond.objects for a in leaves(o)]
        return [cond]

    assets = [{"uri": a.uri, "watchers": [{"name": w.name, "classpath": w.trigger.serialize()[0],
                                           "kwargs": w.trigger.serialize()[1]} for w in a.watchers]}
              for a in leaves(getattr(tt, "asset_condition", None))]
    inner = getattr(tt, "timetable", tt)
    return {"assets": assets, "cron": getattr(inner, "expression", None)}


def refused(dag, confs: list[dict]) -> list[str | None]:
    import copy

    from airflow.sdk.exceptions import ParamValidationError
    out = []
    for conf in confs:
        params = copy.deepcopy(dag.params)
        try:
            params.update(conf)
            params.validate()
            out.append(None)
        except ParamValidationError as exc:
            out.append(str(exc).splitlines()[0] or "refused")
    return out


def main() -> None:
    args = sys.argv[1:]
    bad: list[dict] = []
    if "--bad-params" in args:
        i = args.index("--bad-params")
        bad = json.loads(args[i + 1])
        del args[i:i + 2]
    out_path, files = args[0], args[1:]
    t0 = time.monotonic()
    from airflow.dag_processing.dagbag import DagBag
    report = {"airflow_import_s": round(time.monotonic() - t0, 3), "files": {}}
    for f in files:
        t = time.monotonic()
        bag = DagBag(dag_folder=f)
        seconds = time.monotonic() - t
        report["files"][f] = {
            "seconds": round(seconds, 3), "import_errors": {str(k): v for k, v in bag.import_errors.items()},
            "tensorflow_imported": any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules),
            "dags": {d.dag_id: {**describe(d), "refused": refused(d, bad)} for d in bag.dags.values()},
        }
    with open(out_path, "w") as fh:
        json.dump(report, fh, default=str)


if __name__ == "__main__":
    main()
