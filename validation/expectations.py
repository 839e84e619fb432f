"""Per-image golden expectations and parity with the exporter's reference answers (numpy only).

Each function returns a ``Check``-shaped dict: {name, passed, detail, numbers}.
"""
from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    """IoU of two [ymin, xmin, ymax, xmax] boxes."""
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def detection(outputs: dict, expect: dict) -> dict:
    """Every expected object is found: same class, IoU >= min_iou, score >= min_score."""
    n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    boxes = np.asarray(outputs["detection_boxes"])[0][:n]
    scores = np.asarray(outputs["detection_scores"])[0][:n]
    classes = np.asarray(outputs["detection_classes"])[0][:n].astype(int)
    found, missed = [], []
    for box, cls in zip(expect["boxes"], expect["classes"]):
        best = max(((iou(box, b), float(s)) for b, s, c in zip(boxes, scores, classes)
                    if c == cls and s >= expect["min_score"]), default=(0.0, 0.0))
        (found if best[0] >= expect["min_iou"] else missed).append(
            {"class": cls, "box": box, "best_iou": round(best[0], 3), "score": round(best[1], 3)})
    detail = ("all expected objects found" if not missed else
              f"{len(missed)} of {len(expect['boxes'])} expected object(s) not found with score >= "
              f"{expect['min_score']} and IoU >= {expect['min_iou']}: " +
              ", ".join(f"class {m['class']} (best IoU {m['best_iou']})" for m in missed))
    return {"passed": not missed, "detail": detail,
            "numbers": {"expected": len(expect["boxes"]), "found": len(found), "detections": n,
                        "min_best_iou": min([f["best_iou"] for f in found + missed], default=None)}}


def predicted_mask(outputs: dict, shape) -> np.ndarray:
    logits = np.asarray(outputs["logits"])[0]
    pred = logits.argmax(-1)
    if pred.shape != tuple(shape):  # nearest-neighbour resize to the golden mask
        ys = (np.arange(shape[0]) * pred.shape[0] / shape[0]).astype(int)
        xs = (np.arange(shape[1]) * pred.shape[1] / shape[1]).astype(int)
        pred = pred[ys][:, xs]
    return pred


def miou(pred: np.ndarray, gt: np.ndarray) -> float:
    ious = []
    for c in np.union1d(np.unique(gt), np.unique(pred)):
        inter = np.logical_and(pred == c, gt == c).sum()
        union = np.logical_or(pred == c, gt == c).sum()
        ious.append(inter / union)
    return float(np.mean(ious))


def segmentation(outputs: dict, expect: dict, mask: np.ndarray) -> dict:
    value = miou(predicted_mask(outputs, mask.shape), mask)
    ok = value >= expect["min_miou"]
    return {"passed": ok, "numbers": {"miou": round(value, 4), "min_miou": expect["min_miou"]},
            "detail": f"mIoU {value:.3f} {'>=' if ok else '<'} {expect['min_miou']}"}


def classification(outputs: dict, expect: dict) -> dict:
    probs = np.asarray(outputs.get("probs", outputs.get("logits")))[0]
    top = [int(i) for i in np.argsort(-probs)[: expect["top_k"]]]
    ok = expect["label"] in top
    return {"passed": ok, "numbers": {"label": expect["label"], "top_k": top,
                                      "p_label": round(float(probs[expect["label"]]), 4)},
            "detail": f"label {expect['label']} {'in' if ok else 'not in'} top-{expect['top_k']} {top}"}


def parity(served: dict, reference: dict, *, atol: float, rtol: float = 1e-5) -> dict:
    """Served answers equal the exporter's in-process answers within tolerance."""
    worst, bad = 0.0, []
    for key, ref in reference.items():
        got = served.get(key)
        if got is None:
            bad.append(f"output {key!r} missing")
            continue
        got, ref = np.asarray(got), np.asarray(ref)
        if got.shape != ref.shape:
            bad.append(f"{key}: shape {list(got.shape)} != reference {list(ref.shape)}")
            continue
        if ref.size == 0:
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        if not np.all(np.isfinite(got.astype(np.float64))):
            bad.append(f"{key}: non-finite values served")
            continue
        worst = max(worst, float(diff.max()))
        if not np.allclose(got.astype(np.float64), ref.astype(np.float64), atol=atol, rtol=rtol):
            bad.append(f"{key}: max |served - reference| = {float(diff.max()):.3g} > {atol}")
    return {"passed": not bad, "numbers": {"max_abs_diff": worst, "atol": atol},
            "detail": "; ".join(bad) if bad else f"max |served - reference| {worst:.3g} <= {atol}"}
