"""The regression gate's comparisons and decision on hand-computed cases."""
from validation import regression as r

CLASSES = {0: "square", 1: "circle", 2: "triangle"}


def cls_image(name, passed, top, p_label):
    return {"image": name, "passed": passed, "numbers": {"label": 1, "top_k": [top], "p_label": p_label}}


def det_image(name, passed, found, fp, mean_iou, expected=2):
    return {"image": name, "passed": passed,
            "numbers": {"expected": expected, "found": found, "false_positives": fp, "mean_iou": mean_iou}}


def test_classification_flip_is_a_regression_with_the_label_change():
    c = r.image_change("classification", cls_image("a", True, 1, 0.9), cls_image("a", False, 2, 0.3), CLASSES)
    assert c["regressed"] and not c["fixed"] and c["changed"]
    assert c["summary"] == ("REGRESSED (baseline passed, candidate fails); label circle -> triangle; "
                            "p(label) 0.90 -> 0.30 (-0.60)")
    assert c["severity"] == 0.6


def test_same_answer_is_no_change():
    c = r.image_change("classification", cls_image("a", True, 1, 0.9), cls_image("a", True, 1, 0.9), CLASSES)
    assert not c["regressed"] and not c["fixed"] and not c["changed"] and c["severity"] == 0.0


def test_detection_change_counts_found_false_positives_and_iou():
    c = r.image_change("detection", det_image("a", True, 2, 0, 0.9), det_image("a", False, 1, 1, 0.8))
    assert c["summary"] == ("REGRESSED (baseline passed, candidate fails); found 2 -> 1 of 2; "
                            "false positives 0 -> 1; mean IoU 0.90 -> 0.80")
    assert c["severity"] == 1.6  # 1 object + 0.5 per false positive + 0.1 IoU


def test_segmentation_fixed_image():
    b = {"image": "a", "passed": False, "numbers": {"miou": 0.4}}
    c = {"image": "a", "passed": True, "numbers": {"miou": 0.7}}
    ch = r.image_change("segmentation", b, c)
    assert ch["fixed"] and not ch["regressed"]
    assert ch["summary"] == "fixed (baseline failed, candidate passes); mIoU 0.40 -> 0.70 (+0.30)"


def test_compare_images_rate_and_worst_order():
    base = [cls_image(n, True, 1, 0.9) for n in "abcd"]
    cand = [cls_image("a", True, 1, 0.9), cls_image("b", False, 0, 0.4), cls_image("c", False, 2, 0.1),
            cls_image("d", True, 1, 0.8)]
    changes, flips, worst = r.compare_images("classification", base, cand, CLASSES)
    assert flips == {"images": 4, "regressed": 2, "fixed": 0, "changed": 2, "rate": 0.5}
    assert [w["image"] for w in worst] == ["c", "b"]  # p(label) dropped 0.8, then 0.5
    assert changes["d"]["summary"] == "p(label) 0.90 -> 0.80 (-0.10)"


def test_metric_rows_and_drop_over_the_limit_blocks():
    rows = r.compare_metrics("detection", {"ap50": 1.0, "map": 0.92, "precision": 1.0, "recall": 1.0},
                             {"ap50": 1.0, "map": 0.82, "precision": 0.99, "recall": 1.0})
    assert [x["name"] for x in rows] == ["ap50", "map", "precision", "recall"]
    assert rows[1]["delta"] == -0.1 and rows[1]["gated"] and not rows[2]["gated"]
    d = r.decide(task="detection", metrics=rows, flips={"images": 2, "regressed": 0, "rate": 0.0},
                 latency_ms={}, memory_mb={}, signatures={"compatible": True}, lim=r.limits(None))
    assert d["status"] == "blocked"
    assert d["failures"] == ["map 0.920 -> 0.820 (-0.100; a drop over 0.02)"]
    assert rows[1]["regressed"] and not rows[2]["regressed"]  # precision is shown, not gated


