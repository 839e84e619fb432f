"""What a training job does after it wrote a complete checkpoint (its files first, the ``checkpoint``
state file last): tell Airflow, so the model's release starts now instead of at the watcher's next
listing. One Asset event for the model's checkpoints Asset (``s3://<training>/<model>/checkpoints``,
the release DAG's schedule) through Airflow's REST API:

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
import posixpath
import sys
import urllib.error
import urllib.parse
import urllib.request


class EventError(RuntimeError):
    """Airflow did not take the event (no such Asset, no permission, API down)."""


def _call(api: str, method: str, path: str, body: dict | None = None, token: str | None = None,
          timeout: float = 10) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(api.rstrip("/") + path, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise EventError(f"{method} {path}: HTTP {exc.code} {detail}") from None
    except OSError as exc:
        raise EventError(f"{method} {path}: Airflow's API at {api} does not answer ({exc})") from None


def token_for(api: str, user: str, password: str) -> str:
    return _call(api, "POST", "/auth/token", {"username": user, "password": password})["access_token"]


def checkpoints_asset_uri(checkpoint_uri: str) -> str:
    """s3://b/m/checkpoints/ckpt-7 -> s3://b/m/checkpoints (the Asset the release DAG is scheduled on)."""
    folder = posixpath.dirname(checkpoint_uri.rstrip("/")) if posixpath.basename(
        checkpoint_uri.rstrip("/")).startswith("ckpt-") else checkpoint_uri
    return folder.rstrip("/")


def post_checkpoint_event(api: str, checkpoint_uri: str, *, token: str, extra: dict | None = None) -> dict:
    """One Asset event for the checkpoints Asset that holds ``checkpoint_uri``; returns Airflow's event."""
    uri = checkpoints_asset_uri(checkpoint_uri)
    found = _call(api, "GET", "/api/v2/assets?" + urllib.parse.urlencode({"uri_pattern": uri, "limit": 100}),
                  token=token)
    ids = [a["id"] for a in found.get("assets", []) if a.get("uri") == uri]
    if not ids:
        raise EventError(f"Airflow has no Asset {uri}: is the model's release DAG deployed, with trigger: "
                         f"checkpoint-event and this checkpoints prefix?")
    body = {"asset_id": ids[0], "extra": {"checkpoint": checkpoint_uri, "source": "training", **(extra or {})}}
    return _call(api, "POST", "/api/v2/assets/events", body, token=token)


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
