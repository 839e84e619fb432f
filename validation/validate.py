"""`tfs-release validate`: a staged candidate -> verdict + report, the way production will see it.

1. static: the SavedModel's signatures against the task's contract (no server needed);
2. served: a temporary TF Serving (docker launcher by default, or a process) on the candidate,
   AVAILABLE within a deadline, metadata (REST and gRPC) against the contract, every golden image
   over REST and gRPC for every signature, in batched requests (``validation_batch_size``);
3. golden: parity with the exporter's in-process answers, per-image expectations, a
   great-expectations suite over all outputs;
4. latency p50/p95 per protocol on ``latency_samples`` single-image requests (optional budget);
5. the server is removed on every path; the report goes to s3://<serving>/<model>/_reports/<run>/.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time

import numpy as np

from exporters import golden as golden_mod
from exporters.reference import load_reference
from tfs_api.inputs import model_input
from registry.config import ModelConfig
from registry.layout import REPORTS, SAVED_MODEL
from registry.s3 import S3Uri
from registry.staging import candidate_digest, read_candidate
from registry.transfer import RemoteFile, download_files, download_prefix, upload_dir
from registry.s3 import local_path_for
from serving import image as serving_image
from serving import launchers
from tfs_api import signatures
from validation import contracts, expectations

log = logging.getLogger(__name__)
DEFAULT_IMAGE = serving_image.default_image(serving_image.FALLBACK_TF)  # per candidate: serving_image.default_image


def _clip(text: str, head: int = 400, tail: int = 1400) -> str:
    """Long server errors: keep the start (what happened) and the end (the last log lines)."""
    return text if len(text) <= head + tail else f"{text[:head]} [...] {text[-tail:]}"


def _check(name: str, passed: bool, detail: str, **numbers) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail, "numbers": numbers}


def _percentiles(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "n": len(ms)}


class Terminated(BaseException):
    """SIGTERM arrived: unwind (removing the server), then exit."""


def _on_sigterm():
    """SIGTERM (Airflow killing the task) unwinds like an exception, so `finally` removes the server."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt cleanup
        raise Terminated("terminated by SIGTERM")
    return signal.signal(signal.SIGTERM, handler)


def download_candidate(client, cand: S3Uri, body: dict, dest_models: str, model: str, dest_ref: str,
                       version: int = 1) -> str:
    sm_dir = os.path.join(dest_models, model, str(version))
    files = [RemoteFile(key=cand.prefix + SAVED_MODEL + f["path"], dest=local_path_for(sm_dir, f["path"]),
                        size=f["size"], sha256=f["sha256"]) for f in body["files"]]
    download_files(client, cand.bucket, files)
    download_prefix(client, cand.bucket, cand.prefix + "reference/", dest_ref)
    return sm_dir


def load_versions(server, model: str, base_v: int, cand_v: int, *, deadline_s: float) -> dict:
    """Baseline, then candidate, into the running server (started with no model): the server's
    memory before, with the baseline, with both; each version's load time (from the config change
    to AVAILABLE: it includes up to one config poll, 1 s). Raises TimeoutError / ServingError."""
    from tfs_api.clients import RestClient, ServingError, wait_available, wait_listening
    from serving.launchers import model_config
    rest = RestClient(server.host, server.rest_port, model)
    t0 = time.monotonic()
    wait_listening(rest, deadline_s=deadline_s, alive=server.alive)
    readings = {"up_s": round(time.monotonic() - t0, 2), "server": server.memory_mb()}
    for key, versions, v in (("baseline", [base_v], base_v), ("candidate", [base_v, cand_v], cand_v)):
        server.update_config(model_config(model, versions))
        t = time.monotonic()
        try:
            wait_available(rest.at(v), deadline_s=deadline_s, alive=server.alive)
        except (TimeoutError, ServingError) as exc:
            raise type(exc)(f"{key} version {v}: {exc}") from None
        readings[f"load_{key}_s"] = round(time.monotonic() - t, 2)
        readings[f"with_{key}"] = server.memory_mb()
    log.info("versions loaded in the temporary server: baseline %d in %.1fs, candidate %d in %.1fs; memory MB: "
             "server %s, with baseline %s, with both %s", base_v, readings["load_baseline_s"], cand_v,
             readings["load_candidate_s"], readings["server"], readings["with_baseline"], readings["with_candidate"])
    return readings


