"""The regression gate: is the candidate at least as good as the version production serves?

Both versions answer the same golden requests in one temporary TF Serving (validation/validate.py);
this module compares what they answered and decides. Pure functions: no server, no storage.

- per image: did the candidate get wrong what the baseline got right (a *regression*, what the
  ``max_flip_rate`` limit counts), or right what it got wrong (*fixed*); classification label
  changes and p(label), detection objects found / false positives / IoU, segmentation mIoU;
- per set: the golden-set metrics of both with their deltas; accuracy, AP@0.5, mAP and set mIoU are
  gated by ``max_metric_drop`` (an absolute drop), the others are shown;
- latency: p50/p95 of both from interleaved single-image requests, candidate / baseline (a p50 ratio
  over ``max_latency_ratio`` blocks when the candidate is also over ``LATENCY_SLACK_MS`` slower);
- memory: the server's memory alone, with the baseline, with both; the candidate's own footprint
  over the baseline's (``max_memory_ratio``) and both together against ``serving_memory_limit_mb``
  (TF Serving loads a new version before it unloads the old one: production needs room for both);
- signatures: validation/compat.py (any breaking change blocks).

A blocked candidate is published only with an explicit ``accept_regression`` reason, which the
verdict, the manifest and the alert carry.
"""
from __future__ import annotations

DEFAULTS = {"max_metric_drop": 0.02, "max_flip_rate": 0.0, "max_latency_ratio": 1.5,
            "max_memory_ratio": 2.0, "serving_memory_limit_mb": None}
# metrics whose drop blocks (higher is better for all); others are shown only
GATED = {"classification": ("accuracy",), "detection": ("ap50", "map"), "segmentation": ("miou_set",)}
SHOWN = {"classification": ("accuracy",), "detection": ("ap50", "map", "ap75", "precision", "recall"),
         "segmentation": ("miou_set", "miou_per_image_mean", "pixel_accuracy")}
WORST_SHOWN = 10
# a latency ratio blocks only when the candidate is also this much slower in absolute terms: the
# p50 of a millisecond-fast model moves by more than 1.5x with scheduling noise alone
LATENCY_SLACK_MS = 1.0


def limits(config: dict | None) -> dict:
    """The model's ``regression:`` config over the defaults (registry/config.py validated it)."""
    out = dict(DEFAULTS)
    out.update({k: v for k, v in (config or {}).items() if k in DEFAULTS})
    return out


def _name(classes: dict, c) -> str:
    return str(classes.get(int(c), c)) if classes else str(c)


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def image_change(task: str, base: dict, cand: dict, classes: dict | None = None) -> dict:
    """One golden image: {regressed, fixed, changed, summary, severity} from the two answers' golden
    entries (validation/validate.golden_checks images: passed, numbers)."""
    b, c = base["numbers"], cand["numbers"]
    regressed, fixed = base["passed"] and not cand["passed"], cand["passed"] and not base["passed"]
    parts, severity, changed = [], 0.0, regressed or fixed
    if task == "classification":
        bt, ct = b["top_k"][0], c["top_k"][0]
        if bt != ct:
            parts.append(f"label {_name(classes, bt)} -> {_name(classes, ct)}")
            changed = True
        dp = c["p_label"] - b["p_label"]
        parts.append(f"p(label) {b['p_label']:.2f} -> {c['p_label']:.2f} ({dp:+.2f})")
        severity = -dp
    elif task == "detection":
        parts.append(f"found {b['found']} -> {c['found']} of {c['expected']}")
        if b["false_positives"] or c["false_positives"]:
            parts.append(f"false positives {b['false_positives']} -> {c['false_positives']}")
        if b.get("mean_iou") is not None or c.get("mean_iou") is not None:
            parts.append(f"mean IoU {_f(b.get('mean_iou'))} -> {_f(c.get('mean_iou'))}")
        changed = changed or b["found"] != c["found"] or b["false_positives"] != c["false_positives"]
        severity = ((b["found"] - c["found"]) + 0.5 * (c["false_positives"] - b["false_positives"])
                    + ((b.get("mean_iou") or 0.0) - (c.get("mean_iou") or 0.0)))
    else:
        dm = c["miou"] - b["miou"]
        parts.append(f"mIoU {b['miou']:.2f} -> {c['miou']:.2f} ({dm:+.2f})")
        severity = -dm
    if regressed:
        parts.insert(0, "REGRESSED (baseline passed, candidate fails)")
    elif fixed:
        parts.insert(0, "fixed (baseline failed, candidate passes)")
    return {"regressed": regressed, "fixed": fixed, "changed": changed, "summary": "; ".join(parts),
            "severity": round(float(severity), 4)}


def compare_images(task: str, base_images: list[dict], cand_images: list[dict],
                   classes: dict | None = None) -> tuple[dict[str, dict], dict, list[dict]]:
    """({image: change}, flips, worst regressed [{image, summary}]) for two golden_checks image lists."""
    by_name = {i["image"]: i for i in base_images}
    changes = {c["image"]: image_change(task, by_name[c["image"]], c, classes)
               for c in cand_images if c["image"] in by_name}
    n = len(changes)
    regressed = [k for k, v in changes.items() if v["regressed"]]
    flips = {"images": n, "regressed": len(regressed), "fixed": sum(v["fixed"] for v in changes.values()),
             "changed": sum(v["changed"] for v in changes.values()),
             "rate": round(len(regressed) / n, 4) if n else 0.0}
    worst = sorted(regressed, key=lambda k: (-changes[k]["severity"], k))[:WORST_SHOWN]
    return changes, flips, [{"image": k, "summary": changes[k]["summary"]} for k in worst]


