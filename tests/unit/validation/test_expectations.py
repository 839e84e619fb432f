"""Per-image golden expectations: IoU, one-to-one matching, precision/recall, mIoU, top-k, against
hand-computed numbers (numpy only, no services)."""
import numpy as np
import pytest

from validation import expectations as ex


# --- IoU (boxes [ymin, xmin, ymax, xmax], max edges exclusive) ----------------------------------

@pytest.mark.parametrize("a,b,want", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [0, 5, 10, 15], 50 / 150),      # half overlap
    ([0, 0, 10, 10], [2, 2, 6, 6], 16 / 100),        # contained
    ([0, 0, 10, 10], [0, 10, 10, 20], 0.0),          # touching edges share no pixel
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),         # disjoint
    ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),      # corner overlap
    ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),               # empty boxes: no area, IoU 0 (not NaN)
])
def test_iou(a, b, want):
    assert ex.iou(a, b) == pytest.approx(want)
    assert ex.iou(b, a) == pytest.approx(want)


def test_iou_matrix_shape_and_values():
    m = ex.iou_matrix([[0, 0, 10, 10], [0, 5, 10, 15]], [[0, 0, 10, 10], [0, 10, 10, 20], [2, 2, 6, 6]])
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, [[1, 0, 0.16], [1 / 3, 1 / 3, 4 / 112]])  # 4 shared pixels, 100 + 16 - 4
    assert ex.iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_iou_matches_pycocotools_convention():
    """Our pixel-edge boxes and pycocotools' [x, y, w, h] give the same IoU (no +1 anywhere)."""
    from pycocotools import mask as cocomask
    from validation.metrics import to_coco_xywh
    rng = np.random.default_rng(0)
    y0, x0 = rng.integers(0, 50, (2, 20))
    a = np.stack([y0, x0, y0 + rng.integers(1, 40, 20), x0 + rng.integers(1, 40, 20)], 1).astype(float)
    b = a[::-1] + rng.integers(-5, 5, (20, 4)).clip(0, None) * [0, 0, 1, 1]
    ours = ex.iou_matrix(a, b)
    theirs = cocomask.iou([to_coco_xywh(x) for x in a], [to_coco_xywh(x) for x in b], [0] * len(b))
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert to_coco_xywh([28, 22, 65, 52]) == [22.0, 28.0, 30.0, 37.0]


# --- one-to-one matching ------------------------------------------------------------------------

A, B = [10, 10, 30, 30], [50, 50, 80, 90]


def answer(boxes, scores, classes, pad=5):
    """A detection answer shaped as TF Serving returns it: [1, N] padded beyond num_detections."""
    n = len(scores)
    bx = np.zeros((1, n + pad, 4), np.float32)
    sc = np.zeros((1, n + pad), np.float32)
    cl = np.zeros((1, n + pad), np.int32)
    if n:
        bx[0, :n], sc[0, :n], cl[0, :n] = boxes, scores, classes
    return {"detection_boxes": bx, "detection_scores": sc, "detection_classes": cl,
            "num_detections": np.array([float(n)], np.float32)}


def expect(boxes, classes, **kw):
    return {"boxes": [list(map(float, b)) for b in boxes], "classes": list(classes), "min_score": 0.5,
            "min_iou": 0.5, "max_false_positives": 0, **kw}


def test_every_object_found_plus_a_confident_false_box_fails():
    """The issue's case: both expected boxes found, and one confident box where nothing is."""
    out = answer([A, B, [100, 100, 120, 120]], [0.9, 0.8, 0.95], [1, 2, 1])
    r = ex.detection(out, expect([A, B], [1, 2]))
    assert r["passed"] is False
    n = r["numbers"]
    assert (n["found"], n["missed"], n["false_positives"]) == (2, 0, 1)
    assert n["precision"] == pytest.approx(2 / 3, abs=1e-4) and n["recall"] == 1.0
    assert "1 false positive(s) with score >= 0.5 (over the allowed 0)" in r["detail"]
    assert "precision 0.67, recall 1.00" in r["detail"]
    assert r["match"].false_positives == [2]
    # the same answer passes where the golden set allows one false positive
    r = ex.detection(out, expect([A, B], [1, 2], max_false_positives=1))
    assert r["passed"] is True and "allowed 1" in r["detail"]