def serve_and_check(server, model: ModelConfig, contract, golden, reference, *, deadline_s: float,
                    tolerance: float, latency_budget_ms: float | None, version: int | None = None,
                    baseline: int | None = None):
    """Everything that needs the running server. Returns (checks, answers, rest_answers, numbers).

    Golden images go in batched requests (``validation_batch_size``, capped at a fixed input batch
    dimension), answers are split back per image; latency is timed on a separate sample of
    ``latency_samples`` single-image requests per protocol and signature.

    With ``baseline`` (a version loaded in the same server beside the candidate ``version``), the
    baseline answers the same golden requests for every signature it has (its answers and served
    signatures go to numbers["baseline"]), and latency is timed on both, interleaved (the order
    alternates per image), in numbers["baseline"]["latency_raw"] / ["candidate_latency_raw"]."""
    from tfs_api import batching
    from tfs_api.clients import GrpcClient, RestClient, predict_images, wait_available
    checks, answers, first = [], [], {}
    first_sig = next(iter(model.input_types))
    rest = RestClient(server.host, server.rest_port, model.name, version=version)
    t0 = time.monotonic()
    status = wait_available(rest, deadline_s=deadline_s, alive=server.alive)
    up = time.monotonic() - t0
    checks.append(_check("served: version AVAILABLE", True, f"version {status['version']} AVAILABLE after {up:.1f}s",
                         seconds=round(up, 2)))
    grpc = GrpcClient(server.host, server.grpc_port, model.name, version=version)
    clients = (("REST", rest), ("gRPC", grpc))
    latency, requests, base = {}, {}, None
    try:
        served = {}
        for proto, cl in clients:
            served[proto] = cl.metadata()
            problems = contract.check(served[proto], where=f"served metadata ({proto})")
            checks.append(_check(f"contract: served metadata over {proto}", not problems,
                                 "; ".join(problems) or "matches the contract"))
        for sig, typ in model.input_types.items():
            shape = (((served["REST"].get(sig) or {}).get("inputs") or {}).get(contracts.INPUT_KEY) or {}).get("shape")
            size = min(model.validation_batch_size, batching.fixed_batch(shape) or model.validation_batch_size)
            for proto, cl in clients:
                worst, bad = 0.0, []
                t = time.perf_counter()
                outs, n_req = predict_images(cl, sig, typ, golden.images, batch_size=size)
                seconds = time.perf_counter() - t
                requests[f"{proto} {sig}"] = {"requests": n_req, "images": len(golden.images), "batch_size": size,
                                              "seconds": round(seconds, 3)}
                for g, out in zip(golden.images, outs):
                    answers.append((g.name, f"{proto}:{sig}", out))
                    if proto == "REST" and sig == first_sig:
                        first[g.name] = out
                    p = expectations.parity(out, reference[sig][g.name], atol=tolerance)
                    worst = max(worst, p["numbers"]["max_abs_diff"])
                    if not p["passed"]:
                        bad.append(f"{g.name}: {p['detail']}")
                checks.append(_check(f"parity: {proto} {sig} vs exporter", not bad,
                                     "; ".join(bad[:4]) + (f" (+{len(bad) - 4} more)" if len(bad) > 4 else "")
                                     if bad else f"all {len(golden.images)} answers within {tolerance} "
                                                 f"(max diff {worst:.3g}; {n_req} request(s) of <= {size} images)",
                                     max_abs_diff=worst, images=len(golden.images), failed=len(bad),
                                     requests=n_req, batch_size=size))
        if baseline is not None:
            base = baseline_answers(rest.at(baseline), model, golden, served["REST"])
        sample = batching.spread(golden.images, model.latency_samples)
        raw_c, raw_b = {}, {}
        for sig, typ in model.input_types.items():
            for proto, cl in clients:
                key, ms, ms_b = f"{proto} {sig}", [], []
                other = cl.at(baseline) if base is not None and sig in base["signatures"] else None
                if other is not None and sample:  # one untimed request each: first-call costs are not latency
                    for c in (cl, other):
                        c.predict(sig, typ, model_input(typ, sample[0]))
                for i, g in enumerate(sample):
                    x = model_input(typ, g)
                    # interleaved with the baseline, the order alternating: both see the same load
                    for who in ((("c", cl), ("b", other)) if i % 2 == 0 else (("b", other), ("c", cl))):
                        if who[1] is None:
                            continue
                        t = time.perf_counter()
                        who[1].predict(sig, typ, x)
                        (ms if who[0] == "c" else ms_b).append((time.perf_counter() - t) * 1000)
                latency[key] = _percentiles(ms)
                raw_c[key] = ms
                if other is not None:
                    raw_b[key] = ms_b
        if base is not None:
            base["latency_raw"], base["candidate_latency_raw"] = raw_b, raw_c
        if latency_budget_ms:
            over = {k: v["p95"] for k, v in latency.items() if v.get("p95", 0) > latency_budget_ms}
            checks.append(_check("latency: p95 within budget", not over,
                                 f"p95 over {latency_budget_ms} ms: {over}" if over else
                                 f"every p95 <= {latency_budget_ms} ms", budget_ms=latency_budget_ms))
    finally:
        grpc.close()
    log.info("golden requests: %s; latency (single images): %s",
             ", ".join(f"{k} {v['images']} images in {v['requests']} request(s) {v['seconds']:.2f}s"
                       for k, v in requests.items()),
             ", ".join(f"{k} p50 {v['p50']:.1f} ms p95 {v['p95']:.1f} ms" for k, v in latency.items() if v.get("n")))
    numbers = {"seconds_to_available": up, "latency_ms": latency, "golden_requests": requests}
    if base is not None:
        numbers["baseline"] = base
    return checks, answers, first, numbers


