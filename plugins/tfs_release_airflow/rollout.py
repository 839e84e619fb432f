"""Waiting for production to load a published version, without holding a worker slot.

``WaitForRolloutOperator`` defers to ``RolloutTrigger`` (runs on Airflow's triggerer, asyncio):
every ``poll_s`` it asks each production endpoint for version N (TF Serving's REST
``/v1/models/<m>/versions/<N>``) until N is AVAILABLE on all of them, one reports it failed to load
(state END with TF Serving's error), or the deadline passes. The task then returns what it saw
(XCom: served / failed / unknown, production/rules.py ``classify``) and never fails: the
``confirm_rollout`` step that follows (``tfs-release confirm``, worker env) checks again, runs the
smoke test against production and records the outcome through production/lifecycle.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


def rest_status(rest: str, model: str, version: int, timeout: float = 5.0, auth=None) -> dict:
    """Version N on one REST endpoint: production/observe.py's answer (the one implementation the
    CLI's confirm, this trigger and the gate's baseline share)."""
    from production.observe import version_status
    from tfs_api.endpoint_auth import NONE
    return version_status({"rest": rest}, model, version, timeout=timeout, auth=auth or NONE)


FIRST_POLL_AFTER_S = 10.0


class RolloutTrigger(BaseTrigger):
    """``auth``: the endpoints' credentials and TLS (EndpointAuth.as_dict(); Airflow stores trigger
    kwargs encrypted)."""

    def __init__(self, endpoints: list[str], model: str, version: int, deadline_s: float, poll_s: float = 2.0,
                 started: float | None = None, auth: dict | None = None):
        super().__init__()
        self.endpoints, self.model, self.version = list(endpoints), model, int(version)
        self.deadline_s, self.poll_s = float(deadline_s), float(poll_s)
        self.started = started or time.time()
        self.auth = auth or None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("tfs_release_airflow.rollout.RolloutTrigger",
                {"endpoints": self.endpoints, "model": self.model, "version": self.version,
                 "deadline_s": self.deadline_s, "poll_s": self.poll_s, "started": self.started,
                 **({"auth": self.auth} if self.auth else {})})

    async def run(self):
        rows = {e: {"endpoint": e, "state": "UNKNOWN", "error": "", "others": []} for e in self.endpoints}
        # not within seconds of the deferral: the scheduler first drains the deferring attempt's exit
        # event (fired sooner, the resumed attempt can be marked failed: apache/airflow#72716)
        await asyncio.sleep(max(0.0, FIRST_POLL_AFTER_S - (time.time() - self.started)))
        from production.rules import classify
        from tfs_api.endpoint_auth import NONE, EndpointAuth
        auth = EndpointAuth.from_dict(self.auth, where="the rollout trigger's auth") if self.auth else NONE
        while True:
            for e in self.endpoints:
                if rows[e]["state"] != "AVAILABLE":
                    rows[e].update(await asyncio.to_thread(rest_status, e, self.model, self.version, 5.0, auth))
            elapsed = time.time() - self.started
            outcome, _ = classify(list(rows.values()), waited_out=elapsed >= self.deadline_s, version=self.version)
            if outcome == "waiting":
                await asyncio.sleep(self.poll_s)
                continue
            yield TriggerEvent({"outcome": outcome, "seconds": round(elapsed, 2), "version": self.version,
                                "endpoints": list(rows.values())})
            return


class WaitForRolloutOperator(BaseOperator):
    """Defers until production serves version N (or fails to, or the deadline passes)."""

    template_fields = ("version",)
    ui_color = "#e6f4ea"

    def __init__(self, *, model: str, endpoints: list[str], version: Any, deadline_s: float, poll_s: float = 2.0,
                 conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model, self.endpoints, self.version = model, list(endpoints), version
        self.deadline_s, self.poll_s, self.conn_id = deadline_s, poll_s, conn_id

    def execute(self, context):
        from tfs_release_airflow.connection import production_auth
        version = int(self.version)
        auth = production_auth(self.conn_id)
        rows = [{"endpoint": e, **rest_status(e, self.model, version, auth=auth)} for e in self.endpoints]
        if all(r["state"] == "AVAILABLE" for r in rows) or any(r["state"] == "END" and r["error"] for r in rows):
            # decided already: no deferral (a trigger that fires within seconds of the deferral meets
            # apache/airflow#72716: the stale defer-exit event marks the resumed task failed)
            outcome = "served" if all(r["state"] == "AVAILABLE" for r in rows) else "failed"
            return self.done(context, {"outcome": outcome, "seconds": 0.0, "version": version, "endpoints": rows})
        self.log.info("waiting (deferred, on the triggerer) up to %.0fs for %s version %d on %s", self.deadline_s,
                      self.model, version, ", ".join(self.endpoints))
        import datetime as _dt
        self.defer(trigger=RolloutTrigger(self.endpoints, self.model, version, self.deadline_s, self.poll_s,
                                          auth=auth.as_dict() if auth else None),
                   method_name="done", timeout=_dt.timedelta(seconds=self.deadline_s + 120))

    def done(self, context, event: dict | None = None):
        event = event or {}
        self.log.info("rollout of %s version %s: %s after %ss (%s)", self.model, event.get("version"),
                      event.get("outcome"), event.get("seconds"),
                      "; ".join(f"{r['endpoint']} {r['state']}" + (f" ({r['error']})" if r["error"] else "")
                                for r in event.get("endpoints", [])))
        return event
