"""Event-driven releases: the watcher that turns a new complete checkpoint into an Asset event.

``CheckpointTrigger`` is a ``BaseEventTrigger``: the release DAG's checkpoints Asset carries it in an
``AssetWatcher``, so it runs on Airflow's triggerer (asyncio) while the DAG is unpaused, and every
event it yields becomes an Asset event that schedules one release run. No DAG run, worker slot or
TensorFlow process exists while nothing lands; the only cost is one conditional GET of the
training job's ``checkpoint`` state file per ``poll_s`` (a LIST when it changed, and every 10 minutes).

Each poll runs ``registry.checkpoint_watch.Watch.poll`` in a thread (boto3 is blocking; the S3
client comes from the model's Airflow connection): it fires only for a new *complete* checkpoint
that is not published yet, once. What it reported is kept in Airflow's asset state store (key
``reported``), so a restarted triggerer does not report it again; an unreadable store falls back to
"already published" (at worst one extra run, which the DAG's ``is_new`` skips). S3 errors are
logged and retried with a backoff (up to 10 minutes); the trigger never ends on its own.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import time
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # registry/ on the triggerer, which imports this by classpath, not via a DAG file
    sys.path.append(ROOT)

CLASSPATH = "tfs_release_airflow.checkpoint_watch.CheckpointTrigger"
STATE_KEY = "reported"


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def client_for(conn_id: str, fresh: bool = False):
    """One S3 client per connection for every watcher in this triggerer process (boto3 clients are
    thread-safe; building one costs ~0.2 s of CPU); ``fresh`` after an error: settings re-read."""
    with _clients_lock:
        if fresh or conn_id not in _clients:
            from tfs_release_airflow.connection import s3_settings
            _clients[conn_id] = s3_settings(conn_id).client()
        return _clients[conn_id]


class CheckpointTrigger(BaseEventTrigger):
    def __init__(self, model: str, checkpoints: str, serving: str, conn_id: str = "aws_default",
                 poll_s: float = 5.0):  # registry.config.DEFAULT_CHECKPOINT_POLL_S
        super().__init__()
        self.model, self.checkpoints, self.serving = model, checkpoints, serving
        self.conn_id, self.poll_s = conn_id, float(poll_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (CLASSPATH, {"model": self.model, "checkpoints": self.checkpoints, "serving": self.serving,
                            "conn_id": self.conn_id, "poll_s": self.poll_s})

    # --- the asset state store (what was reported), best effort --------------------------------
    async def _load_reported(self) -> str | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        try:
            value = await store.aget(STATE_KEY)
        except Exception as exc:  # noqa: BLE001 - the published check is the fallback
            self.log.warning("checkpoint watch %s: cannot read the asset state store (%s); falling back to "
                             "what is published", self.model, exc)
            return None
        return value.get("fingerprint") if isinstance(value, dict) else None

    async def _save_reported(self, decision) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return
        try:
            await store.aset(STATE_KEY, {"fingerprint": decision.fingerprint, "checkpoint": decision.checkpoint,
                                         "step": decision.step, "action": decision.action, "at": time.time()})
        except Exception as exc:  # noqa: BLE001
            self.log.warning("checkpoint watch %s: cannot write the asset state store (%s); a restarted "
                             "triggerer falls back to what is published", self.model, exc)

    def _watch(self, reported: str | None, fresh: bool):
        from registry.checkpoint_watch import Watch
        from registry.s3 import S3Uri
        return Watch(client_for(self.conn_id, fresh), S3Uri.parse(self.checkpoints), S3Uri.parse(self.serving),
                     reported)

    async def run(self):
        # imported in a thread: registry pulls in boto3, which would block the triggerer's event loop
        cw = await asyncio.to_thread(importlib.import_module, "registry.checkpoint_watch")
        FIRE, RECORD, UNCHANGED, WAIT, backoff = cw.FIRE, cw.RECORD, cw.UNCHANGED, cw.WAIT, cw.backoff  # noqa: N806
        reported = await self._load_reported()
        self.log.info("checkpoint watch %s: listing %s every %.0fs (reported so far: %s)", self.model,
                      self.checkpoints, self.poll_s, reported[:12] if reported else "nothing")
        watch, errors = None, 0
        while True:
            try:
                if watch is None:  # (re)created after an error: fresh connection settings and client
                    watch = await asyncio.to_thread(self._watch, reported, errors > 0)
                decision = await asyncio.to_thread(watch.poll)
            except Exception as exc:  # noqa: BLE001 - storage down, credentials rotated: retry
                errors += 1
                reported = watch.reported if watch is not None else reported
                watch = None
                wait = backoff(self.poll_s, errors)
                self.log.warning("checkpoint watch %s: poll failed (%s: %s); retrying in %.0fs", self.model,
                                 type(exc).__name__, str(exc)[:300], wait)
                await asyncio.sleep(wait)
                continue
            errors = 0
            if decision.action == FIRE:
                self.log.info("checkpoint watch %s: %s -> Asset event", self.model, decision.reason)
                yield TriggerEvent({"model": self.model, "checkpoint": decision.checkpoint, "step": decision.step,
                                    "fingerprint": decision.fingerprint, "detected_at": time.time(),
                                    "source": "watcher"})
                await self._save_reported(decision)  # after the event: a crash in between repeats it, never loses it
            elif decision.action == RECORD:
                self.log.info("checkpoint watch %s: %s", self.model, decision.reason)
                await self._save_reported(decision)
            elif decision.action == WAIT and decision.reason != UNCHANGED:
                self.log.info("checkpoint watch %s: %s", self.model, decision.reason)
            await asyncio.sleep(self.poll_s)
