"""Set-level metrics of a golden set: detection AP (pycocotools), classification accuracy, segmentation
mean IoU (confusion matrix), and the per-model floors that turn them into checks.

Boxes everywhere in this project are ``[ymin, xmin, ymax, xmax]`` in pixels with *exclusive* max edges
(a box over rows 10..19 has ymin=10, ymax=20), so width = xmax - xmin: exactly COCO's ``[x, y, w, h]``
convention, which pycocotools also measures without a +1.
"""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

log = logging.getLogger(__name__)

# config key -> (metric key in verdict["metrics"], what it is)
FLOORS = {
    "min_map": ("map", "COCO mAP@[.5:.95]"),
    "min_ap50": ("ap50", "AP@0.5"),
    "min_accuracy": ("accuracy", "top-1 accuracy"),
    "min_miou_set": ("miou_set", "mean IoU over the set"),
}


# --- detection ---------------------------------------------------------------------------------

def to_coco_xywh(box) -> list[float]:
    """[ymin, xmin, ymax, xmax] (exclusive max edges) -> COCO [x, y, width, height]."""
    y0, x0, y1, x1 = (float(v) for v in box)
    return [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)]


def coco_detection(ground_truth: list[dict], predictions: list[dict], category_ids) -> dict:
    """COCO box AP with pycocotools, built in memory (no files).

    ground_truth: one dict per image: ``boxes`` [K, 4], ``classes`` [K].
    predictions: one dict per image (same order): ``boxes`` [N, 4], ``scores`` [N], ``classes`` [N];
    every prediction counts (AP ranks by score, there is no score threshold; COCO keeps the 100
    best per image). Non-finite boxes or scores are left out (the great-expectations suite flags them).
    Returns ``map`` (AP@[.5:.95], COCO's headline), ``ap50``, ``ap75``; None where the set has no
    expected object to measure against.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = sorted({int(c) for c in category_ids} | {int(c) for g in ground_truth for c in g["classes"]})
    images, anns, dets = [], [], []
    for i, (gt, pr) in enumerate(zip(ground_truth, predictions), start=1):
        images.append({"id": i})
        for box, cls in zip(gt["boxes"], gt["classes"]):
            xywh = to_coco_xywh(box)
            # ids start at 1: COCOeval records a match as the ground truth's id, 0 meaning "none"
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(cls), "bbox": xywh,
                         "area": xywh[2] * xywh[3], "iscrowd": 0})
        for box, score, cls in zip(pr["boxes"], pr["scores"], pr["classes"]):
            if not (np.all(np.isfinite(box)) and np.isfinite(score)):
                continue
            dets.append({"image_id": i, "category_id": int(cls), "bbox": to_coco_xywh(box), "score": float(score)})
    out = {"images": len(images), "objects": len(anns), "detections": len(dets),
           "map": None, "ap50": None, "ap75": None}
    if not anns:
        return out
    if not dets:  # pycocotools cannot load an empty result list; nothing found is AP 0
        return {**out, "map": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; stdout is the CLI's JSON
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [None if s < 0 else float(s) for s in ev.stats[:3]]  # -1: nothing to measure
    return {**out, "map": stats[0], "ap50": stats[1], "ap75": stats[2]}


# --- classification ----------------------------------------------------------------------------

def topk_accuracy(scores: np.ndarray, labels, k: int = 1) -> float:
    """Fraction of rows whose label is among the k highest scores (ties: the lower class id first)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or len(scores) != len(labels) or not len(labels):
        raise ValueError(f"scores must be [N, C] with one label per row, got {scores.shape} and {labels.shape}")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def classification_set(scores: np.ndarray, labels, ks=()) -> dict:
    """``accuracy`` (top-1) and ``top<k>_accuracy`` for every k > 1 given (the golden set's top_k)."""
    out = {"images": len(labels), "accuracy": topk_accuracy(scores, labels, 1)}
    for k in sorted({int(k) for k in ks if int(k) > 1}):
        out[f"top{k}_accuracy"] = topk_accuracy(scores, labels, k)
    return out


# --- segmentation ------------------------------------------------------------------------------

def confusion(pred: np.ndarray, gt: np.ndarray, n: int | None = None) -> np.ndarray:
    """[n, n] pixel counts, rows = golden class, columns = predicted class."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    gt = np.asarray(gt, dtype=np.int64).reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted mask has {pred.size} pixels, golden mask {gt.size}")
    if (pred.size and pred.min() < 0) or (gt.size and gt.min() < 0):
        raise ValueError("class ids must be >= 0")
    n = max(n or 0, int(pred.max(initial=0)) + 1, int(gt.max(initial=0)) + 1)
    return np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)


def iou_from_confusion(cm: np.ndarray) -> tuple[float | None, dict[int, float]]:
    """(mean IoU, {class: IoU}) over the classes present in the golden or the predicted mask."""
    cm = np.asarray(cm, dtype=np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    per_class = {c: float(inter[c] / union[c]) for c in range(len(cm)) if union[c] > 0}
    return (float(np.mean(list(per_class.values()))) if per_class else None), per_class


def add_confusions(cms) -> np.ndarray:
    n = max(len(c) for c in cms)
    total = np.zeros((n, n), dtype=np.int64)
    for c in cms:
        total[: len(c), : len(c)] += c
    return total


def segmentation_set(cms, labels: dict[int, str] | None = None) -> dict:
    """Mean IoU over the whole set (one confusion matrix summed over every image, so large and small
    images weigh by their pixels), per-class IoU, pixel accuracy, and the mean of per-image mIoU."""
    total = add_confusions(cms)
    miou, per_class = iou_from_confusion(total)
    per_image = [iou_from_confusion(c)[0] for c in cms]
    labels = labels or {}
    return {"images": len(cms), "miou_set": miou,
            "miou_per_image_mean": float(np.mean([v for v in per_image if v is not None])) if per_image else None,
            "pixel_accuracy": float(np.trace(total) / total.sum()) if total.sum() else None,
            "iou_per_class": {labels.get(c, "background" if c == 0 else str(c)): round(v, 4)
                              for c, v in per_class.items()}}


# --- floors ------------------------------------------------------------------------------------

def floor_checks(metrics: dict, floors: dict) -> list[dict]:
    """One check per configured floor: "metrics: <metric> >= <floor>"."""
    checks = []
    for key, floor in floors.items():
        if floor is None:
            continue
        metric, what = FLOORS[key]
        value = metrics.get(metric)
        name = f"metrics: {metric} >= {floor}"
        if value is None:
            checks.append({"name": name, "passed": False, "numbers": {metric: None, key: floor},
                           "detail": f"{what} could not be measured on this golden set (no answers, or no "
                                     f"expected object): fix the golden set or remove {key} from the config"})
            continue
        ok = value >= floor
        checks.append({"name": name, "passed": bool(ok), "numbers": {metric: round(value, 4), key: floor},
                       "detail": f"{what} {value:.4f} {'>=' if ok else '<'} {key} {floor}"})
    return checks
