"""The report with a baseline (issue 12): the "Baseline vN vs candidate" section (metric deltas
coloured by direction, flips, latency, memory, load times, signatures), the golden images as
baseline/candidate pairs with the regressed ones first, "no baseline" for a first release, and old
verdicts (no "regression") unchanged. The verdicts are built by hand in the shape validate.py writes;
the pictures are real (golden_checks on in-memory detection answers)."""
import re

import pytest

from tests.unit.validation.test_report import LABELS, detection_set, model, verdict_for
from validation import report
from validation.validate import golden_checks

LIMITS = {"max_metric_drop": 0.02, "max_flip_rate": 0.0, "max_latency_ratio": 1.5, "max_memory_ratio": 2.0,
          "serving_memory_limit_mb": None}


def regression(status="blocked", **kw):
    reg = {
        "status": status,
        "summary": "blocked: recall 1.000 -> 0.900 (-0.100 > 0.02); 3 of 40 images regressed (rate 0.075 > 0.0)",
        "baseline": {"version": 3, "source": "registry", "checkpoint": "s3://training/m/checkpoints/ckpt-1500"},
        "accepted_reason": None,
        "failures": ["recall 1 -> 0.9 (-0.1 > max_metric_drop 0.02)", "3 of 40 images regressed (rate 0.075 > 0.0)"],
        "limits": dict(LIMITS),
        "metrics": [
            {"name": "recall", "baseline": 1.0, "candidate": 0.9, "delta": -0.1, "higher_is_better": True,
             "regressed": True},
            {"name": "precision", "baseline": 0.8, "candidate": 0.81, "delta": 0.01, "higher_is_better": True,
             "regressed": False},
            {"name": "false_positives", "baseline": 2, "candidate": 5, "delta": 3, "higher_is_better": False,
             "regressed": False},
            {"name": "ap50", "baseline": 0.9, "candidate": 0.9, "delta": 0.0, "higher_is_better": True,
             "regressed": False},
            {"name": "detections", "baseline": 40, "candidate": 44, "delta": 4, "higher_is_better": None,
             "regressed": False},
        ],
        "flips": {"images": 40, "regressed": 3, "fixed": 1, "changed": 4, "rate": 0.075},
        "latency_ms": {"REST serving_default": {"baseline": {"p50": 4.1, "p95": 6.0, "n": 20},
                                                "candidate": {"p50": 4.3, "p95": 9.6, "n": 20},
                                                "ratio_p50": 1.05, "ratio_p95": 1.6}},
        "memory_mb": {"server": 310.0, "with_baseline": 350.2, "with_both": 391.0, "baseline": 40.2,
                      "candidate": 40.8, "ratio": 1.01, "limit_mb": None},
        "load_seconds": {"baseline": 1.2, "candidate": 1.3},
        "signatures": {"compatible": False, "breaking": ["serving_default: output detection_masks removed"],
                       "additions": ["signature serving_bytes added"]},
        "worst": [{"image": "0021.png", "summary": "object 1 missed; IoU 0.91 -> 0.00"},
                  {"image": "0007.png", "summary": "precision 1.00 -> 0.50 (1 false box)"},
                  {"image": "0013.png", "summary": "precision 1.00 -> 0.50 (1 false box)"}],
    }
    reg.update(kw)
    return reg


def paired_images(n, *, cand_failing, base_failing, also_regressed=()):
    """Candidate and baseline answers for the same n images, joined as validate.py joins them:
    an image regressed when the baseline passed and the candidate fails (or listed in
    also_regressed: worse but still passing), fixed the other way round."""
    gs, cand = detection_set(n, failing=cand_failing)
    _, base = detection_set(n, failing=base_failing)
    _, c_images, c_metrics = golden_checks(model("detection"), gs, cand)
    _, b_images, _ = golden_checks(model("detection"), gs, base)
    b_by = {p["image"]: p for p in b_images}
    for p in c_images:
        b = b_by[p["image"]]
        p["baseline"] = {k: b[k] for k in ("passed", "detail", "numbers", "caption", "full", "thumb")}
        regressed = (b["passed"] and not p["passed"]) or p["image"] in also_regressed
        fixed = not b["passed"] and p["passed"]
        p["change"] = {"regressed": regressed, "fixed": fixed,
                       "summary": f"{p['image']}: {'worse' if regressed else 'better' if fixed else 'same'}"}
    return c_images, c_metrics


