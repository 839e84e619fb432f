"""What a training job does after it wrote a complete checkpoint (its files first, the ``checkpoint``
state file last): tell Airflow, so the model's release starts now instead of at the watcher's next
listing. One Asset event for the model's checkpoints Asset (``s3://<training>/<model>/checkpoints``,
the release DAG's schedule) through Airflow's REST API (``registry/airflow_events.py``):

    GET  /api/v2/assets?uri_pattern=<uri>       -> the Asset's id
    POST /api/v2/assets/events {"asset_id": id, "extra": {"checkpoint": ..., "source": "training"}}

Needs only the standard library (a training image has no Airflow). The caller needs an Airflow
user allowed to create asset events; pass a bearer token, or a user and password for the API
server's ``/auth/token`` (the simple auth manager; other auth managers: get a token their way).

    python demo/checkpoint_events.py s3://training/shapes-classifier/checkpoints/ckpt-600 \\
        --api http://127.0.0.1:8080 [--token T | --user admin --password P]

Environment instead of flags: AIRFLOW_API_URL, AIRFLOW_API_TOKEN, AIRFLOW_API_USER, AIRFLOW_API_PASSWORD.
A checkpoint still being written must not be announced: the release would pick the newest
*complete* one anyway, so an early event starts a run that releases the previous checkpoint again
(skipped: already published) or nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from registry.airflow_events import EventError, checkpoints_asset_uri, post_checkpoint_event, token_for  # noqa: E402

__all__ = ["EventError", "checkpoints_asset_uri", "post_checkpoint_event", "token_for", "main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="s3://<training>/<model>/checkpoints/ckpt-N (complete)")
    p.add_argument("--api", default=os.environ.get("AIRFLOW_API_URL"))
    p.add_argument("--token", default=os.environ.get("AIRFLOW_API_TOKEN"))
    p.add_argument("--user", default=os.environ.get("AIRFLOW_API_USER"))
    p.add_argument("--password", default=os.environ.get("AIRFLOW_API_PASSWORD"))
    a = p.parse_args(argv)
    if not a.api or not (a.token or (a.user and a.password)):
        print("checkpoint_events: give --api and --token (or --user and --password), or AIRFLOW_API_URL and "
              "AIRFLOW_API_TOKEN", file=sys.stderr)
        return 2
    try:
        ev = post_checkpoint_event(a.api, a.checkpoint, token=a.token or token_for(a.api, a.user, a.password))
    except EventError as exc:
        print(f"checkpoint_events: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"asset_event": ev.get("id"), "asset": ev.get("uri"), "timestamp": ev.get("timestamp")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
