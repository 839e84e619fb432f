"""golden_checks on in-memory answers (no server) and the HTML report for a large golden set: failed
first, a bounded number of full cards, thumbnails for the rest, self-contained, legends per task."""
import json
import re

import numpy as np
import pytest

from exporters.golden import DEFAULTS, GoldenImage, GoldenSet
from registry.config import ModelConfig
from registry.s3 import S3Uri
from validation import report
from validation.report import pictures
from validation.validate import golden_checks

LABELS = {1: "rectangle", 2: "ellipse", 3: "triangle"}


def model(task, **extra):
    return ModelConfig(name="m", serving=S3Uri.parse("s3://serving/m/"), task=task, extra=extra)


def detection_set(n, *, failing, size=64):
    """n images with one object each; the answers find it, and images in `failing` also get a
    confident false box (the first 10 of them) or miss it (the others)."""
    rng = np.random.default_rng(1)
    images, first = [], {}
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        box, cls = [8.0, 8.0, 30.0, 40.0], 1 + i % 3
        expect = {**DEFAULTS, "boxes": [box], "classes": [cls]}
        name = f"{i:04d}.png"
        images.append(GoldenImage(name=name, encoded=b"", image=img, expect=expect))
        shift = (i % 7) * 0.5   # passing images differ in IoU, so "worst passing" is well defined
        boxes = [[8, 8, 30, 40 + shift]]
        scores, classes = [0.9], [cls]
        if i in failing:
            if len(boxes) and sorted(failing).index(i) < 10:
                boxes.append([40, 40, 60, 60]); scores.append(0.8); classes.append(cls)   # false positive
            else:
                classes = [cls % 3 + 1]                                                    # wrong class
        k = len(scores)
        first[name] = {"detection_boxes": np.array([boxes + [[0, 0, 0, 0]] * (10 - k)], np.float32),
                       "detection_scores": np.array([scores + [0.0] * (10 - k)], np.float32),
                       "detection_classes": np.array([classes + [0] * (10 - k)], np.int32),
                       "num_detections": np.array([float(k)], np.float32)}
    return GoldenSet(task="detection", classes=LABELS, images=images, source="mem"), first


def verdict_for(checks, metrics, passed=None):
    failed = [c for c in checks if not c["passed"]]
    return {"model": "m", "run_id": "r1", "candidate": "s3://serving/m/_staging/r1/", "passed": not failed,
            "reason": f"{len(failed)} check(s) failed" if failed else None, "checkpoint": "s3://t/ckpt-1",
            "server": "stand-in", "checks": checks, "metrics": metrics, "seconds_to_available": 1.5,
            "latency_ms": {"REST serving_default": {"p50": 3.0, "p95": 5.0, "n": 20}}}


def test_detection_golden_checks_and_metrics():
    gs, first = detection_set(12, failing={3, 5})
    checks, images, m = golden_checks(model("detection", min_ap50=0.99, min_map=0.1), gs, first)
    by = {c["name"]: c for c in checks}
    assert by["golden: 0003.png"]["passed"] is False                      # found + a confident false box
    assert by["golden: 0003.png"]["numbers"]["false_positives"] == 1
    assert by["golden: 0003.png"]["numbers"]["precision"] == 0.5
    assert by["golden: 0000.png"]["passed"] is True
    assert (m["images"], m["images_failed"], m["objects"], m["found"], m["false_positives"]) == (12, 2, 12, 12, 2)
    assert m["recall"] == 1.0 and m["precision"] == round(12 / 14, 4)
    # the two false boxes rank below every hit (0.8 < 0.9): AP@0.5 stays 1
    assert m["ap50"] == 1.0 and 0 < m["map"] < 1
    assert by["metrics: ap50 >= 0.99"]["passed"] is True and by["metrics: map >= 0.1"]["passed"] is True
    assert m["floors"] == {"min_map": 0.1, "min_ap50": 0.99}
    json.dumps(m)   # goes into verdict.json as is


def test_detection_floor_fails_the_verdict():
    gs, first = detection_set(6, failing=set())
    # images 0-2 (one object of each class) answered with an unknown class: every class has recall 1/2
    # at precision 1, so AP@0.5 is 51/101 (COCO's 101 recall points, 0 to 0.5 inclusive)
    for i in range(3):
        first[f"{i:04d}.png"]["detection_classes"][0, 0] = 99
    checks, _, m = golden_checks(model("detection", min_ap50=0.6), gs, first)
    floor = next(c for c in checks if c["name"] == "metrics: ap50 >= 0.6")
    assert floor["passed"] is False and floor["detail"] == "AP@0.5 0.5050 < min_ap50 0.6"
    assert m["ap50"] == round(51 / 101, 4)


