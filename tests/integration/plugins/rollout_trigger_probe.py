"""Run by the Airflow env's python (not pytest): the rollout trigger as the triggerer runs it, its
endpoint credentials resolved from a real Airflow connection (production.conn_id), serialized and
rebuilt from its kwargs (what the triggerer stores, encrypted), then run against the endpoint.

    python rollout_trigger_probe.py OUT.json CONN_ID REST_URL MODEL VERSION

Writes {"with_auth": <event>, "without_auth": <event>}."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "plugins")]


async def first_event(trigger) -> dict:
    async for ev in trigger.run():
        return ev.payload


def main(out, conn_id, url, model, version):
    from tfs_release_airflow.connection import production_auth
    from tfs_release_airflow.rollout import RolloutTrigger
    auth = production_auth(conn_id)
    started = time.time() - 60  # no first-poll wait; a deadline already passed unless served at once
    _, kwargs = RolloutTrigger([url], model, int(version), 30, 0.5, started=started, auth=auth.as_dict()).serialize()
    served = asyncio.run(first_event(RolloutTrigger(**kwargs)))
    plain = asyncio.run(first_event(RolloutTrigger([url], model, int(version), 30, 0.5, started=started)))
    with open(out, "w") as fh:
        json.dump({"with_auth": served, "without_auth": plain, "kwargs_keys": sorted(kwargs)}, fh)


if __name__ == "__main__":
    main(*sys.argv[1:])
