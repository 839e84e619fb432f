"""What production TF Serving says: one endpoint's view of a model, over REST or gRPC.

An endpoint is ``{rest: http(s)://host:8501, grpc: host:8500}`` (either or both; REST is asked
first). Every answer says whether production could be *observed* at all: a refused connection, a
timeout, 401/403 or a TLS error is "could not observe" (state UNREACHABLE / ERROR), never "the
version is not there" (production/rules.py ``classify`` keeps the two apart).
"""
from __future__ import annotations

import json
import urllib.error

from tfs_api.endpoint_auth import ENV as AUTH_ENV
from tfs_api.endpoint_auth import NONE, EndpointAuth
from tfs_api.status import rest_status


def name(ep: dict) -> str:
    return ep.get("rest") or f"grpc://{ep['grpc']}"


def _auth_hint(code: int) -> str:
    if code in (401, 403):
        return (" (the endpoint wants credentials: name an Airflow connection in production.conn_id, or set "
                f"{AUTH_ENV} for the CLI; see docs/production.md \"Credentials and TLS\")")
    return ""


def _tls_hint(exc: BaseException) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (f" (its certificate is not trusted here: give the CA in production.conn_id's extra ca_bundle, or "
                f"{AUTH_ENV} for the CLI)")
    return ""


def _rest_get(url: str, auth: EndpointAuth, timeout: float) -> tuple[dict | None, dict]:
    """(body, {}) or (None, {state, error, http}) for a failed GET."""
    try:
        with auth.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read()), {}
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        return None, {"state": "NOT_FOUND" if exc.code == 404 else "ERROR", "http": exc.code,
                      "error": f"HTTP {exc.code}: {text[:300]}" + _auth_hint(exc.code)}
    except (OSError, ValueError) as exc:
        return None, {"state": "UNREACHABLE", "http": None, "error": f"{type(exc).__name__}: {exc}"[:300] + _tls_hint(exc)}


def model_status(ep: dict, model: str, *, timeout: float = 5.0, auth: EndpointAuth = NONE) -> dict:
    """{observed: bool, versions: {N: {state, error}}, error}: every version the endpoint reports.
    A 404 for the model (TF Serving knows no version of it) is observed, with no versions."""
    if ep.get("rest"):
        body, err = _rest_get(f"{ep['rest'].rstrip('/')}/v1/models/{model}", auth, timeout)
        if body is None:
            if err["state"] == "NOT_FOUND":
                return {"observed": True, "versions": {}, "error": err["error"]}
            return {"observed": False, "state": err["state"], "versions": {}, "error": err["error"]}
        return {"observed": True, "error": "",
                "versions": {r["version"]: {"state": r["state"], "error": r["error"]} for r in rest_status(body)}}
    from tfs_api.clients import GrpcClient, ServingError
    host, _, port = ep["grpc"].rpartition(":")
    client = GrpcClient(host, int(port), model, timeout=timeout, auth=auth)
    try:
        st = client.status()
        return {"observed": True, "error": "",
                "versions": {int(v["version"]): {"state": v["state"], "error": v["error"]} for v in st}}
    except ServingError as exc:
        if "NOT_FOUND" in str(exc):
            return {"observed": True, "versions": {}, "error": str(exc)[:300]}
        return {"observed": False, "versions": {}, "error": str(exc)[:300]}
    finally:
        client.close()


def version_status(ep: dict, model: str, version: int, *, timeout: float = 5.0, auth: EndpointAuth = NONE) -> dict:
    """{state, error, others}: version N on one endpoint (AVAILABLE / LOADING / START / UNLOADING / END
    with TF Serving's error / NOT_FOUND, or UNREACHABLE when it could not be observed), and the
    other versions it reports AVAILABLE."""
    st = model_status(ep, model, timeout=timeout, auth=auth)
    if not st["observed"]:
        return {"state": st.get("state", "UNREACHABLE"), "error": st["error"], "others": []}
    others = sorted(v for v, s in st["versions"].items() if s["state"] == "AVAILABLE" and v != int(version))
    mine = st["versions"].get(int(version))
    if mine is None:
        return {"state": "NOT_FOUND", "error": "", "others": others}
    return {"state": mine["state"], "error": mine["error"], "others": others}


def label_version(ep: dict, model: str, label: str, *, timeout: float = 5.0, auth: EndpointAuth = NONE) -> dict:
    """{version, observed, error}: the version ``label`` names on one endpoint (the ``model_spec``
    of its metadata: GetModelStatus ignores labels). A label the server does not know is observed
    with version None."""
    if ep.get("rest"):
        body, err = _rest_get(f"{ep['rest'].rstrip('/')}/v1/models/{model}/labels/{label}/metadata", auth, timeout)
        if body is None:
            return {"version": None, "observed": err["state"] in ("NOT_FOUND",) or err.get("http") == 400,
                    "error": err["error"]}
        v = (body.get("model_spec") or {}).get("version")
        return {"version": int(v) if v is not None else None, "observed": True, "error": ""}
    from tfs_api import protos
    from tfs_api.clients import GrpcClient, ServingError
    host, _, port = ep["grpc"].rpartition(":")
    client = GrpcClient(host, int(port), model, timeout=timeout, auth=auth)
    try:
        req = protos.message("tensorflow.serving.GetModelMetadataRequest")(metadata_field=["signature_def"])
        req.model_spec.name = model
        req.model_spec.version_label = label
        resp = client._rpc("/tensorflow.serving.PredictionService/GetModelMetadata",
                           "tensorflow.serving.GetModelMetadataResponse", req)
        return {"version": int(resp.model_spec.version.value), "observed": True, "error": ""}
    except ServingError as exc:
        text = str(exc)
        known = any(k in text for k in ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"))
        return {"version": None, "observed": known, "error": text[:300]}
    finally:
        client.close()


def serving(endpoints: list[dict], model: str, *, label: str | None = None, auth: EndpointAuth = NONE,
            timeout: float = 5.0) -> tuple[int | None, str | None]:
    """(version, None): what production serves (the version ``label`` names, or the highest
    AVAILABLE one) on every endpoint that answers; (None, why) when an endpoint could not be
    observed or the endpoints disagree. (None, None): production serves no version of the model."""
    seen, problems = {}, []
    for ep in endpoints:
        if label:
            r = label_version(ep, model, label, timeout=timeout, auth=auth)
            if not r["observed"]:
                problems.append(f"{name(ep)}: {r['error']}")
            else:
                seen[name(ep)] = r["version"]
        else:
            st = model_status(ep, model, timeout=timeout, auth=auth)
            if not st["observed"]:
                problems.append(f"{name(ep)}: {st['error']}")
            else:
                avail = [v for v, s in st["versions"].items() if s["state"] == "AVAILABLE"]
                seen[name(ep)] = max(avail, default=None)
    if problems:
        return None, "production could not be observed: " + "; ".join(problems)
    versions = set(seen.values())
    if len(versions) > 1:  # replicas mid-rollout: the lowest is what every replica has served
        known = sorted(v for v in versions if v is not None)
        if None in versions:
            return None, (f"the production endpoints disagree ({seen}): some serve no version of {model} "
                          "yet; wait for the rollout to finish and run again")
        return known[0], None
    return (versions.pop() if versions else None), None
