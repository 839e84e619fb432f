"""The Airflow pool of the temporary serving containers (config ``serving_pool``: name, slots).

Every release DAG's validate task takes one slot of it, so at most ``slots`` validations (each with
its temporary TF Serving) run at once however many models share a schedule. A task whose pool does
not exist is never scheduled (Airflow shows a "non-existent pool" DAG warning), so this plugin
creates the pool, or sets its slots to the config's, when Airflow's API server or scheduler loads
plugins (they have the metadata database; task and DAG-parsing processes do not, and skip this).
By hand: ``airflow pools set tfs_release_serving 4 "tfs-release temporary serving containers"``.
"""
from __future__ import annotations

import logging
import os
import sys

from airflow.plugins_manager import AirflowPlugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # registry/ wherever Airflow runs
    sys.path.append(ROOT)

log = logging.getLogger(__name__)
DESCRIPTION = "tfs-release: temporary TF Serving containers of validations (config serving_pool)"
DB_COMMANDS = ("api-server", "scheduler")


def config_path() -> str:
    return os.environ.get("TFS_RELEASE_CONFIG") or os.path.join(ROOT, "config", "models.yaml")


def ensure_pool(path: str | None = None, *, session=None) -> tuple[str, int, str]:
    """Create the configured pool or set its slots; returns (name, slots, what was done)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    from registry import config as config_mod
    pool = config_mod.load(path or config_path(), strict=False).serving_pool
    with create_session() as s:
        s = session or s
        existing = Pool.get_pool(pool.name, session=s)
        if existing is not None and existing.slots == pool.slots:
            return pool.name, pool.slots, "exists"
        Pool.create_or_update_pool(pool.name, pool.slots, DESCRIPTION, include_deferred=False, session=s)
        return pool.name, pool.slots, "created" if existing is None else f"resized from {existing.slots}"


def _orm_blocked() -> bool:
    """A task process forked from the scheduler (LocalExecutor) keeps the scheduler's argv, but Airflow 3
    removed its database session (task code may not use the ORM): nothing to do there."""
    settings = sys.modules.get("airflow.settings")
    if settings is None:
        return False
    session = getattr(settings, "Session", None)
    # Airflow 3.3 replaces it with a class whose constructor raises (supervisor.BlockedDBSession)
    return session is None or getattr(session, "__name__", "") == "BlockedDBSession"


class TfsReleasePoolPlugin(AirflowPlugin):
    name = "tfs_release_pool"

    @classmethod
    def on_load(cls, *args, **kwargs):
        if len(sys.argv) < 2 or sys.argv[1] not in DB_COMMANDS or _orm_blocked():
            return
        try:
            name, slots, done = ensure_pool()
            log.info("tfs-release serving pool %s (%d slots): %s", name, slots, done)
        except Exception as exc:  # noqa: BLE001 - never break Airflow's start; validate tasks would wait
            log.warning("could not create the tfs-release serving pool (%s); create it with `airflow pools set "
                        "NAME SLOTS DESCRIPTION` (config serving_pool, default tfs_release_serving 4)", exc)
