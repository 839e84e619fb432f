"""Run by the Airflow env's python (not pytest): exercise plugins/tfs_release_airflow/alerts.py and
the release DAG's alert wiring there, and write what the tests check as JSON.

    python alerts_probe.py message SPEC.json OUT.json   # the alert a context yields (no sending)
    python alerts_probe.py send SPEC.json OUT.json      # ReleaseAlert(...)(context): really sends
    python alerts_probe.py dag DAG_FILE OUT.json        # callbacks and extra links per task
    python alerts_probe.py dag-callback SPEC.json OUT.json  # the DAG's own on_failure_callback, called
                                                        # by Airflow's DAG-processor code (sends when "send")

SPEC: {"model", "alerts" (raw config), "event", "conn_id", "report_base_url", "reports_root", "context":
{"dag_id", "run_id", "task_id", "try_number", "exception", "params", "xcom": {"task|key": value},
"xcom_error"}}.
The context stands in for the one Airflow builds (the e2e test runs the real one); the
connections, the notifiers and the sending are Airflow's and the providers'.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "plugins")]


class ContextTI:
    """The parts of a RuntimeTaskInstance an alert reads: ids, try number, xcom_pull."""

    def __init__(self, c: dict):
        self.dag_id, self.run_id, self.task_id = c["dag_id"], c["run_id"], c.get("task_id")
        self.try_number = c.get("try_number", 1)
        self._xcom = c.get("xcom", {})
        self._xcom_error = c.get("xcom_error")
        self.pulls: list[str] = []

    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        self.pulls.append(f"{task_ids}|{key}")
        if self._xcom_error:
            raise RuntimeError(self._xcom_error)
        return self._xcom.get(f"{task_ids}|{key}")


def context_for(c: dict) -> dict:
    from airflow.sdk import DAG
    ti = ContextTI(c)
    ctx = {"dag": DAG(c["dag_id"], schedule=None), "run_id": c["run_id"], "ti": ti, "task_instance": ti,
           "params": c.get("params", {})}
    if c.get("exception"):
        ctx["exception"] = RuntimeError(c["exception"])
    return ctx


class XComComms:
    """Answers the XCom reads a callback makes, as the DAG processor's supervisor does (GetXCom,
    GetXComSequenceSlice), from the spec's {"task|key": value}; records them."""

    def __init__(self, xcom: dict):
        self.xcom, self.pulls = xcom, []

    def send(self, msg):
        from airflow.sdk.execution_time.comms import XComResult, XComSequenceSliceResult
        key = f"{msg.task_id}|{msg.key}"
        self.pulls.append(key)
        value = self.xcom.get(key)
        if type(msg).__name__ == "GetXComSequenceSlice":
            return XComSequenceSliceResult(root=[] if value is None else [value])
        if type(msg).__name__ == "GetXCom":
            return XComResult(key=msg.key, value=value)
        raise RuntimeError(f"the probe does not answer {type(msg).__name__}")


def dag_callback(spec: dict) -> dict:
    """Parse the DAG file, then run its DAG-level failure callback the way the DAG processor does
    (``processor._execute_dag_callbacks`` with a ``DagCallbackRequest`` as the scheduler makes it:
    ``msg`` = reason, the dag run and the task Airflow names as ``last_ti``)."""
    import datetime as dt
    import uuid

    import structlog
    from airflow.callbacks.callback_requests import DagCallbackRequest, DagRunContext
    from airflow.dag_processing import processor
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.execution_time import task_runner
    from tfs_release_airflow.alerts import RunFailureAlert

    os.environ["TFS_RELEASE_CONFIG"] = spec["config"]
    bag = DagBag(dag_folder=spec["dag_file"])
    out: dict = {"import_errors": {str(k): v for k, v in bag.import_errors.items()}, "sent": []}
    dag = bag.dags[spec["dag_id"]]
    cbs = dag.on_failure_callback
    cbs = [] if cbs is None else cbs if isinstance(cbs, list) else [cbs]
    out["callbacks"] = [[type(c).__name__, getattr(c, "run_timeout_s", None)] for c in cbs]
    if not spec.get("send"):  # the message only: capture it instead of sending
        def capture(self, context, subject, text):
            out["sent"].append({"subject": subject, "text": text})
        RunFailureAlert.send = capture
    comms = XComComms(spec.get("xcom", {}))
    task_runner.SUPERVISOR_COMMS = comms
    now = dt.datetime.now(dt.timezone.utc)
    run = {"dag_id": dag.dag_id, "run_id": spec["run_id"], "logical_date": None, "data_interval_start": None,
           "data_interval_end": None, "run_after": now - dt.timedelta(hours=4), "start_date": now - dt.timedelta(hours=4),
           "end_date": now, "run_type": "manual", "state": "failed", "conf": spec.get("conf") or {},
           "consumed_asset_events": [], "partition_key": None}
    last_ti = None
    if spec.get("task_id"):
        last_ti = {"id": str(uuid.uuid4()), "task_id": spec["task_id"], "dag_id": dag.dag_id, "run_id": spec["run_id"],
                   "try_number": spec.get("try_number", 1), "dag_version_id": str(uuid.uuid4())}
    request = DagCallbackRequest(filepath=os.path.basename(spec["dag_file"]), bundle_name="dags-folder",
                                 bundle_version=None, dag_id=dag.dag_id, run_id=spec["run_id"],
                                 context_from_server=DagRunContext(dag_run=run, last_ti=last_ti),
                                 is_failure_callback=True, msg=spec["reason"])
    t0 = time.monotonic()
    processor._execute_dag_callbacks(bag, request, structlog.get_logger("probe"))
    out["seconds"] = round(time.monotonic() - t0, 3)
    out["pulls"] = comms.pulls
    return out