def test_classification_and_segmentation_metrics():
    imgs = [GoldenImage(name=f"{i}.png", encoded=b"", image=np.zeros((8, 8, 3), np.uint8),
                        expect={**DEFAULTS, "label": i % 3}) for i in range(4)]
    probs = [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.9, 0.05, 0.05]]   # 3 of 4 right
    first = {f"{i}.png": {"probs": np.array([p], np.float32)} for i, p in enumerate(probs)}
    checks, images, m = golden_checks(model("classification", min_accuracy=0.8),
                                      GoldenSet("classification", {0: "rectangle", 1: "ellipse", 2: "triangle"},
                                                imgs, "mem"), first)
    assert m["accuracy"] == 0.75 and m["images_failed"] == 1
    assert next(c for c in checks if c["name"].startswith("metrics:"))["passed"] is False
    assert images[2]["caption"] == "ellipse (p 0.60)"

    mask = np.zeros((4, 4), np.int32)
    mask[:2] = 1
    logits = np.zeros((1, 4, 4, 2), np.float32)
    logits[0, :3, :, 1] = 1   # predicts class 1 on 3 rows: class 0 IoU 4/8, class 1 IoU 8/12
    imgs = [GoldenImage(name="a.png", encoded=b"", image=np.zeros((4, 4, 3), np.uint8),
                        expect={**DEFAULTS, "min_miou": 0.5}, mask=mask)]
    checks, images, m = golden_checks(model("segmentation", min_miou_set=0.5),
                                      GoldenSet("segmentation", LABELS, imgs, "mem"), {"a.png": {"logits": logits}})
    assert m["miou_set"] == round((0.5 + 2 / 3) / 2, 4) and m["iou_per_class"] == {"background": 0.5, "rectangle": 0.6667}
    assert images[0]["numbers"]["iou_per_class"] == {"background": 0.5, "rectangle": 0.6667}
    assert all(c["passed"] for c in checks)


def test_report_with_300_images(tmp_path):
    failing = set(range(5, 300, 10))  # 30 failed images, more than report.FULL_FAILED
    gs, first = detection_set(300, failing=failing)
    checks, images, m = golden_checks(model("detection"), gs, first)
    v = verdict_for(checks, m)
    paths = report.write(str(tmp_path), v, images, gx_docs=str(tmp_path / "gx"), legend=report.legend("detection", LABELS))
    page = open(paths["index"]).read()
    assert json.load(open(paths["verdict"]))["metrics"]["images_failed"] == 30

    # self-contained: no outside resources, no scripts, every picture inline
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    srcs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert '<a href="gx/index.html">' in page

    # metric summary before the images; failed cards first, then the worst passing, bounded
    assert page.index("Golden set metrics") < page.index("COCO mAP@[.5:.95]") < page.index("Golden images")
    cards = re.findall(r"<div class='card( failed)?' data-image='([^']+)'", page)
    assert len(cards) == report.FULL_FAILED + report.FULL_PASSING
    assert [bool(f) for f, _ in cards] == [True] * report.FULL_FAILED + [False] * report.FULL_PASSING
    assert {n for _, n in cards[:report.FULL_FAILED]} <= {f"{i:04d}.png" for i in failing}
    # the worst passing are the ones with the lowest IoU (shift 3.0: i % 7 == 6)
    assert all(int(n[:4]) % 7 == 6 for _, n in cards[report.FULL_FAILED:])
    # numbers next to the pictures in each card
    first_card = page[page.index("<div class='card"):page.index("<div class='card", page.index("<div class='card") + 1)]
    assert "<table class=nums>" in first_card and "false_positives" in first_card and "precision" in first_card
    # every other image is a thumbnail; the failed ones that did not fit come first in the grid
    thumbs = re.findall(r"<figure class='thumb( failed)?' data-image='([^']+)'", page)
    assert len(thumbs) == 300 - len(cards)
    assert [bool(f) for f, _ in thumbs[:6]] == [True] * 6 and not any(f for f, _ in thumbs[6:])
    assert {n for _, n in cards} | {n for _, n in thumbs} == {g.name for g in gs.images}
    # the checks table folds the golden checks: 10 failed listed (linked to their image), the rest counted
    assert page.count("<td>golden: ") == report.GOLDEN_ROWS == 10
    assert "<td>golden images (300)</td><td>270 passed, 30 failed; 20 more failed images not listed" in page
    listed = re.findall(r"<td>golden: ([^<]+)</td><td>[^<]*</td><td class=small><a href='#img-([^']+)'>", page)
    assert len(listed) == 10 and all(a == b and f"id='img-{a}'" in page for a, b in listed)
    assert page.index("Checks") < page.index("<td>golden: ") < page.index("Golden images")
    # legend: box colours only, class names said to be text labels
    legend = page[page.index("<p class=legend>"):page.index("</p>", page.index("<p class=legend>"))]
    assert "box colours" in legend and "class colours" not in legend and "text labels" in legend
    assert len(page) < 3_000_000, len(page)


