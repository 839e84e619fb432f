"""Rollback DAG ``model_rollback``: production serves a good version again.

Manual only (no schedule). Params: **model** (one of config/models.yaml), **version** (the version to
serve again; empty: the newest version whose rollout production confirmed, below what it serves now)
and **reason**. Through the lifecycle (production/lifecycle.py), whatever the model's rollout mode:
for ``rollout: all`` a copy of that version is published as a new, higher version (TF Serving serves
the highest; nothing published is overwritten; ``rollback_of`` in its manifest), for ``rollout:
canary`` the ``stable`` label moves to it and the canary is cleared (every replica's sync sidecar
applies it). The versions production stops serving are recorded as rolled back, so no later rollback
returns to them. Running it again changes nothing once production is back on that version. Emits
an Asset event for ``s3://<serving>/<model>`` (through an AssetAlias, since the model is chosen at
trigger time). Same step without Airflow: ``tfs-release rollback MODEL [--to N]``.
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

from airflow.sdk import Asset, AssetAlias, Param, dag, task  # noqa: E402

from registry import config as config_mod  # noqa: E402

log = logging.getLogger("tfs_release.model_rollback")

CONFIG = os.environ.get("TFS_RELEASE_CONFIG") or os.path.join(ROOT, "config", "models.yaml")
ALIAS = AssetAlias("tfs-release-rollback")


def build_dag(config_path: str = CONFIG):
    cfg = config_mod.load(config_path, strict=False)  # a model with an invalid entry is left out, not fatal
    names = sorted(cfg.models)
    for name, error in sorted(cfg.errors.items()):
        log.error("model_rollback leaves out %r: %s", name, error)
    broken = "".join(f"\n\nNot offered (invalid config entry): `{n}`: {e}" for n, e in sorted(cfg.errors.items()))

    @dag(
        dag_id="model_rollback",
        schedule=None,
        start_date=_dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["tfs-release", "rollback"],
        doc_md=__doc__ + broken,
        params={
            "model": Param(names[0] if names else "", type="string", enum=names or [""], title="Model",
                           description="the TF Serving model to roll back"),
            "version": Param(None, type=["null", "integer"], minimum=1, title="Version",
                             description="the version to serve again (`tfs-release versions MODEL` lists them "
                                         "with their rollout state); empty: the newest confirmed one"),
            # optional, as the CLI's --reason: a required text field left empty disables the form's
            # Trigger button without saying why
            "reason": Param(None, type=["null", "string"], maxLength=500, title="Reason",
                            description="why (logged, kept in the run's XCom and the rollback's records)"),
        },
        dagrun_timeout=_dt.timedelta(hours=2),
        default_args={"owner": "tfs-release", "retries": 0, "execution_timeout": _dt.timedelta(hours=1)},
    )
    def model_rollback():
        @task(outlets=[ALIAS])
        def rollback(params=None, run_id=None, outlet_events=None, dag_run=None) -> dict:
            """Production serves ``version`` (or the newest confirmed one) of ``model`` again."""
            from production import lifecycle
            from registry.staging import safe_run_id
            from tfs_release_airflow.connection import s3_settings, signing_key

            model = config_mod.load(config_path, strict=False).model(params["model"])
            client = s3_settings(model.extra.get("conn_id", "aws_default")).client()
            who = getattr(dag_run, "triggering_user_name", None) or f"airflow run {run_id}"
            log.info("rolling back %s to %s; reason: %s", model.name,
                     f"version {params['version']}" if params["version"] else "the newest confirmed version",
                     params["reason"] or "(none given)")
            res = lifecycle.rollback(client, model, to=params["version"], reason=params["reason"] or None, by=who,
                                     run_id=safe_run_id(f"rollback-{run_id}"),
                                     signer=signing_key(model.extra.get("signing_conn_id")))
            out = {**res, "version": res["served"], "reason": params["reason"]}
            uri = f"s3://{model.serving.bucket}/{model.serving.prefix.rstrip('/')}"
            outlet_events[ALIAS].add(Asset(uri=uri),  # the release DAG's Asset (named by its URI)
                                     extra={"model": model.name, "version": res["served"],
                                            "rollback_of": res["rollback_of"], "already": res["already"]})
            log.info("%s: production %s version %s (%s)", model.name,
                     "already serves" if res["already"] else "now serves", res["served"],
                     f"a copy of {res['rollback_of']}" if res.get("copy") else "stable label")
            return out

        rollback()

    return model_rollback()


rollback_dag = build_dag()
