"""Canary DAG ``model_canary``: promote or abort the canary of a ``rollout: canary`` model.

Manual only, and listed only when a model has ``rollout: canary``. Params: **model** (a model with ``rollout: canary`` in config/models.yaml),
**action** (``promote``: the canary becomes stable and TF Serving unloads the old stable; ``abort``:
the canary is removed and never becomes stable), **reason** (required) and optionally **version**
(refuse unless the canary is that version: a guard against acting on a canary that changed since
you looked). The change is a conditional write of ``s3://<serving>/<model>/_labels.json`` (every
replica's sync sidecar applies it to its TF Serving within a round), recorded in its history with
the reason and the run, and announced on the model's alert channels. Only a canary whose rollout
production confirmed can be promoted; an abort is always possible (a confirm still running for it
stops). Same without Airflow: ``tfs-release promote|abort MODEL --reason ...``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "plugins")):
    if _path not in sys.path:
        sys.path.append(_path)

from airflow.sdk import Param, dag, task  # noqa: E402

from registry import config as config_mod  # noqa: E402

log = logging.getLogger("tfs_release.model_canary")
CONFIG = os.environ.get("TFS_RELEASE_CONFIG") or os.path.join(ROOT, "config", "models.yaml")


def build_dag(config_path: str = CONFIG):
    cfg = config_mod.load(config_path, strict=False)
    names = sorted(n for n, m in cfg.models.items() if m.extra.get("rollout") == "canary")
    if not names:
        return None  # no model has `rollout: canary`: no DAG (a form whose Model list is empty helps nobody)

    @dag(
        dag_id="model_canary",
        schedule=None,
        start_date=_dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["tfs-release", "canary"],
        doc_md=__doc__,
        params={
            "model": Param(names[0], type="string", enum=names, title="Model",
                           description="a model with rollout: canary"),
            "action": Param("promote", type="string", enum=["promote", "abort"], title="Action",
                            description="promote: the canary becomes stable; abort: the canary is removed"),
            "reason": Param("", type="string", minLength=1, maxLength=500, title="Reason",
                            description="required (Trigger stays disabled until it is filled in): why; "
                                        "recorded in the registry and announced"),
            "version": Param(None, type=["null", "integer"], minimum=1, title="Canary version (guard)",
                             description="refuse unless the canary is this version (empty: whatever it is)"),
        },
        dagrun_timeout=_dt.timedelta(minutes=30),
        default_args={"owner": "tfs-release", "retries": 0, "execution_timeout": _dt.timedelta(minutes=10)},
    )
    def model_canary():
        @task
        def change_labels(params=None, run_id=None, dag_run=None) -> dict:
            """Promote or abort; announce it on the model's alert channels."""
            from production import lifecycle
            from tfs_release_airflow.connection import s3_settings

            model = config_mod.load(config_path, strict=False).model(params["model"])
            client = s3_settings(model.extra.get("conn_id", "aws_default")).client()
            who = getattr(dag_run, "triggering_user_name", None) or f"airflow run {run_id}"
            act = lifecycle.promote if params["action"] == "promote" else lifecycle.abort
            state = act(client, model, reason=params["reason"], by=who, expect=params["version"])
            done = state["history"][-1]
            text = (f"{model.name}: canary version {done['version']} {params['action']}d by {who}: {params['reason']}. "
                    f"Now stable {state['stable']}, canary {state['canary']}.")
            log.info(text)
            alerts = model.extra.get("alerts")
            if alerts is not None:
                from tfs_release_airflow.alerts import provider_notifiers
                for name, notifier in provider_notifiers(alerts, f"[tfs-release] {model.name}: canary "
                                                                 f"{params['action']}d", text):
                    try:
                        notifier.notify({"run_id": run_id})
                    except Exception as exc:  # noqa: BLE001 - the change is made; say the announcement failed
                        log.error("announcement via %s failed: %s", name, exc)
            return {"model": model.name, "action": params["action"], "version": done["version"],
                    "stable": state["stable"], "canary": state["canary"], "by": who, "reason": params["reason"]}

        change_labels()

    return model_canary()


build_dag()