def compare_metrics(task: str, base: dict, cand: dict) -> list[dict]:
    rows = []
    keys = list(SHOWN.get(task, ())) + sorted(k for k in cand if k.startswith("top") and k.endswith("_accuracy"))
    for k in keys:
        b, c = base.get(k), cand.get(k)
        if not isinstance(b, (int, float)) or not isinstance(c, (int, float)):
            continue
        rows.append({"name": k, "baseline": round(float(b), 4), "candidate": round(float(c), 4),
                     "delta": round(float(c) - float(b), 4), "higher_is_better": True,
                     "gated": k in GATED.get(task, ()), "regressed": False})
    return rows


def latency(base: dict[str, list[float]], cand: dict[str, list[float]]) -> dict:
    """{'REST sig': {baseline: {p50, p95, n}, candidate: {...}, ratio_p50, ratio_p95}} from the
    interleaved single-image timings (ms) of both versions."""
    import numpy as np

    def pct(ms):
        return {"p50": round(float(np.percentile(ms, 50)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
                "n": len(ms)} if ms else {"n": 0}
    out = {}
    for key in base:
        b, c = pct(base[key]), pct(cand.get(key, []))
        row = {"baseline": b, "candidate": c}
        if b.get("n") and c.get("n"):
            row["ratio_p50"] = round(c["p50"] / b["p50"], 3) if b["p50"] > 0 else None
            row["ratio_p95"] = round(c["p95"] / b["p95"], 3) if b["p95"] > 0 else None
        out[key] = row
    return out


def memory(server_mb: float | None, with_baseline_mb: float | None, with_both_mb: float | None,
           limit_mb: float | None = None) -> dict:
    """Footprints from three readings of the server's memory (None: not measured)."""
    out = {"server": server_mb, "with_baseline": with_baseline_mb, "with_both": with_both_mb, "limit_mb": limit_mb}
    if None not in (server_mb, with_baseline_mb, with_both_mb):
        base = max(with_baseline_mb - server_mb, 0.0)
        cand = max(with_both_mb - with_baseline_mb, 0.0)
        out.update(baseline=round(base, 1), candidate=round(cand, 1),
                   ratio=round(cand / base, 3) if base > 1.0 else None)
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in out.items()}


def decide(*, task: str, metrics: list[dict], flips: dict, latency_ms: dict, memory_mb: dict,
           signatures: dict, lim: dict, accepted_reason: str | None = None) -> dict:
    """Apply the limits. Returns {status, failures, summary}; marks gated metric rows 'regressed'."""
    failures = []
    if not signatures.get("compatible", True):
        failures.append("signatures: " + "; ".join(signatures.get("breaking", [])))
    for row in metrics:
        drop = row["baseline"] - row["candidate"] if row["higher_is_better"] else row["candidate"] - row["baseline"]
        row["regressed"] = bool(row.get("gated") and drop > lim["max_metric_drop"] + 1e-9)
        if row["regressed"]:
            failures.append(f"{row['name']} {row['baseline']:.3f} -> {row['candidate']:.3f} "
                            f"({row['delta']:+.3f}; a drop over {lim['max_metric_drop']})")
    if flips.get("images") and flips["rate"] > lim["max_flip_rate"] + 1e-9:
        failures.append(f"{flips['regressed']} of {flips['images']} golden images regressed (the baseline "
                        f"passes them, the candidate fails; rate {flips['rate']:.3f} > {lim['max_flip_rate']})")
    slow = {k: v["ratio_p50"] for k, v in latency_ms.items()
            if v.get("ratio_p50") is not None and v["ratio_p50"] > lim["max_latency_ratio"]
            and v["candidate"]["p50"] - v["baseline"]["p50"] > LATENCY_SLACK_MS}
    if slow:
        failures.append("latency p50 candidate/baseline over " + str(lim["max_latency_ratio"]) + ": "
                        + ", ".join(f"{k} {r:.2f}x" for k, r in slow.items()))
    if memory_mb.get("ratio") is not None and memory_mb["ratio"] > lim["max_memory_ratio"]:
        failures.append(f"memory: the candidate needs {memory_mb['candidate']:.0f} MB, {memory_mb['ratio']:.2f}x "
                        f"the baseline's {memory_mb['baseline']:.0f} MB (limit {lim['max_memory_ratio']}x)")
    limit = lim.get("serving_memory_limit_mb")
    if limit and memory_mb.get("with_both") is not None and memory_mb["with_both"] > limit:
        failures.append(f"memory: baseline and candidate together take {memory_mb['with_both']:.0f} MB, over "
                        f"serving_memory_limit_mb {limit} (TF Serving loads the new version before it "
                        "unloads the old one)")
    if not failures:
        status = "passed"
        summary = "passed: no gated metric drops more than %s, %d regressed image(s)" % (
            lim["max_metric_drop"], flips.get("regressed", 0))
    elif accepted_reason:
        status = "accepted"
        summary = f"regression accepted ({accepted_reason}): " + "; ".join(failures)
    else:
        status = "blocked"
        summary = "blocked: " + "; ".join(failures)
    return {"status": status, "failures": failures, "summary": summary[:2000]}


def no_baseline(lim: dict) -> dict:
    return {"status": "no baseline", "baseline": None, "limits": lim, "failures": [],
            "summary": "no baseline: first release of this model, the regression gate passes"}
