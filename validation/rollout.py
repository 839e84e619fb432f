"""Did production load version N, and does it answer there as it did in validation?

A release ends when every production endpoint (``production.endpoints`` in the model's config: one
per TF Serving replica) reports N AVAILABLE and a smoke test against production itself (golden
images over REST and gRPC to ``/versions/N``) gives the answers the candidate gave in validation
(the exporter's reference answers, within the parity tolerance). Otherwise the rollout failed: an
endpoint reported N as failed to load (TF Serving's error is kept), the deadline passed, or the
answers differ. A failed rollout is rolled back (``on_failed_rollout: rollback``, the default): the
newest earlier version whose own rollout did not fail is published again as N+1 (TF Serving serves
the highest; ``rollback_of`` and the reason go into its manifest), and that is confirmed the same
way. Every outcome is written to ``s3://<serving>/<model>/_rollouts/<N>.json``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error

from registry import layout
from registry.errors import BadInput
from registry.s3 import S3Uri
from validation.endpoint_auth import ENV as AUTH_ENV
from validation.endpoint_auth import NONE, EndpointAuth

log = logging.getLogger(__name__)

CONFIRMED, FAILED, ROLLED_BACK, TIMED_OUT = "confirmed", "failed", "rolled back", "timed out"
SMOKE_IMAGES = 16  # golden images sent to each production endpoint (spread over the set)


rollout_key = layout.rollout_key


def read_record(client, serving: S3Uri, n: int) -> dict | None:
    try:
        return json.loads(client.get_object(Bucket=serving.bucket, Key=rollout_key(serving, n))["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def write_record(client, serving: S3Uri, n: int, record: dict) -> str:
    key = rollout_key(serving, n)
    client.put_object(Bucket=serving.bucket, Key=key, Body=json.dumps(record, indent=2, sort_keys=True).encode(),
                      ContentType="application/json")
    return f"s3://{serving.bucket}/{key}"


def _auth_hint(code: int) -> str:
    if code in (401, 403):
        return (" (the endpoint wants credentials: name an Airflow connection in production.conn_id, or set "
                f"{AUTH_ENV} for the CLI; see README \"Production loop\")")
    return ""


def _name(ep: dict) -> str:
    return ep.get("rest") or f"grpc://{ep['grpc']}"


def status_once(ep: dict, model: str, version: int, *, timeout: float = 5.0, auth: EndpointAuth = NONE) -> dict:
    """{state, error} of version N on one endpoint: AVAILABLE / LOADING / START / UNLOADING / END
    (with TF Serving's error when its load failed), NOT_FOUND (not seen yet) or UNREACHABLE."""
    if ep.get("rest"):
        url = f"{ep['rest'].rstrip('/')}/v1/models/{model}/versions/{int(version)}"
        try:
            with auth.urlopen(url, timeout=timeout) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            return {"state": "NOT_FOUND" if exc.code == 404 else "ERROR",
                    "error": f"HTTP {exc.code}: {text[:300]}" + _auth_hint(exc.code)}
        except (OSError, ValueError) as exc:
            hint = (f" (its certificate is not trusted here: give the CA in production.conn_id's extra ca_bundle, or "
                    f"{AUTH_ENV} for the CLI)" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "")
            return {"state": "UNREACHABLE", "error": f"{type(exc).__name__}: {exc}"[:300] + hint}
        for v in body.get("model_version_status", []):
            if int(v.get("version", -1)) == int(version):
                err = (v.get("status") or {}).get("error_message", "")
                return {"state": v.get("state", "UNKNOWN"), "error": err}
        return {"state": "NOT_FOUND", "error": ""}
    from validation.clients import GrpcClient, ServingError
    host, _, port = ep["grpc"].rpartition(":")
    client = GrpcClient(host, int(port), model, timeout=timeout, version=version, auth=auth)
    try:
        st = client.status()
        return {"state": st[0]["state"], "error": st[0]["error"]} if st else {"state": "NOT_FOUND", "error": ""}
    except ServingError as exc:
        return {"state": "NOT_FOUND" if "NOT_FOUND" in str(exc) else "UNREACHABLE", "error": str(exc)[:300]}
    finally:
        client.close()


def wait_served(endpoints: list[dict], model: str, version: int, *, deadline_s: float, poll_s: float = 2.0,
                auth: EndpointAuth = NONE) -> dict:
    """Poll every endpoint until N is AVAILABLE on all (served), one reports it failed (failed), or
    the deadline passes (timed out). Returns {outcome, seconds, endpoints: [{endpoint, state, error, seconds}]}."""
    t0 = time.monotonic()
    last = {_name(e): {"endpoint": _name(e), "state": "UNKNOWN", "error": "", "seconds": None} for e in endpoints}
    while True:
        for ep in endpoints:
            row = last[_name(ep)]
            if row["state"] == "AVAILABLE":
                continue
            row.update(status_once(ep, model, version, auth=auth))
            if row["state"] == "AVAILABLE":
                row["seconds"] = round(time.monotonic() - t0, 2)
        rows = list(last.values())
        if any(r["state"] == "END" and r["error"] for r in rows):
            outcome = FAILED
        elif all(r["state"] == "AVAILABLE" for r in rows):
            outcome = "served"
        elif time.monotonic() - t0 >= deadline_s:
            outcome = TIMED_OUT
        else:
            time.sleep(poll_s)
            continue
        return {"outcome": outcome, "seconds": round(time.monotonic() - t0, 2), "endpoints": rows}


def label_version(ep: dict, model: str, label: str, timeout: float = 5.0, auth: EndpointAuth = NONE) -> dict:
    """{version, error}: the version ``label`` names on one endpoint: the ``model_spec`` of REST
    ``/labels/<label>/metadata`` (GetModelStatus ignores labels: it lists every version)."""
    if not ep.get("rest"):
        return {"version": None, "error": "label checks need a rest endpoint"}
    url = f"{ep['rest'].rstrip('/')}/v1/models/{model}/labels/{label}/metadata"
    try:
        with auth.urlopen(url, timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return {"version": None, "error": f"HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:200]}"
                + _auth_hint(exc.code)}
    except (OSError, ValueError) as exc:
        return {"version": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    v = (body.get("model_spec") or {}).get("version")
    return {"version": int(v) if v is not None else None, "error": ""}


def wait_label(endpoints: list[dict], model: str, label: str, version: int, *, deadline_s: float,
               poll_s: float = 2.0, auth: EndpointAuth = NONE) -> dict:
    t0 = time.monotonic()
    while True:
        rows = [{"endpoint": _name(e), **label_version(e, model, label, auth=auth)} for e in endpoints]
        if all(r["version"] == version for r in rows):
            return {"outcome": "served", "endpoints": rows}
        if time.monotonic() - t0 >= deadline_s:
            return {"outcome": TIMED_OUT, "endpoints": rows}
        time.sleep(poll_s)


def smoke(ep: dict, model, version: int, golden, reference: dict, *, tolerance: float,
          auth: EndpointAuth = NONE) -> dict:
    """Golden images (a spread sample) to /versions/N over REST and gRPC, answers vs the reference."""
    from exporters import batching
    from validation import expectations
    from validation.clients import GrpcClient, RestClient, predict_images
    images = batching.spread(golden.images, SMOKE_IMAGES)
    clients = []
    if ep.get("rest"):
        clients.append(("REST", RestClient.for_url(ep["rest"], model.name, version=version, auth=auth)))
    if ep.get("grpc"):
        host, _, port = ep["grpc"].rpartition(":")
        clients.append(("gRPC", GrpcClient(host, int(port), model.name, version=version, auth=auth)))
    bad, latency = [], {}
    try:
        for proto, cl in clients:
            for sig, typ in model.input_types.items():
                if sig not in reference:
                    continue
                t = time.perf_counter()
                outs, n = predict_images(cl, sig, typ, images, batch_size=model.validation_batch_size)
                latency[f"{proto} {sig}"] = round((time.perf_counter() - t) * 1000 / max(n, 1), 2)
                for g, out in zip(images, outs):
                    p = expectations.parity(out, reference[sig][g.name], atol=tolerance)
                    if not p["passed"]:
                        bad.append(f"{proto} {sig} {g.name}: {p['detail']}")
    except Exception as exc:  # noqa: BLE001 - any serving error is a failed smoke test, with its text
        bad.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        for _, cl in clients:
            if hasattr(cl, "close"):
                cl.close()
    detail = ("; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")) if bad else \
        f"{len(images)} golden images over {', '.join(p for p, _ in clients)}: answers as in validation"
    return {"endpoint": _name(ep), "passed": not bad, "detail": detail, "ms_per_request": latency}


def reference_for(client, serving: S3Uri, m: dict, dest: str) -> dict | None:
    """The validation's reference answers of version N (kept beside its report), or None."""
    from exporters.reference import load_reference
    from registry.transfer import download_prefix
    report = ((m.get("validation") or {}).get("report") or "")
    prefix = f"s3://{serving.bucket}/"
    if not report.startswith(prefix):
        return None
    key = report[len(prefix):].rsplit("/", 1)[0] + "/reference/"
    download_prefix(client, serving.bucket, key, dest)
    if not os.path.exists(os.path.join(dest, "index.json")):
        return None
    return load_reference(dest)


def _is_canary(client, model, version: int) -> bool:
    from registry import labels as labels_mod
    return labels_mod.read(client, model.serving)[0].get("canary") == version


def _previous_good(client, serving: S3Uri, version: int) -> int | None:
    """The newest committed version below N whose own rollout did not fail (none recorded: good)."""
    state = layout.scan(client, serving)
    for v in sorted((n for n in state.manifests if n < version and n not in state.tombstones), reverse=True):
        rec = read_record(client, serving, v)
        if rec is None or rec.get("outcome") == CONFIRMED:
            return v
    return None


def check(client, model, version: int, *, deadline_s: float | None = None, poll_s: float = 2.0,
          auth: EndpointAuth | None = None) -> dict:
    """Served on every endpoint + smoke test: {outcome: confirmed | failed | timed out, ...}.
    ``auth``: the endpoints' credentials and TLS (default: TFS_RELEASE_PRODUCTION_AUTH)."""
    auth = EndpointAuth.from_env() if auth is None else auth
    from exporters import golden as golden_mod
    from registry import manifest as manifest_mod
    prod = model.extra.get("production") or {}
    endpoints = prod.get("endpoints") or []
    if not endpoints:
        raise BadInput(f"{model.name} has no production endpoints to confirm a rollout on: add "
                       "production: {endpoints: [{rest: http://tf-serving:8501, grpc: tf-serving:8500}]} "
                       "to its config")
    deadline = float(deadline_s if deadline_s is not None else prod.get("confirm_deadline_s", 600))
    t0 = time.monotonic()
    served = wait_served(endpoints, model.name, version, deadline_s=deadline, poll_s=poll_s, auth=auth)
    rec = {"model": model.name, "version": version, "endpoints": served["endpoints"],
           "served_after_s": served["seconds"], "smoke": [], "deadline_s": deadline}
    if served["outcome"] != "served":
        bad = [r for r in served["endpoints"] if r["state"] != "AVAILABLE"]
        rec.update(outcome=served["outcome"], reason="; ".join(
            f"{r['endpoint']}: version {version} {r['state']}" + (f" ({r['error']})" if r["error"] else "")
            for r in bad))
        return rec
    if model.extra.get("rollout") == "canary":  # the label must name N on every replica too
        from registry import labels as labels_mod
        state, _ = labels_mod.read(client, model.serving)
        label = "canary" if state.get("canary") == version else "stable" if state.get("stable") == version else None
        if label is None:
            rec.update(outcome=FAILED, reason=f"version {version} is neither stable ({state.get('stable')}) nor the "
                                             f"canary ({state.get('canary')}) of {model.name}")
            return rec
        rec["label"] = label
        left = max(1.0, deadline - (time.monotonic() - t0))
        labelled = wait_label(endpoints, model.name, label, version, deadline_s=left, poll_s=poll_s, auth=auth)
        rec["labels"] = labelled["endpoints"]
        if labelled["outcome"] != "served":
            rec.update(outcome=labelled["outcome"], reason="; ".join(
                f"{r['endpoint']}: label {label} -> {r.get('version')} ({r.get('error') or 'not yet ' + str(version)})"
                for r in labelled["endpoints"] if r.get("version") != version))
            return rec
    key = layout.manifest_key(model.serving, version)
    m = manifest_mod.parse(client.get_object(Bucket=model.serving.bucket, Key=key)["Body"].read(), where=key)
    work = tempfile.mkdtemp(prefix="tfsr-rollout-")
    try:
        reference = reference_for(client, model.serving, m, work)
        if reference is None:
            rec["smoke"] = [{"endpoint": "-", "passed": True,
                             "detail": "skipped: no reference answers kept with this version's report"}]
        else:
            golden = golden_mod.load(model.golden, task=model.task)
            rec["smoke"] = [smoke(ep, model, version, golden, reference, tolerance=model.extra.get("tolerance", 1e-3),
                                  auth=auth) for ep in endpoints]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [s for s in rec["smoke"] if not s["passed"]]
    rec.update(outcome=FAILED if failed else CONFIRMED, seconds=round(time.monotonic() - t0, 2),
               reason="; ".join(f"smoke test on {s['endpoint']}: {s['detail']}" for s in failed) or None)
    return rec


def confirm(client, model, version: int, *, deadline_s: float | None = None, on_failed: str | None = None,
            poll_s: float = 2.0, run_id: str | None = None, wait_s: float | None = None) -> dict:
    """Confirm version N in production; roll back a failed rollout (unless ``on_failed`` is
    'alert'). Writes _rollouts/N.json (and the rollback's). Returns N's record, with
    ``rollback`` (the rollback version's record) when one was done. ``wait_s``: how long to wait
    for N itself (default the deadline; short when a deferred wait already spent it); the rollback
    version gets the full deadline."""
    from registry.publish import rollback
    on_failed = on_failed or model.extra.get("on_failed_rollout", "rollback")
    t_start = time.time()
    rec = check(client, model, version, deadline_s=wait_s if wait_s is not None else deadline_s, poll_s=poll_s)
    if wait_s is not None:  # the deadline itself was spent by an earlier wait (the DAG's wait_for_rollout)
        rec.update(recheck_s=rec["deadline_s"], deadline_s=float(
            deadline_s if deadline_s is not None else (model.extra.get("production") or {}).get("confirm_deadline_s", 600)))
    rec["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start))
    if rec["outcome"] == CONFIRMED:
        rec["record"] = write_record(client, model.serving, version, rec)
        log.info("rollout of %s version %d confirmed on %d endpoint(s) after %.1fs", model.name, version,
                 len(rec["endpoints"]), rec["served_after_s"])
        return rec
    log.error("rollout of %s version %d %s: %s", model.name, version, rec["outcome"], rec["reason"])
    if model.extra.get("rollout") == "canary" and _is_canary(client, model, version):
        from registry import labels as labels_mod
        reason = f"rollout of canary version {version} {rec['outcome']}: {rec['reason']}"
        try:
            state = labels_mod.abort(client, model.serving, reason=reason[:1000], by="tfs-release confirm",
                                     expect=version)
            rec.update(outcome=ROLLED_BACK, action=f"aborted the canary; stable version {state['stable']} serves")
        except BadInput as exc:
            rec["action"] = f"canary not aborted: {exc}"
        rec["record"] = write_record(client, model.serving, version, rec)
        return rec
    if on_failed != "rollback":
        rec["action"] = "alert only (on_failed_rollout: alert)"
        rec["record"] = write_record(client, model.serving, version, rec)
        return rec
    target = _previous_good(client, model.serving, version)
    if target is None:
        rec["action"] = "no earlier version whose rollout did not fail: nothing to roll back to"
        rec["record"] = write_record(client, model.serving, version, rec)
        return rec
    reason = f"rollout of version {version} {rec['outcome']}: {rec['reason']}"
    pub = rollback(client, model.serving, model.name, target, run_id=run_id or f"rollback-of-{version}",
                   reason=reason[:1000])
    rec.update(outcome=ROLLED_BACK, rollback_to=target, rollback_version=pub.version,
               action=f"published a copy of version {target} as version {pub.version}")
    rec["record"] = write_record(client, model.serving, version, rec)  # N is rolled back before N+1 is known
    back = check(client, model, pub.version, deadline_s=deadline_s, poll_s=poll_s)
    back["rollback_of"] = target
    back["record"] = write_record(client, model.serving, pub.version, back)
    rec["rollback"] = back
    rec["record"] = write_record(client, model.serving, version, rec)
    return rec