def test_fp_min_score_finds_objects_at_a_low_score_and_still_fails_confident_false_boxes():
    """min_score 0.1 finds an object the model saw at 0.2; an unmatched 0.3 box is not a false
    positive under fp_min_score 0.5, an unmatched 0.6 box is."""
    low = answer([A, B, [100, 100, 120, 120]], [0.9, 0.2, 0.3], [1, 2, 1])
    r = ex.detection(low, expect([A, B], [1, 2]))                      # issue's default: one threshold
    assert r["passed"] is False and r["numbers"]["missed"] == 1
    r = ex.detection(low, expect([A, B], [1, 2], min_score=0.1, fp_min_score=0.5))
    assert r["passed"] is True and r["numbers"]["false_positives"] == 0 and r["match"].false_positives == []
    assert (r["numbers"]["found"], r["numbers"]["fp_min_score"]) == (2, 0.5)
    confident = answer([A, B, [100, 100, 120, 120]], [0.9, 0.2, 0.6], [1, 2, 1])
    r = ex.detection(confident, expect([A, B], [1, 2], min_score=0.1, fp_min_score=0.5))
    assert r["passed"] is False and r["match"].false_positives == [2]
    assert "1 false positive(s) with score >= 0.5" in r["detail"]


def test_duplicates_of_one_object_give_one_match_and_false_positives():
    dup = [[10, 10, 30, 31], [10, 10, 30, 30], [11, 10, 30, 30]]   # IoUs 0.952, 1.0, 0.95
    out = answer(dup, [0.9, 0.8, 0.7], [1, 1, 1])
    r = ex.detection(out, expect([A], [1]))
    m = r["match"]
    assert [(p, e) for p, e, _ in m.pairs] == [(0, 0)]   # the most confident one, not the best IoU
    assert m.pairs[0][2] == pytest.approx(400 / 420)
    assert m.false_positives == [1, 2] and m.missed == []
    assert r["passed"] is False
    assert (r["numbers"]["precision"], r["numbers"]["recall"]) == (pytest.approx(1 / 3, abs=1e-4), 1.0)


def test_prediction_takes_the_unmatched_object_with_the_highest_iou():
    e1, e2 = [0, 0, 10, 10], [0, 4, 10, 14]
    p = [0, 3, 10, 13]          # IoU with e1: 70/130 = 0.538, with e2: 90/110 = 0.818
    q = [0, 1, 10, 11]          # IoU with e1: 90/110, with e2: 70/130
    m = ex.match([e1, e2], [1, 1], [p, q], [0.9, 0.8], [1, 1], min_iou=0.5, min_score=0.5)
    assert [(i, j) for i, j, _ in m.pairs] == [(0, 1), (1, 0)]
    # q alone first (higher score) takes e1; p then takes e2
    m = ex.match([e1, e2], [1, 1], [p, q], [0.7, 0.8], [1, 1], min_iou=0.5, min_score=0.5)
    assert sorted((i, j) for i, j, _ in m.pairs) == [(0, 1), (1, 0)]
    # one prediction for two objects: the better one is matched, the other missed
    m = ex.match([e1, e2], [1, 1], [p], [0.9], [1], min_iou=0.5, min_score=0.5)
    assert [(i, j) for i, j, _ in m.pairs] == [(0, 1)] and m.missed == [0]


def test_wrong_class_is_a_miss_and_a_false_positive():
    r = ex.detection(answer([A], [0.9], [2]), expect([A], [1]))
    assert r["passed"] is False
    assert (r["numbers"]["found"], r["numbers"]["missed"], r["numbers"]["false_positives"]) == (0, 1, 1)
    assert r["numbers"]["precision"] == 0.0 and r["numbers"]["recall"] == 0.0
    assert "best same-class IoU 0.00" in r["detail"]


