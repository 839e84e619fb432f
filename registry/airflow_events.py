"""Asset events through Airflow's REST API, with the standard library only (no Airflow here: a
training image or the checkpoint relay has none).

    GET  /api/v2/assets?uri_pattern=<uri>                       -> the Asset's id
    GET  /api/v2/assets/events?asset_id=<id>&order_by=-timestamp -> what was last announced
    POST /api/v2/assets/events {"asset_id": id, "extra": {...}}  -> a release DAG scheduled on it starts

The caller needs an Airflow user allowed to create asset events: a bearer token, or a user and
password for the API server's ``/auth/token`` (the simple auth manager; other auth managers: get a
token their way). A token that expires is fetched again once (HTTP 401).
"""
from __future__ import annotations

import json
import posixpath
import threading
import urllib.error
import urllib.parse
import urllib.request


class EventError(RuntimeError):
    """Airflow did not take the call (no such Asset, no permission, API down)."""


def checkpoints_asset_uri(checkpoint_uri: str) -> str:
    """s3://b/m/checkpoints/ckpt-7 -> s3://b/m/checkpoints (the Asset the release DAG is scheduled on)."""
    folder = posixpath.dirname(checkpoint_uri.rstrip("/")) if posixpath.basename(
        checkpoint_uri.rstrip("/")).startswith("ckpt-") else checkpoint_uri
    return folder.rstrip("/")


def call(api: str, method: str, path: str, body: dict | None = None, token: str | None = None,
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
        err = EventError(f"{method} {path}: HTTP {exc.code} {detail}")
        err.status = exc.code
        raise err from None
    except OSError as exc:
        raise EventError(f"{method} {path}: Airflow's API at {api} does not answer ({exc})") from None


def token_for(api: str, user: str, password: str) -> str:
    return call(api, "POST", "/auth/token", {"username": user, "password": password})["access_token"]


class AirflowAssets:
    """One Airflow API server: Asset ids looked up once, the token fetched again when it expires.
    Thread-safe (the relay's worker and its HTTP handlers share one)."""

    def __init__(self, api: str, *, token: str | None = None, user: str | None = None,
                 password: str | None = None, timeout: float = 10):
        if not api or not (token or (user and password)):
            raise EventError("Airflow's API needs an address and a token, or a user and password "
                             "(AIRFLOW_API_URL and AIRFLOW_API_TOKEN, or AIRFLOW_API_USER and AIRFLOW_API_PASSWORD)")
        self.api, self.user, self.password, self.timeout = api.rstrip("/"), user, password, timeout
        self._token, self._fixed = token, bool(token)
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._lock:
            if self._token is None:
                self._token = token_for(self.api, self.user, self.password)
            token = self._token
        try:
            return call(self.api, method, path, body, token=token, timeout=self.timeout)
        except EventError as exc:
            if getattr(exc, "status", None) != 401 or self._fixed:
                raise
        with self._lock:  # expired: one new token, one more try
            self._token = token_for(self.api, self.user, self.password)
            token = self._token
        return call(self.api, method, path, body, token=token, timeout=self.timeout)

    def asset_id(self, uri: str) -> int:
        if uri not in self._ids:
            found = self._call("GET", "/api/v2/assets?" + urllib.parse.urlencode({"uri_pattern": uri, "limit": 100}))
            ids = [a["id"] for a in found.get("assets", []) if a.get("uri") == uri]
            if not ids:
                raise EventError(f"Airflow has no Asset {uri}: is the model's release DAG deployed (and parsed), with "
                                 f"trigger: checkpoint-event and this checkpoints prefix?")
            self._ids[uri] = ids[0]
        return self._ids[uri]

    def latest(self, uri: str) -> dict | None:
        """The newest event of the Asset (its ``extra`` says which checkpoint), or None."""
        q = urllib.parse.urlencode({"asset_id": self.asset_id(uri), "order_by": "-timestamp", "limit": 1})
        events = self._call("GET", f"/api/v2/assets/events?{q}").get("asset_events") or []
        return events[0] if events else None

    def post(self, uri: str, extra: dict) -> dict:
        """One Asset event; returns Airflow's record of it."""
        return self._call("POST", "/api/v2/assets/events", {"asset_id": self.asset_id(uri), "extra": extra})


def post_checkpoint_event(api: str, checkpoint_uri: str, *, token: str, extra: dict | None = None) -> dict:
    """One Asset event for the checkpoints Asset that holds ``checkpoint_uri``; returns Airflow's event."""
    return AirflowAssets(api, token=token).post(checkpoints_asset_uri(checkpoint_uri),
                                                {"checkpoint": checkpoint_uri, "source": "training", **(extra or {})})