def test_drop_within_the_limit_passes_and_equal_to_the_limit_passes():
    rows = r.compare_metrics("classification", {"accuracy": 1.0}, {"accuracy": 0.98})
    d = r.decide(task="classification", metrics=rows, flips={"images": 50, "regressed": 0, "rate": 0.0},
                 latency_ms={}, memory_mb={}, signatures={"compatible": True}, lim=r.limits(None))
    assert d["status"] == "passed" and d["failures"] == []


def test_any_regressed_image_blocks_by_default_but_a_configured_rate_allows_it():
    rows = r.compare_metrics("classification", {"accuracy": 1.0}, {"accuracy": 0.99})
    flips = {"images": 100, "regressed": 1, "rate": 0.01}
    blocked = r.decide(task="classification", metrics=rows, flips=flips, latency_ms={}, memory_mb={},
                       signatures={"compatible": True}, lim=r.limits(None))
    assert blocked["status"] == "blocked" and "1 of 100 golden images regressed" in blocked["failures"][0]
    ok = r.decide(task="classification", metrics=rows, flips=flips, latency_ms={}, memory_mb={},
                  signatures={"compatible": True}, lim=r.limits({"max_flip_rate": 0.02}))
    assert ok["status"] == "passed"


def test_latency_ratio_from_interleaved_samples():
    lat = r.latency({"REST s": [10.0, 10.0, 10.0, 20.0]}, {"REST s": [20.0, 20.0, 20.0, 40.0]})
    assert lat["REST s"]["baseline"]["p50"] == 10.0 and lat["REST s"]["candidate"]["p50"] == 20.0
    assert lat["REST s"]["ratio_p50"] == 2.0
    d = r.decide(task="classification", metrics=[], flips={}, latency_ms=lat, memory_mb={},
                 signatures={"compatible": True}, lim=r.limits(None))
    assert d["failures"] == ["latency p50 candidate/baseline over 1.5: REST s 2.00x"]


def test_memory_footprints_ratio_and_limit():
    m = r.memory(300.0, 340.0, 440.0, limit_mb=400)
    assert m["baseline"] == 40.0 and m["candidate"] == 100.0 and m["ratio"] == 2.5
    d = r.decide(task="classification", metrics=[], flips={}, latency_ms={}, memory_mb=m,
                 signatures={"compatible": True}, lim=r.limits({"serving_memory_limit_mb": 400}))
    assert d["failures"] == [
        "memory: the candidate needs 100 MB, 2.50x the baseline's 40 MB (limit 2.0x)",
        "memory: baseline and candidate together take 440 MB, over serving_memory_limit_mb 400 (TF Serving "
        "loads the new version before it unloads the old one)"]
    assert r.memory(None, 340.0, 440.0)["limit_mb"] is None and "ratio" not in r.memory(None, 340.0, 440.0)


def test_signature_break_blocks_and_an_accepted_reason_turns_blocked_into_accepted():
    sig = {"compatible": False, "breaking": ["signature 'x' removed"]}
    d = r.decide(task="classification", metrics=[], flips={}, latency_ms={}, memory_mb={}, signatures=sig,
                 lim=r.limits(None))
    assert d["status"] == "blocked" and d["failures"] == ["signatures: signature 'x' removed"]
    a = r.decide(task="classification", metrics=[], flips={}, latency_ms={}, memory_mb={}, signatures=sig,
                 lim=r.limits(None), accepted_reason="clients moved to y (JIRA-1)")
    assert a["status"] == "accepted"
    assert a["summary"] == "regression accepted (clients moved to y (JIRA-1)): signatures: signature 'x' removed"


def test_limits_defaults_and_overrides():
    assert r.limits(None) == r.DEFAULTS
    assert r.limits({"max_metric_drop": 0.05})["max_metric_drop"] == 0.05


def test_a_latency_ratio_within_a_millisecond_is_noise_not_a_regression():
    lat = r.latency({"gRPC s": [0.8] * 4}, {"gRPC s": [1.6] * 4})
    assert lat["gRPC s"]["ratio_p50"] == 2.0
    d = r.decide(task="classification", metrics=[], flips={}, latency_ms=lat, memory_mb={},
                 signatures={"compatible": True}, lim=r.limits(None))
    assert d["status"] == "passed"
