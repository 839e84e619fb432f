"""Set-level metrics against hand-computed numbers: detection AP (pycocotools, COCO's 101-point
interpolation), classification accuracy, segmentation mean IoU; the floors as checks."""
import numpy as np
import pytest

from validation import metrics

A, B = [10, 10, 30, 30], [50, 50, 80, 90]
ELSEWHERE = [100, 100, 120, 120]


def det(boxes, scores, classes):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores, float),
            "classes": np.asarray(classes, int)}


def gt(boxes, classes):
    return {"boxes": boxes, "classes": classes}


def test_ap_two_objects_ranked_predictions():
    """2 objects; ranked: hit (0.9), false box (0.8), hit (0.7).
    precision/recall after each: (1, .5), (.5, .5), (2/3, 1); interpolated precision is 1 for
    recall <= .5 (51 of COCO's 101 recall points) and 2/3 above (50 points):
    AP = (51 * 1 + 50 * 2/3) / 101 = 0.83498. Hits are exact boxes, so every IoU threshold agrees."""
    m = metrics.coco_detection([gt([A, B], [1, 1])], [det([A, ELSEWHERE, B], [0.9, 0.8, 0.7], [1, 1, 1])], {1: "a"})
    want = (51 + 50 * 2 / 3) / 101
    assert m["ap50"] == pytest.approx(want, abs=1e-9)
    assert m["map"] == pytest.approx(want, abs=1e-9)
    assert (m["objects"], m["detections"], m["images"]) == (2, 3, 1)


def test_ap_false_box_ranked_last_does_not_lower_ap():
    m = metrics.coco_detection([gt([A, B], [1, 1])], [det([A, B, ELSEWHERE], [0.9, 0.8, 0.7], [1, 1, 1])], [1])
    assert m["ap50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)


def test_ap_false_box_ranked_first():
    """false (0.9), hit, hit: precision (0, 0), (.5, .5), (2/3, 1) -> interpolated 2/3 everywhere."""
    m = metrics.coco_detection([gt([A, B], [1, 1])], [det([ELSEWHERE, A, B], [0.9, 0.8, 0.7], [1, 1, 1])], [1])
    assert m["ap50"] == pytest.approx(2 / 3, abs=1e-9)


def test_map_averages_iou_thresholds():
    """One object, one box with IoU 0.72: a hit at thresholds .50-.70 (5 of 10), a miss above.
    AP@.5 = 1, mAP@[.5:.95] = 5/10."""
    m = metrics.coco_detection([gt([[0, 0, 10, 10]], [1])], [det([[0, 0, 10, 7.2]], [0.9], [1])], [1])
    assert m["ap50"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx(0.5)
    assert m["ap75"] == pytest.approx(0.0)


def test_map_averages_classes_and_spans_images():
    """Class 1 detected perfectly in image 1; class 2 missed in image 2 (box of the wrong class):
    class 1 AP 1, class 2 AP 0 -> mean 0.5 (the wrong-class box is never a class-2 hit)."""
    truth = [gt([A], [1]), gt([B], [2])]
    preds = [det([A], [0.9], [1]), det([B], [0.9], [1])]
    m = metrics.coco_detection(truth, preds, [1, 2])
    assert m["ap50"] == pytest.approx(0.5) and m["map"] == pytest.approx(0.5)


def test_ap_without_predictions_or_objects():
    m = metrics.coco_detection([gt([A], [1])], [det([], [], [])], [1])
    assert (m["ap50"], m["map"]) == (0.0, 0.0)
    m = metrics.coco_detection([gt([], [])], [det([A], [0.9], [1])], [1])
    assert (m["ap50"], m["map"], m["objects"]) == (None, None, 0)


def test_ap_skips_non_finite_predictions_and_prints_nothing(capsys):
    m = metrics.coco_detection([gt([A], [1])], [det([[np.nan, 0, 1, 1], A], [0.99, 0.5], [1, 1])], [1])
    assert m["ap50"] == pytest.approx(1.0) and m["detections"] == 1
    assert capsys.readouterr().out == ""   # the CLI's --json owns stdout


def test_accuracy_hand_computed():
    scores = np.array([[0.7, 0.2, 0.1],    # label 0: top-1 hit
                       [0.5, 0.4, 0.1],    # label 1: top-2 hit only
                       [0.1, 0.3, 0.6],    # label 2: top-1 hit
                       [0.6, 0.3, 0.1]])   # label 2: miss even at top-2
    labels = [0, 1, 2, 2]
    assert metrics.topk_accuracy(scores, labels, 1) == 0.5
    assert metrics.topk_accuracy(scores, labels, 2) == 0.75
    assert metrics.classification_set(scores, labels, ks={1, 2}) == {"images": 4, "accuracy": 0.5, "top2_accuracy": 0.75}
    from sklearn.metrics import top_k_accuracy_score   # a maintained implementation agrees
    assert metrics.topk_accuracy(scores, labels, 2) == top_k_accuracy_score(labels, scores, k=2)


def test_segmentation_set_hand_computed():
    """image 1: gt [[0,0],[1,1]] pred [[0,1],[1,1]]; image 2: gt all 2, pred [[2,2],[2,0]].
    Summed: class 0 inter 1, union 3 -> 1/3; class 1: 2/3; class 2: 3/4. Set mIoU = 0.58333.
    Per image: (1/2 + 2/3) / 2 = 0.58333 and (3/4 + 0) / 2 = 0.375 -> mean 0.47917. Pixels right: 6/8."""
    cms = [metrics.confusion(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]])),
           metrics.confusion(np.array([[2, 2], [2, 0]]), np.full((2, 2), 2))]
    assert cms[0].shape == (2, 2) and cms[1].shape == (3, 3)
    s = metrics.segmentation_set(cms, {1: "rectangle", 2: "ellipse"})
    assert s["miou_set"] == pytest.approx((1 / 3 + 2 / 3 + 3 / 4) / 3)
    assert s["miou_per_image_mean"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 3 / 8) / 2)
    assert s["pixel_accuracy"] == pytest.approx(0.75)
    assert s["iou_per_class"] == {"background": pytest.approx(1 / 3, abs=1e-4),
                                  "rectangle": pytest.approx(2 / 3, abs=1e-4), "ellipse": 0.75}
    from sklearn.metrics import jaccard_score   # a maintained implementation agrees
    y = np.concatenate([[0, 0, 1, 1], [2, 2, 2, 2]])
    p = np.concatenate([[0, 1, 1, 1], [2, 2, 2, 0]])
    assert s["miou_set"] == pytest.approx(jaccard_score(y, p, average="macro"))


def test_confusion_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="pixels"):
        metrics.confusion(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_floor_checks():
    m = {"map": 0.42, "ap50": 0.9, "accuracy": None}
    checks = {c["name"]: c for c in metrics.floor_checks(m, {"min_map": 0.5, "min_ap50": 0.9, "min_accuracy": 0.8})}
    assert checks["metrics: map >= 0.5"]["passed"] is False
    assert checks["metrics: map >= 0.5"]["detail"] == "COCO mAP@[.5:.95] 0.4200 < min_map 0.5"
    assert checks["metrics: ap50 >= 0.9"]["passed"] is True       # the floor itself passes
    assert checks["metrics: accuracy >= 0.8"]["passed"] is False  # not measured is not a pass
    assert "could not be measured" in checks["metrics: accuracy >= 0.8"]["detail"]
