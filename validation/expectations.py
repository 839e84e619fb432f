"""Per-image golden expectations and parity with the exporter's reference answers (numpy only).

Each task function returns a ``Check``-shaped dict: {passed, detail, numbers}, plus what the set
metrics and the report pictures need (detection ``match``, segmentation ``pred`` and ``confusion``,
classification ``scores``). Boxes are ``[ymin, xmin, ymax, xmax]`` pixels with exclusive max edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from validation import metrics


def iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    h = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    w = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = h * w
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou(a, b) -> float:
    """IoU of two [ymin, xmin, ymax, xmax] boxes."""
    return float(iou_matrix([a], [b])[0, 0])


@dataclass
class Match:
    """One-to-one matching of one image's predictions to its expected objects."""
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (prediction, expected, IoU)
    missed: list[int] = field(default_factory=list)           # expected objects nobody matched
    false_positives: list[int] = field(default_factory=list)  # counted predictions that matched nothing
    counted: list[int] = field(default_factory=list)          # predictions with score >= min_score, best first


def match(expected_boxes, expected_classes, boxes, scores, classes, *, min_iou: float, min_score: float) -> Match:
    """COCO-style greedy matching: predictions with score >= min_score, highest score first, each take
    the still unmatched expected object of the same class with the highest IoU >= min_iou."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(int)
    exp_classes = np.asarray(expected_classes).reshape(-1).astype(int)
    order = np.argsort(-scores, kind="stable")
    counted = [int(i) for i in order if scores[i] >= min_score]  # NaN scores never count
    ious = iou_matrix(boxes, expected_boxes)
    m, taken = Match(counted=counted), set()
    for i in counted:
        best, best_j = -1.0, None
        for j in range(len(exp_classes)):
            v = ious[i, j]
            if j in taken or exp_classes[j] != classes[i] or not v >= min_iou:
                continue
            if v > best:
                best, best_j = v, j
        if best_j is None:
            m.false_positives.append(i)
        else:
            taken.add(best_j)
            m.pairs.append((i, best_j, float(best)))
    m.missed = [j for j in range(len(exp_classes)) if j not in taken]
    return m


def detections(outputs: dict):
    """(boxes [n, 4], scores [n], classes [n]) of the first image of a detection answer."""
    n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    boxes = np.asarray(outputs["detection_boxes"], dtype=np.float64)[0][:n].reshape(-1, 4)
    scores = np.asarray(outputs["detection_scores"], dtype=np.float64)[0][:n]
    classes = np.asarray(outputs["detection_classes"])[0][:n].astype(int)
    return boxes, scores, classes


def _ratio(a: int, b: int):
    return round(a / b, 4) if b else None


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def detection(outputs: dict, expect: dict, labels: dict | None = None) -> dict:
    """Every expected object is matched one to one (same class, IoU >= min_iou, score >= min_score)
    and at most max_false_positives predictions with score >= fp_min_score match nothing
    (fp_min_score defaults to min_score: an image may ask for objects found at a low score, and
    still fail on confident false boxes). labels (class id -> name) only make the detail readable."""
    labels = labels or {}
    boxes, scores, classes = detections(outputs)
    exp_boxes, exp_classes = expect["boxes"], expect["classes"]
    min_score, min_iou = expect["min_score"], expect["min_iou"]
    allowed = int(expect.get("max_false_positives", 0))
    fp_score = expect.get("fp_min_score")
    fp_score = min_score if fp_score is None else max(float(fp_score), min_score)
    m = match(exp_boxes, exp_classes, boxes, scores, classes, min_iou=min_iou, min_score=min_score)
    m.false_positives = [i for i in m.false_positives if scores[i] >= fp_score]
    tp, fp, n_exp = len(m.pairs), len(m.false_positives), len(exp_boxes)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, n_exp)
    passed = not m.missed and fp <= allowed
    parts = [f"{tp} of {n_exp} expected object(s) found" if n_exp else "no object expected"]

    def name(c):
        return labels.get(int(c), f"class {int(c)}")

    def listing(items):
        items = list(items)
        return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
    if m.missed:
        counted_boxes, counted_classes = boxes[m.counted], classes[m.counted]
        ious = iou_matrix(exp_boxes, counted_boxes)

        def best(j):  # the best IoU any counted prediction of the same class reached
            v = ious[j][counted_classes == exp_classes[j]]
            return float(v.max()) if v.size else 0.0
        parts.append(f"missed (score >= {min_score}, IoU >= {min_iou}): " + listing(
            f"{name(exp_classes[j])} at {[round(float(x)) for x in exp_boxes[j]]} (best same-class IoU {best(j):.2f})"
            for j in m.missed))
    if fp:
        parts.append(f"{fp} false positive(s) with score >= {fp_score} "
                     f"({'allowed' if fp <= allowed else 'over the allowed'} {allowed}): "
                     + listing(f"{name(classes[i])} score {scores[i]:.2f}" for i in m.false_positives))
    parts.append(f"precision {_fmt(precision)}, recall {_fmt(recall)}")
    mean_iou = round(float(np.mean([p[2] for p in m.pairs])), 4) if m.pairs else None
    return {"passed": passed, "detail": "; ".join(parts), "match": m,
            "numbers": {"expected": n_exp, "found": tp, "missed": len(m.missed), "false_positives": fp,
                        "max_false_positives": allowed, "precision": precision, "recall": recall,
                        "mean_iou": mean_iou, "detections": len(scores), "counted": len(m.counted),
                        "min_score": min_score, "fp_min_score": fp_score, "min_iou": min_iou}}


def predicted_mask(outputs: dict, shape) -> np.ndarray:
    logits = np.asarray(outputs["logits"])[0]
    pred = logits.argmax(-1)
    if pred.shape != tuple(shape):  # nearest-neighbour resize to the golden mask
        ys = (np.arange(shape[0]) * pred.shape[0] / shape[0]).astype(int)
        xs = (np.arange(shape[1]) * pred.shape[1] / shape[1]).astype(int)
        pred = pred[ys][:, xs]
    return pred


def miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean IoU over the classes present in the golden or the predicted mask."""
    return metrics.iou_from_confusion(metrics.confusion(pred, gt))[0]


