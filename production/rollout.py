"""Did production load version N, and does it answer there as it did in validation?

``confirm`` watches every production endpoint (``production.endpoints``: one per TF Serving
replica) until N is AVAILABLE on all of them (for a canary model: until the label that names N does
so on every replica), then smoke-tests production itself (golden images over REST and gRPC to
``/versions/N``, answers vs the exporter's reference answers). The outcome is a lifecycle
transition (production/rules.py), written through production/lifecycle.py:

- confirmed: served everywhere and the answers match;
- failed: an endpoint reported N's load failed, or every endpoint answered and serves another
  version while N never became AVAILABLE by the deadline, or the smoke answers differ. Then (unless
  ``on_failed_rollout: alert``) production goes back: a failed canary is aborted, anything else is
  rolled back to the newest confirmed version (lifecycle.rollback), and the rollback is confirmed
  the same way. The failed record is written before anything is rolled back;
- unknown: production could not be observed (refused, timeouts, 401/403, TLS): not a failure of N.
  Nothing is rolled back (``on_unknown_rollout: rollback`` opts in); the run fails with the reason
  and what to check, and confirming again later decides.

Running confirm again is idempotent: a decided record is returned as it is (a failed one whose
rollback did not finish gets it finished).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

from production import lifecycle, observe, rules
from registry import layout
from registry.errors import BadInput
from registry.s3 import S3Uri
from tfs_api.endpoint_auth import NONE, EndpointAuth

log = logging.getLogger(__name__)
SMOKE_IMAGES = 16  # golden images sent to each production endpoint (spread over the set)


def endpoints_of(model) -> list[dict]:
    prod = model.extra.get("production") or {}
    eps = prod.get("endpoints") or []
    if not eps:
        raise BadInput(f"{model.name} has no production endpoints to confirm a rollout on: add "
                       "production: {endpoints: [{rest: http://tf-serving:8501, grpc: tf-serving:8500}]} "
                       "to its config")
    return eps


def wait_served(endpoints: list[dict], model: str, version: int, *, deadline_s: float, poll_s: float = 2.0,
                auth: EndpointAuth = NONE) -> dict:
    """Poll every endpoint until N is AVAILABLE on all, one reports its load failed, or the deadline
    passes. Returns {outcome: served | failed | unknown, why, seconds, endpoints: [rows]}."""
    t0 = time.monotonic()
    last = {observe.name(e): {"endpoint": observe.name(e), "state": "UNKNOWN", "error": "", "others": [],
                              "seconds": None} for e in endpoints}
    while True:
        for ep in endpoints:
            row = last[observe.name(ep)]
            if row["state"] == "AVAILABLE":
                continue
            row.update(observe.version_status(ep, model, version, auth=auth))
            if row["state"] == "AVAILABLE":
                row["seconds"] = round(time.monotonic() - t0, 2)
        rows = list(last.values())
        outcome, why = rules.classify(rows, waited_out=time.monotonic() - t0 >= deadline_s, version=version)
        if outcome != "waiting":
            return {"outcome": outcome, "why": why, "seconds": round(time.monotonic() - t0, 2), "endpoints": rows}
        time.sleep(poll_s)


def wait_label(endpoints: list[dict], model: str, label: str, version: int, *, deadline_s: float,
               poll_s: float = 2.0, auth: EndpointAuth = NONE) -> dict:
    """Until ``label`` names N on every endpoint: {outcome: served | failed | unknown, why, endpoints}."""
    t0 = time.monotonic()
    while True:
        rows = [{"endpoint": observe.name(e), **observe.label_version(e, model, label, auth=auth)} for e in endpoints]
        if all(r["version"] == version for r in rows):
            return {"outcome": "served", "why": None, "endpoints": rows}
        if time.monotonic() - t0 >= deadline_s:
            blind = [r for r in rows if not r["observed"]]
            outcome = rules.UNKNOWN if blind else rules.FAILED
            why = "; ".join(f"{r['endpoint']}: label {label} -> {r['version']}"
                            + (f" (could not be observed: {r['error']})" if not r["observed"] else
                               f" (not {version} by the deadline)") for r in rows if r["version"] != version)
            return {"outcome": outcome, "why": why, "endpoints": rows}
        time.sleep(poll_s)


def smoke(ep: dict, model, version: int, golden, reference: dict, *, tolerance: float,
          auth: EndpointAuth = NONE) -> dict:
    """Golden images (a spread sample) to /versions/N over REST and gRPC, answers vs the reference.
    {endpoint, passed, observed, detail, ms_per_request}: a transport error is not observed."""
    from tfs_api import batching
    from validation import expectations
    from tfs_api.clients import GrpcClient, RestClient, ServingError, predict_images
    images = batching.spread(golden.images, SMOKE_IMAGES)
    clients = []
    if ep.get("rest"):
        clients.append(("REST", RestClient.for_url(ep["rest"], model.name, version=version, auth=auth)))
    if ep.get("grpc"):
        host, _, port = ep["grpc"].rpartition(":")
        clients.append(("gRPC", GrpcClient(host, int(port), model.name, version=version, auth=auth)))
    bad, latency, seen = [], {}, True
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
    except ServingError as exc:  # the server answered: an error of N's
        text = str(exc)
        seen = not any(k in text for k in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "REST 401", "REST 403",
                                           "UNAUTHENTICATED", "PERMISSION_DENIED"))
        bad.append(f"ServingError: {text[:300]}")
    except OSError as exc:  # refused, reset, timeout, TLS: production was not observed
        seen = False
        bad.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        for _, cl in clients:
            if hasattr(cl, "close"):
                cl.close()
    detail = ("; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")) if bad else \
        f"{len(images)} golden images over {', '.join(p for p, _ in clients)}: answers as in validation"
    return {"endpoint": observe.name(ep), "passed": not bad, "observed": seen, "detail": detail,
            "ms_per_request": latency}


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


def deadline_of(model, deadline_s: float | None) -> float:
    return float(deadline_s if deadline_s is not None else
                 (model.extra.get("production") or {}).get("confirm_deadline_s", 600))


def check(client, model, version: int, *, deadline_s: float | None = None, poll_s: float = 2.0,
          auth: EndpointAuth | None = None) -> dict:
    """Observe N in production: {outcome: confirmed | failed | unknown, reason, endpoints, smoke, ...}.
    Writes nothing. ``auth``: the endpoints' credentials and TLS (default: TFS_RELEASE_PRODUCTION_AUTH)."""
    auth = EndpointAuth.from_env() if auth is None else auth
    from exporters import golden as golden_mod
    from registry import manifest as manifest_mod
    endpoints = endpoints_of(model)
    deadline = deadline_of(model, deadline_s)
    t0 = time.monotonic()
    served = wait_served(endpoints, model.name, version, deadline_s=deadline, poll_s=poll_s, auth=auth)
    rec = {"model": model.name, "version": version, "endpoints": served["endpoints"],
           "served_after_s": served["seconds"], "smoke": [], "deadline_s": deadline}
    if served["outcome"] != "served":
        return {**rec, "outcome": served["outcome"], "reason": served["why"]}
    lab = lifecycle.labels(client, model)
    if lab is not None:  # the label must name N on every replica too
        label = "canary" if lab.get("canary") == version else "stable" if lab.get("stable") == version else None
        if label is None:
            return {**rec, "outcome": rules.FAILED, "reason": f"version {version} is neither stable "
                    f"({lab.get('stable')}) nor the canary ({lab.get('canary')}) of {model.name}"}
        rec["label"] = label
        left = max(1.0, deadline - (time.monotonic() - t0))
        labelled = wait_label(endpoints, model.name, label, version, deadline_s=left, poll_s=poll_s, auth=auth)
        rec["labels"] = labelled["endpoints"]
        if labelled["outcome"] != "served":
            return {**rec, "outcome": labelled["outcome"], "reason": labelled["why"]}
    key = layout.manifest_key(model.serving, version)
    m = manifest_mod.parse(client.get_object(Bucket=model.serving.bucket, Key=key)["Body"].read(), where=key)
    work = tempfile.mkdtemp(prefix="tfsr-rollout-")
    try:
        reference = reference_for(client, model.serving, m, work)
        if reference is None:
            rec["smoke"] = [{"endpoint": "-", "passed": True, "observed": True,
                             "detail": "skipped: no reference answers kept with this version's report"}]
        else:
            golden = golden_mod.load(model.golden, task=model.task)
            rec["smoke"] = [smoke(ep, model, version, golden, reference, tolerance=model.extra.get("tolerance", 1e-3),
                                  auth=auth) for ep in endpoints]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [s for s in rec["smoke"] if not s["passed"]]
    outcome = rules.CONFIRMED if not failed else (rules.FAILED if all(s["observed"] for s in failed) else rules.UNKNOWN)
    return {**rec, "outcome": outcome, "seconds": round(time.monotonic() - t0, 2),
            "reason": "; ".join(f"smoke test on {s['endpoint']}: {s['detail']}" for s in failed) or None}