def test_scores_below_min_score_do_not_count():
    r = ex.detection(answer([A, [100, 100, 120, 120]], [0.3, 0.4], [1, 1]), expect([A], [1]))
    n = r["numbers"]
    assert r["passed"] is False and (n["found"], n["false_positives"], n["counted"], n["detections"]) == (0, 0, 0, 2)
    assert n["precision"] is None and n["recall"] == 0.0


def test_min_iou_is_inclusive_and_min_score_too():
    half = [10, 10, 30, 20]     # IoU with A: 200/400 = 0.5 exactly
    assert ex.detection(answer([half], [0.5], [1]), expect([A], [1]))["passed"] is True
    r = ex.detection(answer([half], [0.5], [1]), expect([A], [1], min_iou=0.51))
    assert r["passed"] is False and "best same-class IoU 0.50" in r["detail"]


def test_image_without_objects():
    assert ex.detection(answer([], [], []), expect([], []))["passed"] is True
    r = ex.detection(answer([A], [0.6], [1]), expect([], []))
    assert r["passed"] is False and r["numbers"]["recall"] is None and r["numbers"]["precision"] == 0.0
    assert r["detail"].startswith("no object expected; 1 false positive(s)")


def test_non_finite_box_is_a_false_positive_not_a_crash():
    r = ex.detection(answer([A, [np.nan, 0, 5, 5]], [0.9, 0.8], [1, 1]), expect([A], [1]))
    assert r["numbers"]["found"] == 1 and r["numbers"]["false_positives"] == 1 and r["passed"] is False


# --- segmentation ------------------------------------------------------------------------------

def test_miou_per_image_hand_computed():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 1], [1, 1]])
    # class 0: 1 / 2; class 1: 2 / 3
    assert ex.miou(pred, gt) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert ex.miou(gt, gt) == 1.0
    # a class only predicted counts (IoU 0), a class in neither does not
    assert ex.miou(np.array([[3, 0], [0, 0]]), np.zeros((2, 2), int)) == pytest.approx((3 / 4 + 0) / 2)


def test_segmentation_check_resizes_logits_to_the_golden_mask():
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[0, :, :, 0] = 1
    logits[0, 1, 1] = [0, 0, 5]                        # bottom-right quarter: class 2
    mask = np.zeros((4, 4), np.int32)
    mask[2:, 2:] = 2
    r = ex.segmentation({"logits": logits}, {"min_miou": 0.5}, mask)
    assert r["passed"] is True and r["numbers"]["miou"] == 1.0 and r["pred"].shape == (4, 4)
    mask[0, 0] = 1                                     # one pixel of a class never predicted
    r = ex.segmentation({"logits": logits}, {"min_miou": 0.7}, mask)
    # class 0: 11/12, class 1: 0/1, class 2: 4/4
    assert r["numbers"]["miou"] == pytest.approx(round((11 / 12 + 0 + 1) / 3, 4))
    assert r["passed"] is False and r["detail"] == "mIoU 0.639 < 0.7"
    assert r["confusion"].tolist() == [[11, 0, 0], [1, 0, 0], [0, 0, 4]]


# --- classification ----------------------------------------------------------------------------

def test_classification_top_k():
    out = {"probs": np.array([[0.1, 0.5, 0.4]], np.float32)}
    assert ex.classification(out, {"label": 1, "top_k": 1})["passed"] is True
    r = ex.classification(out, {"label": 2, "top_k": 1})
    assert r["passed"] is False and r["numbers"] == {"label": 2, "top_k": [1], "p_label": 0.4}
    assert ex.classification(out, {"label": 2, "top_k": 2})["passed"] is True
    assert r["detail"] == "label 2 not in top-1 [1]"
    named = ex.classification(out, {"label": 2, "top_k": 2}, {1: "square", 2: "triangle"})
    assert named["detail"] == "label 2 (triangle) in top-2 [1 (square), 2 (triangle)]"  # names, as in captions