def segmentation(outputs: dict, expect: dict, mask: np.ndarray) -> dict:
    pred = predicted_mask(outputs, mask.shape)
    cm = metrics.confusion(pred, mask)
    value, per_class = metrics.iou_from_confusion(cm)
    ok = value >= expect["min_miou"]
    return {"passed": ok, "pred": pred, "confusion": cm,
            "numbers": {"miou": round(value, 4), "min_miou": expect["min_miou"],
                        "iou_per_class": {str(c): round(v, 4) for c, v in per_class.items()}},
            "detail": f"mIoU {value:.3f} {'>=' if ok else '<'} {expect['min_miou']}"}


def classification(outputs: dict, expect: dict, labels: dict | None = None) -> dict:
    """The expected label is among the top_k classes. labels (class id -> name) only make the detail
    readable: "label 2 (triangle) not in top-1 [1 (square)]"."""
    labels = labels or {}
    probs = np.asarray(outputs.get("probs", outputs.get("logits")), dtype=np.float64)[0]
    top = [int(i) for i in np.argsort(-probs, kind="stable")[: expect["top_k"]]]
    ok = expect["label"] in top

    def name(c: int) -> str:
        return f"{c} ({labels[c]})" if c in labels else str(c)
    return {"passed": ok, "scores": probs,
            "numbers": {"label": expect["label"], "top_k": top, "p_label": round(float(probs[expect["label"]]), 4)},
            "detail": f"label {name(expect['label'])} {'in' if ok else 'not in'} top-{expect['top_k']} "
                      f"[{', '.join(name(t) for t in top)}]"}


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
