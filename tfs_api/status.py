"""TF Serving's model status (``GET /v1/models/<model>``): the one reading of its
``model_version_status`` rows. Standard library only: the Airflow side reads it too (the rollout
trigger, through production/observe.py), where there is no numpy.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request


def rest_status(body: dict) -> list[dict]:
    """TF Serving's GET /v1/models/<m> answer -> [{"version", "state", "error"}] (gRPC's
    GetModelStatus gives the same rows: ``tfs_api.clients.GrpcClient.status``)."""
    return [{"version": int(v.get("version", 0)), "state": v.get("state", "UNKNOWN"),
             "error": (v.get("status") or {}).get("error_message", "")}
            for v in body.get("model_version_status", [])]


def available_versions(rest_url: str | None, model: str, timeout: float = 5.0) -> set[int]:
    """Versions the TF Serving at ``rest_url`` reports AVAILABLE for ``model`` (empty when it is
    unknown or unreachable: a sync sidecar then moves no label)."""
    if not rest_url:
        return set()
    try:
        with urllib.request.urlopen(f"{rest_url.rstrip('/')}/v1/models/{model}", timeout=timeout) as r:
            body = json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return set()
    return {r["version"] for r in rest_status(body) if r["state"] == "AVAILABLE"}