def test_segmentation_legend_is_class_colours_only():
    lg = report.legend("segmentation", LABELS)
    assert "class colours" in lg and "box colours" not in lg and "expected" not in lg
    # the legend's colour for a class is the one the masks are drawn with, also past the palette's end
    assert f"rgb{report.class_colour(2)}" in lg
    assert report.class_colour(9) == report.class_colour(1) and report.class_colour(1) != report.class_colour(8)
    overlay = pictures._mask_overlay(np.zeros((1, 2, 3), np.uint8), np.array([[9, 2]]))
    assert tuple(overlay[0, 0]) == report.class_colour(9) and tuple(overlay[0, 1]) == report.class_colour(2)


def test_small_set_shows_every_image_in_full(tmp_path):
    gs, first = detection_set(8, failing={2})
    checks, images, m = golden_checks(model("detection"), gs, first)
    page = open(report.write(str(tmp_path), verdict_for(checks, m), images, gx_docs=None)["index"]).read()
    assert len(re.findall(r"<div class='card", page)) == 8 and "<figure class='thumb" not in page
    assert page.index("data-image='0002.png'") < page.index("data-image='0000.png'")   # failed first


def test_report_without_answers(tmp_path):
    v = verdict_for([{"name": "served: model loads and answers", "passed": False, "detail": "boom", "numbers": {}}], {})
    page = open(report.write(str(tmp_path), v, [], gx_docs=None)["index"]).read()
    assert "FAILED" in page and "metrics were not measured" in page and "No golden answers" in page


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_full_and_thumb_pictures_render(task):
    img = np.random.default_rng(0).integers(0, 255, (600, 400, 3), dtype=np.uint8)   # a large photo
    if task == "segmentation":
        mask = np.zeros((600, 400), np.int32)
        mask[100:300, 50:200] = 2
        pics = report.segmentation_pictures(img, mask, mask)
        thumb = report.mask_thumb(img, mask)
    else:
        pics = report.classification_pictures(img, 1, np.array([0.1, 0.8, 0.1]), LABELS)
        thumb = report.image_thumb(img)
    assert all(src.startswith("data:image/") for _, src in pics) and thumb.startswith("data:image/jpeg;base64,")
    assert len(thumb) < 20_000 and all(len(src) < 400_000 for _, src in pics)


def test_a_prediction_is_drawn_in_the_colour_of_what_the_check_made_of_it():
    """Matched -> MATCHED; matched nothing and counted (score >= fp_min_score) -> FALSE_POSITIVE;
    matched nothing below fp_min_score (the check ignores it) -> UNCOUNTED, never MATCHED."""
    import numpy as np
    from PIL import Image

    from validation.expectations import detection
    exp = {"boxes": [[0.1, 0.1, 0.5, 0.5]], "classes": [1], "min_score": 0.3, "min_iou": 0.5,
           "fp_min_score": 0.6}
    boxes = [[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.6, 0.05, 0.9, 0.3]]
    scores, classes = [0.9, 0.8, 0.4], [1, 2, 2]
    out = {"detection_boxes": np.array([boxes], np.float32), "detection_scores": np.array([scores], np.float32),
           "detection_classes": np.array([classes], np.int32), "num_detections": np.array([3.0], np.float32)}
    res = detection(out, exp)
    from validation.expectations import match as match_fn
    m = match_fn(exp["boxes"], exp["classes"], boxes, scores, classes, min_iou=0.5, min_score=0.3)
    m.false_positives = [i for i in m.false_positives if scores[i] >= 0.6]
    assert not res["passed"]  # the confident box at 0.8 is a false positive
    matched = {p for p, _, _ in m.pairs}
    assert [report.box_colour(i, matched, set(m.false_positives)) for i in range(3)] == \
        [report.MATCHED, report.FALSE_POSITIVE, report.UNCOUNTED]
    im = Image.new("RGB", (100, 100))
    pictures._draw_boxes(im, 100, exp, (np.array(boxes), np.array(scores), np.array(classes)), m, {}, text=False,
                       width=1)
    px = im.load()
    assert px[5, 75] == report.UNCOUNTED and px[60, 75] == report.FALSE_POSITIVE  # left edges of boxes 2, 1
    assert "unmatched below fp_min_score" in report.box_legend()