def page_for(tmp_path, reg, images, metrics, **kw):
    v = verdict_for([{"name": "regression: gate", "passed": reg is None or reg["status"] != "blocked",
                      "detail": (reg or {}).get("summary", ""), "numbers": {}}], metrics)
    if reg is not None:
        v["regression"] = reg
    paths = report.write(str(tmp_path), v, images, gx_docs=None, legend=report.legend("detection", LABELS), **kw)
    return open(paths["index"]).read()


def section(page, start, end):
    i = page.index(start)
    return page[i:page.index(end, i)]


@pytest.mark.parametrize("delta,higher,expected", [
    (-0.1, True, "worse"), (0.1, True, "better"), (0.1, False, "worse"), (-2, False, "better"),
    (0.0, True, "same"), (1e-12, True, "same"), (4, None, "same"), (None, True, "same"),
])
def test_delta_colour_follows_higher_is_better(delta, higher, expected):
    assert report.delta_class(delta, higher) == expected


def test_blocked_page_opens_with_the_comparison_table(tmp_path):
    images, metrics = paired_images(40, cand_failing={7, 13, 21}, base_failing={30})
    page = page_for(tmp_path, regression(), images, metrics)
    # right after the verdict banner and reason, before the candidate's own metrics
    assert (page.index("class=\"verdict") < page.index("<h2 id=regression>Baseline v3 vs candidate</h2>")
            < page.index("<h2>Golden set metrics</h2>"))
    top = section(page, "<h2 id=regression>", "<h2>Golden set metrics</h2>")
    assert "<p class='gate fail'>BLOCKED by the regression gate</p>" in top
    assert "<li>recall 1 -&gt; 0.9 (-0.1 &gt; max_metric_drop 0.02)</li>" in top
    assert "s3://training/m/checkpoints/ckpt-1500" in top and "registry" in top
    rows = dict(re.findall(r"<tr data-metric='([^']+)'>.*?<td class='delta ([^']+)'>", top))
    assert rows == {"recall": "worse regressed", "precision": "better", "false_positives": "worse",
                    "ap50": "same", "detections": "same"}
    cells = re.findall(r"<tr data-metric='([^']+)'><td>.*?</td><td>([^<]*)</td><td><b>([^<]*)</b></td>"
                       r"<td class='delta [^']+'>([^<]*)</td>", top)
    assert cells == [("recall", "1", "0.9", "-0.1 (beyond max_metric_drop 0.02)"),
                     ("precision", "0.8", "0.81", "+0.01"), ("false_positives", "2", "5", "+3"),
                     ("ap50", "0.9", "0.9", "0"), ("detections", "40", "44", "+4")]
    # flips, latency (p95 ratio over 1.5 in red, p50 not), memory, load, signatures
    flips = section(top, "<table class=flips>", "</table>")
    assert "<td class='worse'>3</td><td class='better'>1</td><td>4</td><td class='worse'>0.075 &gt; 0</td>" in flips
    lat = section(top, "<table class=latency>", "</table>")
    assert "<td>4.1</td><td>6</td><td>4.3</td><td>9.6</td><td class='same'>1.05x</td><td class='worse'>1.60x &gt; 1.5</td>" in lat
    mem = section(top, "<table class=memory>", "</table>")
    for text in ("310.0 MB", "350.2 MB", "391.0 MB", "40.2 MB", "40.8 MB", "<td class='same'>1.01x</td>", "not set"):
        assert text in mem, text
    assert "Load time: baseline 1.2 s, candidate 1.3 s." in top
    assert "NOT compatible with the baseline" in top
    assert "<ul class='fail breaking'><li>serving_default: output detection_masks removed</li></ul>" in top
    assert "<ul class=additions><li>signature serving_bytes added</li></ul>" in top