def baseline_answers(rest, model: ModelConfig, golden, candidate_signatures: dict) -> dict:
    """The baseline version's served signatures and its REST answers to every golden image for
    every signature both versions have (first signature's answers under 'first')."""
    from tfs_api import batching
    from tfs_api.clients import predict_images
    signatures = rest.metadata()
    out = {"signatures": signatures, "answers": {}, "first": None}
    for sig, typ in model.input_types.items():
        if sig not in signatures or sig not in candidate_signatures:
            continue
        shape = ((signatures[sig].get("inputs") or {}).get(contracts.INPUT_KEY) or {}).get("shape")
        size = min(model.validation_batch_size, batching.fixed_batch(shape) or model.validation_batch_size)
        outs, _ = predict_images(rest, sig, typ, golden.images, batch_size=size)
        out["answers"][sig] = {g.name: o for g, o in zip(golden.images, outs)}
    first = next(iter(model.input_types))
    out["first"] = out["answers"].get(first)
    return out


def in_pixels(outputs: dict, image_shape, normalized: bool) -> dict:
    """Detection boxes in pixels (the golden set's unit), whatever the export's option."""
    if not normalized or "detection_boxes" not in outputs:
        return outputs
    h, w = image_shape[:2]
    return {**outputs, "detection_boxes": np.asarray(outputs["detection_boxes"], dtype=np.float64) * [h, w, h, w]}