WHAT_TO_CHECK = ("production could not be observed, so nothing was rolled back and version {n} may well be "
                 "serving. Check the endpoints in production.endpoints, their credentials (production.conn_id / "
                 "TFS_RELEASE_PRODUCTION_AUTH) and the network, then confirm again: `tfs-release confirm {m} "
                 "--version {n}` (or clear the run's confirm_rollout task)")


def confirm(client, model, version: int, *, deadline_s: float | None = None, on_failed: str | None = None,
            poll_s: float = 2.0, run_id: str | None = None, wait_s: float | None = None,
            on_unknown: str | None = None, signer=None) -> dict:
    """Confirm version N in production and record the outcome; after a failure, production goes
    back (see the module doc). Returns N's record, with ``rollback`` (the rollback version's
    record) when one was published. ``wait_s``: how long to wait for N itself (default the
    deadline; short when a deferred wait already spent it); a rollback gets the full deadline.
    ``signer``: signs a rollback copy (registry/signing.py)."""
    on_failed = on_failed or model.extra.get("on_failed_rollout", "rollback")
    on_unknown = on_unknown or model.extra.get("on_unknown_rollout", "alert")
    serving, by = model.serving, f"tfs-release confirm{f' ({run_id})' if run_id else ''}"
    existing, _ = lifecycle.read_record(client, serving, version)
    state = rules.state_of(existing)
    if state in (rules.CONFIRMED, rules.PROMOTED, rules.ROLLED_BACK, rules.ABORTED):
        log.info("%s version %d is already %s (%s): nothing to do", model.name, version, state,
                 (existing or {}).get("record") or layout.rollout_key(serving, version))
        return {**existing, "already": True,
                "record": f"s3://{serving.bucket}/{layout.rollout_key(serving, version)}"}
    if state == rules.FAILED:  # decided earlier; its rollback did not finish: finish it
        rec = {**existing}
    else:
        t_start = time.time()
        rec = check(client, model, version, deadline_s=wait_s if wait_s is not None else deadline_s, poll_s=poll_s)
        if wait_s is not None:  # the deadline itself was spent by an earlier wait (the DAG's wait_for_rollout)
            rec.update(recheck_s=rec["deadline_s"], deadline_s=deadline_of(model, deadline_s))
        rec["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start))
        outcome = rec.pop("outcome")
        try:
            rec = lifecycle.transition(client, serving, version, outcome, rec, by=by, reason=rec.get("reason"),
                                       model=model.name)
        except lifecycle.LifecycleConflict as exc:  # a person aborted or rolled it back meanwhile
            now, _ = lifecycle.read_record(client, serving, version)
            log.warning("%s", exc)
            return {**(now or {}), "conflict": str(exc),
                    "record": f"s3://{serving.bucket}/{layout.rollout_key(serving, version)}"}
        if outcome == rules.CONFIRMED:
            log.info("rollout of %s version %d confirmed on %d endpoint(s) after %.1fs", model.name, version,
                     len(rec["endpoints"]), rec["served_after_s"] or 0)
            return rec
        log.error("rollout of %s version %d %s: %s", model.name, version, outcome, rec.get("reason"))
        if outcome == rules.UNKNOWN and on_unknown != "rollback":
            rec["action"] = WHAT_TO_CHECK.format(n=version, m=model.name)
            lifecycle.annotate(client, serving, version, {"action": rec["action"]})
            return rec
    return _go_back(client, model, version, rec, on_failed=on_failed, deadline_s=deadline_s, poll_s=poll_s,
                    by=by, run_id=run_id, signer=signer)


def _go_back(client, model, version: int, rec: dict, *, on_failed: str, deadline_s, poll_s, by, run_id,
             signer=None) -> dict:
    """After N's rollout failed (or was unknown with on_unknown_rollout: rollback)."""
    serving = model.serving
    reason = f"rollout of version {version} {rules.state_of(rec)}: {rec.get('reason')}"[:1000]
    lab = lifecycle.labels(client, model)
    if lab is not None and lab.get("canary") == version:
        try:
            lab = lifecycle.abort(client, model, reason=reason, by=by, expect=version)
            action = f"aborted the canary; stable version {lab['stable']} serves"
        except Exception as exc:  # noqa: BLE001 - a promote/abort/newer canary got there first: say so
            action = f"canary not aborted: {exc}"
        return _finish(client, serving, version, rec, action)
    if on_failed != "rollback":
        return _finish(client, serving, version, rec, "alert only (on_failed_rollout: alert)")
    try:
        back = lifecycle.rollback(client, model, reason=reason, by=by, after_failure_of=version,
                                  run_id=f"rollback-of-{version}", signer=signer)
    except (lifecycle.LifecycleConflict, BadInput) as exc:
        return _finish(client, serving, version, rec, f"not rolled back: {exc}")
    now, _ = lifecycle.read_record(client, serving, version)
    rec = {**rec, **(now or {})}
    if back.get("copy") is None:  # a canary model's stable moved
        return _finish(client, serving, version, rec, f"stable moved back to version {back['served']}",
                       rollback_to=back["rollback_of"])
    rec = _finish(client, serving, version, rec, f"published a copy of version {back['rollback_of']} as version "
                                                 f"{back['copy']}", rollback_to=back["rollback_of"],
                  rollback_version=back["copy"])
    again = confirm(client, model, back["copy"], deadline_s=deadline_s, poll_s=poll_s, on_failed="alert",
                    on_unknown="alert", run_id=run_id)
    again["rollback_of"] = back["rollback_of"]
    rec["rollback"] = again
    return rec


def _finish(client, serving, version: int, rec: dict, action: str, **facts) -> dict:
    lifecycle.annotate(client, serving, version, {"action": action, **facts})
    now, _ = lifecycle.read_record(client, serving, version)
    out = {**rec, **(now or {}), "action": action, **facts,
           "record": f"s3://{serving.bucket}/{layout.rollout_key(serving, version)}"}
    log.info("%s version %d: %s", serving, version, action)
    return out