def test_regressed_images_come_first_with_both_pictures(tmp_path):
    # 0021, 0007, 0013 fail only with the candidate (regressed); 0030 fails with both; 0002 is worse
    # but passing (also regressed); 0035 fails only with the baseline (fixed)
    images, metrics = paired_images(40, cand_failing={7, 13, 21, 30}, base_failing={30, 35},
                                    also_regressed={"0002.png"})
    page = page_for(tmp_path, regression(), images, metrics)
    assert "<h2>Golden images, baseline v3 vs candidate</h2>" in page
    cards = re.findall(r"<div class='card pair( regressed| failed)?' data-image='([^']+)'", page)
    # regressed first in the gate's "worst" order, then the rest of the regressed; then failed ones
    assert [n for _, n in cards[:5]] == ["0021.png", "0007.png", "0013.png", "0002.png", "0030.png"]
    assert [c for c, _ in cards[:5]] == [" regressed"] * 4 + [" failed"]
    assert len(cards) == 5 + report.FULL_PASSING
    assert page.index("id=regressed") < page.index("id=failed") < page.index("id=worst") < page.index("id=grid")
    for name in ("0021.png", "0002.png"):
        card = section(page, f"data-image='{name}'", "<div class='card pair")
        sides = re.findall(r"<div class='side (baseline|candidate)'><div><b>([^<]+)</b> <span class='(pass|fail)'>", card)
        assert [(s, label) for s, label, _ in sides] == [("baseline", "baseline v3"), ("candidate", "candidate")]
        assert card.count("<img ") == 2 and all(s.startswith("data:image/") for s in re.findall(r"src='([^']+)'", card))
        assert card.count("<table class=nums>") == 2 and "REGRESSED" in card and f"{name}: worse" in card
    assert [p for _, _, p in re.findall(r"<div class='side (baseline|candidate)'><div><b>([^<]+)</b> "
                                        r"<span class='(pass|fail)'>",
                                        section(page, "data-image='0021.png'", "<div class='card pair"))] == \
        ["pass", "fail"]
    # every other image is a thumbnail pair (baseline thumb + candidate thumb, both captions)
    thumbs = re.findall(r"<figure class='thumb pair( fixed| failed| regressed)?' data-image='([^']+)' id='[^']+'>"
                        r"<div class=imgs>(.*?)</div><figcaption>(.*?)</figcaption>", page)
    assert len(thumbs) == 40 - len(cards)
    assert {n for _, n in cards} | {n for _, n, _, _ in thumbs} == {f"{i:04d}.png" for i in range(40)}
    assert all(imgs.count("<img ") == 2 for _, _, imgs, _ in thumbs)
    fixed = [t for t in thumbs if t[1] == "0035.png"]
    assert fixed and fixed[0][0] == " fixed" and "FIXED" in fixed[0][3]
    assert all("v3: " in cap and "candidate: " in cap for _, _, _, cap in thumbs)
    # self-contained: nothing fetched, no script, the CSP meta in the page
    assert "<script" not in page.lower() and "default-src 'none'" in page
    srcs = re.findall(r"\bsrc='([^']*)'", page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert all(not h.startswith(("http:", "https:", "//")) for h in re.findall(r"href=['\"]([^'\"]*)", page))


def test_500_images_keep_the_full_card_budget(tmp_path):
    cand_failing = set(range(3, 500, 10))          # 50 fail with the candidate
    base_failing = set(range(3, 500, 20))          # 25 of them fail with the baseline too
    images, metrics = paired_images(500, cand_failing=cand_failing, base_failing=base_failing)
    reg = regression(worst=[{"image": f"{i:04d}.png", "summary": "worse"} for i in sorted(cand_failing - base_failing)[:10]])
    page = page_for(tmp_path, reg, images, metrics)
    cards = re.findall(r"<div class='card pair( regressed| failed)?' data-image='([^']+)'", page)
    assert len(cards) == report.FULL_FAILED + report.FULL_PASSING
    assert [c for c, _ in cards[:report.FULL_FAILED]] == [" regressed"] * report.FULL_FAILED  # 25 regressed, 24 fit
    thumbs = re.findall(r"<figure class='thumb pair( fixed| failed| regressed)?' data-image='([^']+)'", page)
    assert len(thumbs) == 500 - len(cards)
    assert [c for c, _ in thumbs[:26]] == [" regressed"] + [" failed"] * 25   # what did not fit leads the grid
    # pairs carry two pictures where the report without a baseline carries one: at most about twice
    # its size (random-noise pictures, JPEG's worst case; the demo's golden thumbnails are ~half)
    single = page_for(tmp_path / "single", None, [{k: v for k, v in p.items() if k not in ("baseline", "change")}
                                                   for p in images], metrics)
    print(f"\n500 paired images: report {len(page) / 1e6:.2f} MB (without a baseline {len(single) / 1e6:.2f} MB)")
    assert len(page) < 2.1 * len(single) and len(page) < 8_000_000, (len(page), len(single))


def test_accepted_regression_shows_the_reason(tmp_path):
    images, metrics = paired_images(6, cand_failing={2}, base_failing=set())
    reg = regression("accepted", accepted_reason="new label map; ticket REL-42", signatures={
        "compatible": True, "breaking": [], "additions": ["output detection_masks added"]})
    page = page_for(tmp_path, reg, images, metrics)
    top = section(page, "<h2 id=regression>", "<h2>Golden set metrics</h2>")
    assert "REGRESSION ACCEPTED: new label map; ticket REL-42" in top and "BLOCKED" not in top
    assert "<ul class=accepted><li>recall 1 -&gt; 0.9" in top
    assert "compatible with the baseline, adds:" in top and "breaking" not in top


def test_passed_gate(tmp_path):
    images, metrics = paired_images(4, cand_failing=set(), base_failing=set())
    reg = regression("passed", summary="passed: no metric dropped, 0 of 4 images regressed", failures=[],
                     worst=[], flips={"images": 4, "regressed": 0, "fixed": 0, "changed": 0, "rate": 0.0})
    page = page_for(tmp_path, reg, images, metrics)
    assert "<p class='gate pass'>PASSED the regression gate</p><p>passed: no metric dropped" in page
    assert "<td class='same'>0</td><td class='same'>0</td><td>0</td><td class='same'>0 (limit 0)</td>" in page
    assert "id=regressed" not in page and len(re.findall(r"<div class='card pair", page)) == 4


def test_first_release_says_no_baseline_and_images_stay_as_before(tmp_path):
    gs, first = detection_set(8, failing={2})
    _, images, metrics = golden_checks(model("detection"), gs, first)
    reg = {"status": "no baseline", "summary": "no baseline", "baseline": None, "limits": dict(LIMITS)}
    page = page_for(tmp_path, reg, images, metrics)
    assert "<p class=regression id=regression>No baseline: first release of this model, the regression gate passes" in page
    assert "Baseline v" not in page and "class='card pair" not in page and "<h2>Golden images</h2>" in page
    assert len(re.findall(r"<div class='card( failed)?' data-image=", page)) == 8


def test_old_verdict_without_regression_renders_as_before(tmp_path):
    gs, first = detection_set(8, failing={2})
    _, images, metrics = golden_checks(model("detection"), gs, first)
    page = page_for(tmp_path, None, images, metrics)
    assert "regression gate" not in page.lower().replace("regression: gate", "")
    assert "id=regression" not in page and "class='card pair" not in page
    assert page.index("data-image='0002.png'") < page.index("data-image='0000.png'")


def test_absolute_failures_come_before_the_gate(tmp_path):
    """A candidate that also fails absolute checks (e.g. random weights): its own failures are the
    primary cause, so the gate's section follows the checks instead of opening the page."""
    images, metrics = paired_images(40, cand_failing={7, 13, 21}, base_failing={30})
    v = verdict_for([{"name": "golden: 0007.png", "passed": False, "detail": "object 1 missed", "numbers": {}},
                     {"name": "regression: gate", "passed": False, "detail": "blocked", "numbers": {}}], metrics)
    v["regression"] = regression()
    page = open(report.write(str(tmp_path), v, images, gx_docs=None,
                             legend=report.legend("detection", LABELS))["index"]).read()
    assert (page.index("<h2>Golden set metrics</h2>") < page.index("<h2>Checks (failed first)</h2>")
            < page.index("<h2 id=regression>Baseline v3 vs candidate</h2>"))