def golden_checks(model: ModelConfig, golden, first: dict) -> tuple[list[dict], list[dict], dict]:
    """Per-image expectations on the first signature's REST answers, the set metrics (with the
    model's floors as checks), and the report's per-image entries: pictures are drawn later, by the
    report, only for the images it shows in full or as thumbnails. Returns (checks, images, metrics)."""
    from functools import partial

    from validation import metrics as metrics_mod
    from validation import report
    checks, images = [], []
    normalized = bool(model.extra.get("output_normalized_coordinates"))
    truth, preds, cms, scores, labels, ks = [], [], [], [], [], set()
    for g in golden.images:
        out = in_pixels(first.get(g.name), g.image.shape, normalized)
        if model.task == "detection":
            r = expectations.detection(out, g.expect, golden.classes)
            boxes, sc, cl = expectations.detections(out)
            truth.append({"boxes": g.expect["boxes"], "classes": g.expect["classes"]})
            preds.append({"boxes": boxes, "scores": sc, "classes": cl})
            n = r["numbers"]
            rank = (min(1.0 if n["precision"] is None else n["precision"], 1.0 if n["recall"] is None else n["recall"]),
                    1.0 if n["mean_iou"] is None else n["mean_iou"])
            caption = (f"P {'-' if n['precision'] is None else format(n['precision'], '.2f')} "
                       f"R {'-' if n['recall'] is None else format(n['recall'], '.2f')}"
                       + (f" FP {n['false_positives']}" if n["false_positives"] else ""))
            args = (g.image, g.expect, (boxes, sc, cl), r["match"], golden.classes)
            full, thumb = partial(report.detection_pictures, *args), partial(report.detection_thumb, *args)
        elif model.task == "segmentation":
            r = expectations.segmentation(out, g.expect, g.mask)
            cms.append(r["confusion"])
            r["numbers"]["iou_per_class"] = {golden.classes.get(int(c), "background" if c == "0" else c): v
                                             for c, v in r["numbers"]["iou_per_class"].items()}
            rank, caption = (r["numbers"]["miou"],), f"mIoU {r['numbers']['miou']:.2f}"
            full = partial(report.segmentation_pictures, g.image, g.mask, r["pred"])
            thumb = partial(report.mask_thumb, g.image, r["pred"])
        else:
            r = expectations.classification(out, g.expect, golden.classes)
            scores.append(r["scores"])
            labels.append(g.expect["label"])
            ks.add(g.expect["top_k"])
            top = r["numbers"]["top_k"][0]
            rank = (r["numbers"]["p_label"],)
            caption = f"{golden.classes.get(top, top)} (p {float(r['scores'][top]):.2f})"
            full = partial(report.classification_pictures, g.image, g.expect["label"], r["scores"], golden.classes)
            thumb = partial(report.image_thumb, g.image)
        checks.append(_check(f"golden: {g.name}", r["passed"], r["detail"], **r["numbers"]))
        images.append({"image": g.name, "passed": r["passed"], "detail": r["detail"], "numbers": r["numbers"],
                       "rank": rank, "caption": caption, "full": full, "thumb": thumb})
    failed = sum(not i["passed"] for i in images)
    m = {"task": model.task, "images": len(images), "images_failed": failed}
    if model.task == "detection":
        m.update(metrics_mod.coco_detection(truth, preds, golden.classes))
        found = sum(i["numbers"]["found"] for i in images)
        fp = sum(i["numbers"]["false_positives"] for i in images)
        expected = sum(i["numbers"]["expected"] for i in images)
        m.update({"found": found, "false_positives": fp,  # at each image's min_score, one-to-one matched
                  "precision": round(found / (found + fp), 4) if found + fp else None,
                  "recall": round(found / expected, 4) if expected else None})
    elif model.task == "segmentation":
        m.update(metrics_mod.segmentation_set(cms, golden.classes))
    elif images:
        m.update(metrics_mod.classification_set(np.stack(scores), labels, ks))
    m = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
    floors = {k: model.extra[k] for k in metrics_mod.FLOORS if model.extra.get(k) is not None}
    if floors:
        m["floors"] = floors
        checks += [_check(c["name"], c["passed"], c["detail"], **c["numbers"])
                   for c in metrics_mod.floor_checks(m, floors)]
    log.info("golden set metrics of %s: %s", model.name,
             ", ".join(f"{k} {v}" for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)))
    return checks, images, m


def regression_gate(model: ModelConfig, golden, base: dict, baseline_numbers: dict, loads: dict | None,
                    pictures: list[dict], cand_metrics: dict, cand_signatures: dict, cand_labels: dict | None,
                    lim: dict, accept_regression: str | None) -> tuple[list[dict], dict]:
    """The gate's checks and verdict['regression'] from the baseline's answers beside the candidate's.
    Adds 'baseline' and 'change' to each picture entry (the report draws both side by side)."""
    from validation import compat, regression
    v = base["version"]
    labels_b = (base["manifest"] or {}).get("labels")
    sig = compat.compatibility(baseline_numbers["signatures"], cand_signatures,
                               {str(k): n for k, n in labels_b.items()} if labels_b else None,
                               {str(k): n for k, n in cand_labels.items()} if cand_labels else None)
    checks = [_check(f"compatibility: signatures vs baseline v{v}", sig["compatible"] or bool(accept_regression),
                     sig["detail"] + (" (accepted: " + accept_regression + ")" if not sig["compatible"]
                                      and accept_regression else ""))]
    rows, flips, worst, changes = [], {"images": 0, "regressed": 0, "fixed": 0, "changed": 0, "rate": 0.0}, [], {}
    if baseline_numbers.get("first") is not None:
        _, base_images, base_metrics = golden_checks(model, golden, baseline_numbers["first"])
        changes, flips, worst = regression.compare_images(model.task, base_images, pictures, golden.classes)
        rows = regression.compare_metrics(model.task, base_metrics, cand_metrics)
        by_name = {b["image"]: b for b in base_images}
        for p in pictures:
            b = by_name.get(p["image"])
            if b is not None:
                p["baseline"] = {k: b[k] for k in ("passed", "detail", "numbers", "caption", "full", "thumb")}
                p["change"] = changes[p["image"]]
    lat = regression.latency(baseline_numbers.get("latency_raw") or {}, baseline_numbers.get("candidate_latency_raw") or {})
    loads = loads or {}
    mem = regression.memory(loads.get("server"), loads.get("with_baseline"), loads.get("with_candidate"),
                            lim.get("serving_memory_limit_mb"))
    decision = regression.decide(task=model.task, metrics=rows, flips=flips, latency_ms=lat, memory_mb=mem,
                                 signatures=sig, lim=lim, accepted_reason=accept_regression)
    out = {**decision, "baseline": {"version": v, "source": base["source"], "checkpoint": base.get("checkpoint")},
           "accepted_reason": accept_regression if decision["status"] == "accepted" else None,
           "limits": lim, "metrics": rows, "flips": flips, "latency_ms": lat, "memory_mb": mem,
           "load_seconds": {"baseline": loads.get("load_baseline_s"), "candidate": loads.get("load_candidate_s")},
           "signatures": sig, "worst": worst}
    checks.append(_check(f"regression: vs baseline v{v} ({base['source']})", decision["status"] != "blocked",
                         decision["summary"], regressed_images=flips["regressed"], fixed_images=flips["fixed"]))
    log.info("regression gate vs baseline v%d (%s): %s", v, base["source"], decision["summary"])
    return checks, out


