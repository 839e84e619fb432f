"""Rollback DAG ``model_rollback``: make an earlier published version the served one again.

Manual only (no schedule). Params: **model** (one of config/models.yaml) and **version** (a
published version number). It publishes a copy of that version as a new, higher version (TF
Serving serves the highest; nothing published is overwritten), recording ``rollback_of`` in the
new manifest, and emits an Asset event for ``s3://<serving>/<model>`` (through an AssetAlias,
since the model is chosen at trigger time). Same step without Airflow:
``tfs-release rollback MODEL --to N``.
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
            "version": Param(1, type="integer", minimum=1, title="Version",
                             description="the published version to serve again (see `tfs-release versions MODEL`)"),
            "reason": Param("", type="string", maxLength=500, title="Reason",
                            description="why (logged and kept in the run's XCom)"),
        },
        dagrun_timeout=_dt.timedelta(hours=2),
        default_args={"owner": "tfs-release", "retries": 0, "execution_timeout": _dt.timedelta(hours=1)},
    )
    def model_rollback():
        @task(outlets=[ALIAS])
        def rollback(params=None, run_id=None, outlet_events=None) -> dict:
            """Publish a copy of ``version`` as the new highest version of ``model``."""
            from registry.publish import rollback as registry_rollback
            from registry.staging import safe_run_id
            from registry.versions import list_versions
            from tfs_release_airflow.connection import s3_settings

            model = config_mod.load(config_path, strict=False).model(params["model"])
            client = s3_settings(model.extra.get("conn_id", "aws_default")).client()
            before = [v["version"] for v in list_versions(client, model.serving)]
            log.info("rolling back %s to version %s (published: %s; served now: %s); reason: %s",
                     model.name, params["version"], before, max(before, default=None),
                     params["reason"] or "(none given)")
            res = registry_rollback(client, model.serving, model.name, params["version"],
                                    run_id=safe_run_id(f"rollback-{run_id}"), reason=params["reason"] or None)
            out = {**res.to_json(), "rollback_of": params["version"], "previous_highest": max(before),
                   "reason": params["reason"]}
            uri = f"s3://{model.serving.bucket}/{model.serving.prefix.rstrip('/')}"
            outlet_events[ALIAS].add(Asset(uri=uri),  # the release DAG's Asset (named by its URI)
                                     extra={"model": model.name, "version": res.version,
                                            "rollback_of": params["version"], "manifest": out["manifest"]})
            log.info("%s: version %s is now the highest (a copy of %s)", model.name, res.version,
                     params["version"])
            return out

        rollback()

    return model_rollback()


rollback_dag = build_dag()