def notifier_for(spec: dict):
    from registry.config import parse_alerts
    from tfs_release_airflow.alerts import ReleaseAlert
    return ReleaseAlert(model=spec["model"], alerts=parse_alerts(spec["model"], spec["alerts"]),
                        event=spec.get("event", "failure"), conn_id=spec.get("conn_id", "aws_default"),
                        report_base_url=spec.get("report_base_url"), reports_root=spec.get("reports_root"))


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def main() -> None:
    mode, arg, out_path = sys.argv[1:4]
    logs = Collect()
    for name in ("tfs_release.alerts", "tfs_release.report_link"):
        logging.getLogger(name).addHandler(logs)
        logging.getLogger(name).setLevel(logging.DEBUG)
    out: dict = {}
    if mode in ("message", "send"):
        with open(arg) as fh:
            spec = json.load(fh)
        notifier = notifier_for(spec)
        ctx = context_for(spec["context"])
        if mode == "message":
            out["subject"], out["text"] = notifier.message(ctx)
            from tfs_release_airflow.alerts import provider_notifiers
            out["notifiers"] = [[name, type(n).__module__ + "." + type(n).__name__]
                                for name, n in provider_notifiers(notifier.alerts, out["subject"], out["text"])]
        else:
            t0 = time.monotonic()
            try:
                notifier(ctx)
                out["raised"] = None
            except BaseException as exc:  # noqa: BLE001 - what the test checks
                out["raised"] = repr(exc)
            out["seconds"] = round(time.monotonic() - t0, 3)
        out["pulls"] = ctx["ti"].pulls
    elif mode == "dag-callback":
        with open(arg) as fh:
            out.update(dag_callback(json.load(fh)))
    elif mode == "dag":
        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.serialized_objects import DagSerialization
        t0 = time.monotonic()
        bag = DagBag(dag_folder=arg)
        out["seconds"] = round(time.monotonic() - t0, 3)
        out["import_errors"] = {str(k): v for k, v in bag.import_errors.items()}
        out["dags"] = {}
        for dag in bag.dags.values():
            ser = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.serialize_dag(dag)["tasks"]}
            out["dags"][dag.dag_id] = {t.task_id: {
                "on_failure": [[type(c).__name__, getattr(c, "event", None), getattr(c, "reports_root", None)]
                               for c in t.on_failure_callback],
                "on_success": [[type(c).__name__, getattr(c, "event", None), getattr(c, "reports_root", None)]
                               for c in t.on_success_callback],
                "links": [[type(x).__name__, x.name, x.xcom_key, getattr(x, "report_base_url", None)]
                          for x in t.operator_extra_links],
                "serialized_links": ser[t.task_id].get("_operator_extra_links"),
            } for t in dag.tasks}
            out["dags"][dag.dag_id]["doc_md"] = dag.doc_md
            cbs = dag.on_failure_callback
            out.setdefault("dag_on_failure", {})[dag.dag_id] = [
                [type(c).__name__, getattr(c, "run_timeout_s", None)]
                for c in ([] if cbs is None else cbs if isinstance(cbs, list) else [cbs])]
    out["logs"] = logs.lines
    with open(out_path, "w") as fh:
        json.dump(out, fh, default=str)


if __name__ == "__main__":
    main()