def validate_candidate(client, model: ModelConfig, candidate_uri: str, *, launcher: str = "docker",
                       image: str | None = None, deadline_s: float = 180, tolerance: float = 1e-3,
                       latency_budget_ms: float | None = None, report_dir: str | None = None,
                       accept_regression: str | None = None, baseline: dict | None) -> dict:
    """The verdict of one staged candidate. With a ``baseline`` ({version, source}: the version
    production serves, chosen by production/baseline.py; None for a first release), both are loaded in the one temporary server and the regression gate
    (validation/regression.py) compares them; ``accept_regression`` (a reason) lets a candidate the
    gate would block pass, on record."""
    model.require("task", "golden")
    from validation import baseline as baseline_mod
    from validation import regression
    t_start = time.monotonic()
    cand, body = read_candidate(client, candidate_uri)
    run = body.get("run_id") or cand.prefix.rstrip("/").rsplit("/", 1)[-1]
    golden = golden_mod.load(model.golden, task=model.task)
    input_types = model.input_types  # the contract is the config's: a candidate cannot declare its own
    model = ModelConfig(**{**model.__dict__, "input_types": input_types})
    contract = contracts.Contract.for_model(model.task, input_types,
                                            class_dtype=model.extra.get("class_dtype", "int32"))
    # --image, then config 'serving_image', then the worker image's TFS_RELEASE_SERVING_IMAGE, then the
    # TF Serving release of the TensorFlow that exported the candidate; a mismatch is a check
    tf_version = serving_image.exporter_tf(body)
    image = (image or model.extra.get("serving_image") or os.environ.get("TFS_RELEASE_SERVING_IMAGE")
             or serving_image.default_image(tf_version))
    chosen = launchers.make(launcher, image=image, run_id=run)
    work = tempfile.mkdtemp(prefix=f"tfsr-validate-{model.name}-")
    out_dir = report_dir or os.path.join(work, "report")
    checks, pictures, numbers, server_desc, set_metrics = [], [], {}, "", {}
    if launcher == "docker":
        checks.append(serving_image.version_check(image, tf_version))
    lim = regression.limits(model.extra.get("regression"))
    accept_regression = (accept_regression or "").strip() or None
    base = baseline_mod.load(client, model.serving, model.name, baseline)
    gate = regression.no_baseline(lim)
    cand_v = base["version"] + 1 if base else 1  # its number in the temporary server only
    previous = _on_sigterm()
    server = None
    try:
        models_dir = os.path.join(work, "models")
        sm_dir = download_candidate(client, cand, body, models_dir, model.name,
                                    os.path.join(work, "reference"), version=cand_v)
        if base:
            baseline_mod.download(client, model.serving, base, os.path.join(models_dir, model.name,
                                                                             str(base["version"])))
        reference = load_reference(os.path.join(work, "reference"))
        problems = contract.check(signatures.signatures_from_saved_model(sm_dir), where="SavedModel")
        checks.append(_check("contract: SavedModel signatures", not problems, "; ".join(problems) or "matches the contract"))
        if not problems:
            from validation import gx_suite
            gx_suite.prefetch()  # its import overlaps the server's start
            try:
                loads = None
                server = chosen.start(models_dir, model.name,
                                      config=launchers.model_config(model.name, [] if base else [cand_v]))
                server_desc = server.describe
                if base:
                    loads = load_versions(server, model.name, base["version"], cand_v, deadline_s=deadline_s)
                served, answers, first, numbers = serve_and_check(
                    server, model, contract, golden, reference, deadline_s=deadline_s, tolerance=tolerance,
                    latency_budget_ms=latency_budget_ms, version=cand_v, baseline=base["version"] if base else None)
                checks += served
                gchecks, pictures, set_metrics = golden_checks(model, golden, first)
                checks += gchecks
                if base:
                    from tfs_api.clients import RestClient
                    cand_sigs = RestClient(server.host, server.rest_port, model.name, version=cand_v).metadata()
                    gchecks, gate = regression_gate(model, golden, base, numbers.pop("baseline"), loads, pictures,
                                                    set_metrics, cand_sigs, body.get("labels"), lim,
                                                    accept_regression)
                    checks += gchecks
                normalized = bool(model.extra.get("output_normalized_coordinates"))
                shapes = {g.name: g.image.shape for g in golden.images}
                answers = [(n, s, in_pixels(o, shapes[n], normalized)) for n, s, o in answers]
                checks += gx_suite.run(model.task, answers, labels=set(golden.classes),
                                       image_sizes={g.name: g.image.shape[:2] for g in golden.images},
                                       docs_dir=os.path.join(out_dir, "gx"))
            except TimeoutError as exc:
                checks.append(_check("served: version AVAILABLE", False,
                                     _clip(f"{exc}; server logs: {server.logs(30) if server else ''}")))
            except launchers.ServerDied as exc:
                checks.append(_check("served: model loads and answers", False, _clip(str(exc))))
            except Exception as exc:  # noqa: BLE001 - serving errors become a failed check with logs
                from tfs_api.clients import ServingError
                if not isinstance(exc, ServingError):
                    raise
                checks.append(_check("served: model loads and answers", False,
                                     _clip(f"{exc}; server logs: {server.logs(30) if server else ''}")))
    finally:
        if server is not None:
            server.stop()
        chosen.cleanup()  # also what a start interrupted before it returned left behind
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    failed = [c for c in checks if not c["passed"]]
    report_uri = f"s3://{model.serving.bucket}/{model.serving.prefix}{REPORTS}{run}/"
    verdict = {
        "model": model.name, "run_id": run, "candidate": candidate_uri, "passed": not failed,
        "candidate_digest": candidate_digest(body["files"]),  # publish checks it: bound to these files
        "reason": (f"{len(failed)} check(s) failed: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed[:3]))[:2000]
        if failed else None,
        "checkpoint": (body.get("source_checkpoint") or {}).get("uri"), "launcher": launcher,
        "server": server_desc, "checks": checks, "report": report_uri + "index.html",
        "seconds": round(time.monotonic() - t_start, 2), **numbers,
        "metrics": set_metrics,  # golden-set metrics (empty when the candidate never answered)
        "regression": gate,  # the regression gate against the baseline (validation/regression.py)
    }
    try:
        from validation import report
        if os.path.exists(os.path.join(work, "reference", "index.json")):  # for production's smoke test
            shutil.copytree(os.path.join(work, "reference"), os.path.join(out_dir, "reference"), dirs_exist_ok=True)
        report.write(out_dir, verdict, pictures, gx_docs=os.path.join(out_dir, "gx") if pictures else None,
                     legend=report.legend(model.task, golden.classes))
        upload_dir(client, out_dir, model.serving.bucket, f"{model.serving.prefix}{REPORTS}{run}/")
        verdict["report_url"] = client.generate_presigned_url(
            "get_object", Params={"Bucket": model.serving.bucket,
                                  "Key": f"{model.serving.prefix}{REPORTS}{run}/index.html"}, ExpiresIn=7 * 86400)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("validation of %s %s: %s (%d checks, %d failed) in %.1fs; report %s", model.name, run,
             "PASSED" if verdict["passed"] else "FAILED", len(checks), len(failed), verdict["seconds"], verdict["report"])
    return verdict
