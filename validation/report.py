"""The validation report: ``verdict.json`` (every check, the numbers, the set metrics) and
``index.html``, the page a person reads first. It stays usable with hundreds of golden images:

- top: verdict, reason, the golden-set metrics (with the model's floors), the checks (per-image
  golden checks folded: failed ones listed, passing ones counted);
- golden images: the failed ones first, worst first, then the worst passing ones, as full cards
  (pictures with each image's numbers beside them), at most ``FULL_FAILED`` + ``FULL_PASSING``;
  every other image as a small thumbnail in a grid (failed ones first, then worst first);
- latency; a link to the great-expectations results in ``gx/``.

With a baseline (``verdict["regression"]``, see ``validation/regression.py``) the page opens with
"Baseline vN vs candidate": the gate's status, set metrics baseline | candidate | delta (coloured
by ``higher_is_better``), flips, latency, memory, load times, signature compatibility. The golden
images are then pairs: the regressed ones first as cards with the baseline's and the candidate's
pictures side by side, then failed and worst passing ones, every other image as a thumbnail pair.
The budget of full cards is the same as without a baseline.

One self-contained file: pictures are inline data URIs, styles inline, no scripts, nothing fetched.
The great-expectations results get the same treatment (``gx/index.html``, written here from GX's
own JSON results, kept beside it as ``gx/results.json``): GX's Data Docs pull Bootstrap, jQuery,
Vega and fonts from CDNs and run scripts, which the report endpoint's Content-Security-Policy
forbids, so they are not written.
Pictures are drawn here, and only for the images shown: a per-image entry carries ``full`` and
``thumb`` callables (see ``validation.validate.golden_checks``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np

FULL_FAILED = 24    # failed images shown with full pictures (the rest of them go to the grid, marked)
FULL_PASSING = 8    # worst passing images shown with full pictures
FULL_SIZE, THUMB_SIZE = 256, 96
# the page opened from a file (not through the report endpoint, which sends the same as a header)
# still fetches nothing and runs nothing
CSP_META = ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            'style-src \'unsafe-inline\'; base-uri \'none\'; form-action \'none\'">')
GOLDEN_ROWS = 10    # failed golden images listed in the checks table (all of them are in verdict.json)

# class colours (segmentation masks only); 0 = background (the dimmed image)
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.uint8)
# box colours (detection only): what a box is, never which class (class names are written as text)
EXPECTED, MISSED, MATCHED, FALSE_POSITIVE = (0, 200, 0), (255, 0, 255), (255, 140, 0), (220, 0, 0)
# a prediction that matched nothing but scored below the image's fp_min_score: drawn, not counted
UNCOUNTED = (150, 150, 150)


def class_colour(c: int) -> tuple[int, int, int]:
    """The palette colour of class id c > 0 (wraps around after 8 classes)."""
    return tuple(int(v) for v in PALETTE[1 + (int(c) - 1) % (len(PALETTE) - 1)])


# --- pictures ----------------------------------------------------------------------------------

def _encode(im, *, photo_ok: bool = True) -> str:
    """Small pictures as PNG (pixel-exact); large ones as JPEG so a report of many stays small."""
    buf = io.BytesIO()
    if photo_ok and im.width * im.height > FULL_SIZE * FULL_SIZE:
        im.convert("RGB").save(buf, format="JPEG", quality=88)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    im.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb_src(im) -> str:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fit(image: np.ndarray, size: int, *, nearest: bool = False):
    """(PIL image, scale): small images enlarged by a whole factor up to ``size``, large ones shrunk to it."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(image))
    side = max(im.width, im.height)
    scale = max(1, size // side) if side <= size else size / side
    if scale == 1:
        return im, 1
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    return im.resize((w, h), Image.NEAREST if nearest or scale > 1 else Image.BILINEAR), scale


def _draw_boxes(im, scale, expect, dets, match, labels, *, text: bool, width: int):
    from PIL import ImageDraw
    d = ImageDraw.Draw(im)
    boxes, scores, classes = dets
    missed = set(match.missed) if match is not None else set()

    def label(xy, text, colour):  # on a dark patch, readable over any image
        x, y = max(0, xy[0]), max(0, xy[1])
        d.rectangle(d.textbbox((x, y), text), fill=(0, 0, 0))
        d.text((x, y), text, fill=colour)

    def rect(box):
        y0, x0, y1, x1 = (float(v) * scale for v in box)
        return [x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)]  # max edges are exclusive
    for j, (box, cls) in enumerate(zip(expect.get("boxes", []), expect.get("classes", []))):
        colour = MISSED if j in missed else EXPECTED
        r = rect(box)
        d.rectangle(r, outline=colour, width=width + 1)
        if text:
            label((r[0] + 2, r[3] - 12), f"{labels.get(cls, cls)}", colour)
    if match is None:
        return
    false, matched = set(match.false_positives), {p for p, _, _ in match.pairs}
    for i in match.counted:  # predictions with score >= min_score
        b = boxes[i]
        if not np.all(np.isfinite(b)):
            continue
        colour = box_colour(i, matched, false)
        r = rect(b)
        d.rectangle(r, outline=colour, width=width)
        if text:
            label((r[0] + 2, r[1] + 2), f"{labels.get(int(classes[i]), int(classes[i]))} {scores[i]:.2f}", colour)


def box_colour(i: int, matched: set, false: set) -> tuple[int, int, int]:
    """What prediction i is: matched an expected object, a counted false positive, or neither (it
    matched nothing but scored below fp_min_score, so the check does not count it)."""
    return MATCHED if i in matched else FALSE_POSITIVE if i in false else UNCOUNTED


def detection_pictures(image, expect, dets, match, labels) -> list[tuple[str, str]]:
    im, scale = _fit(image, FULL_SIZE)
    im = im.convert("RGB")
    _draw_boxes(im, scale, expect, dets, match, labels, text=True, width=2)
    return [(f"expected and predicted boxes (score >= {expect.get('min_score')})", _encode(im))]


def detection_thumb(image, expect, dets, match, labels) -> str:
    im, scale = _fit(image, THUMB_SIZE)
    im = im.convert("RGB")
    _draw_boxes(im, scale, expect, dets, match, labels, text=False, width=1)
    return _thumb_src(im)


def _mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class ids in solid palette colours over the dimmed image (same colour = same class)."""
    out = (np.asarray(image) * 0.35).astype(np.uint8)
    fg = mask > 0
    out[fg] = PALETTE[1 + (mask[fg].astype(np.int64) - 1) % (len(PALETTE) - 1)]
    return out


def mask_picture(image: np.ndarray, mask: np.ndarray) -> str:
    return _encode(_fit(_mask_overlay(image, mask), 192, nearest=True)[0])


def image_picture(image: np.ndarray) -> str:
    return _encode(_fit(image, 128)[0])


def segmentation_pictures(image, mask, pred) -> list[tuple[str, str]]:
    return [("image", _encode(_fit(image, 192)[0])), ("expected mask", mask_picture(image, mask)),
            ("predicted mask", mask_picture(image, pred))]


def mask_thumb(image, pred) -> str:
    return _thumb_src(_fit(_mask_overlay(image, pred), THUMB_SIZE, nearest=True)[0])


def classification_pictures(image, label, scores, labels) -> list[tuple[str, str]]:
    top = int(np.argmax(scores))
    return [(f"expected {labels.get(label, label)}; predicted {labels.get(top, top)}", image_picture(image))]


def image_thumb(image) -> str:
    return _thumb_src(_fit(image, THUMB_SIZE)[0])


# --- legends -----------------------------------------------------------------------------------

def _swatch(rgb, *, box: bool) -> str:
    style = f"border:3px solid rgb{tuple(rgb)}" if box else f"background:rgb{tuple(rgb)}"
    return f"<span class=sw style='{style}'></span>"


def class_legend(labels: dict) -> str:
    """Segmentation: one colour per class (background is the dimmed image)."""
    return "class colours: " + " ".join(
        f"{_swatch(class_colour(c), box=False)}{html.escape(str(name))}" for c, name in sorted(labels.items()) if c > 0)


def box_legend() -> str:
    """Detection: box colours say what a box is; class names and scores are written beside the boxes."""
    return ("box colours: " + " ".join(f"{_swatch(rgb, box=True)}{what}" for rgb, what in (
        (EXPECTED, "expected, found"), (MISSED, "expected, missed"),
        (MATCHED, "predicted, matched"), (FALSE_POSITIVE, "predicted, false positive"),
        (UNCOUNTED, "predicted, unmatched below fp_min_score (not counted)"))) +
            ". Class names (and scores of predictions) are written as text labels on the boxes; predictions "
            "below the image's min_score are not drawn.")


def legend(task: str | None, labels: dict) -> str:
    if task == "detection":
        return box_legend()
    if task == "segmentation":
        return class_legend(labels)
    return "Each picture is captioned with the expected and the predicted class."


# --- the page ----------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{margin-bottom:4px}.pass{color:#137333}.fail{color:#b3261e}.verdict{font-size:28px;font-weight:700}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top;font-size:13px}th{background:#f4f4f4}tr.failed td{background:#fdecea}
.cards{display:flex;flex-wrap:wrap;gap:14px}.card{border:1px solid #ddd;border-radius:6px;padding:8px;width:fit-content}
.card .detail{width:0;min-width:100%;font-size:12px;color:#555;margin-top:4px}
.card.failed{border-color:#b3261e;border-width:2px}.card .body{display:flex;gap:10px;align-items:flex-start}
.card .pics{display:flex;gap:6px;flex-wrap:wrap}.card figure{margin:0}
.card img{image-rendering:pixelated;display:block}.card table.nums{margin:0}
.card table.nums td{font-size:12px;padding:2px 6px}.small{font-size:12px;color:#555;max-width:640px}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}.thumb{margin:0;width:100px;font-size:10px;color:#555;
border:1px solid #ddd;padding:1px;overflow:hidden}.thumb.failed{border:2px solid #b3261e}
.thumb img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block}
.legend .sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle;box-sizing:border-box}
td.worse{color:#b3261e;background:#fdecea}td.better{color:#137333;background:#e6f4ea}td.same{color:#555}
td.regressed{font-weight:700}.gate{font-size:18px;font-weight:700}.accepted{color:#8a5a00}
.card.pair{max-width:100%;overflow-x:auto}.card.regressed,.thumb.regressed{border-color:#b3261e;border-width:2px}
.card .sides{display:flex;gap:16px;align-items:flex-start}.card .side{border-top:3px solid #ddd;padding-top:4px}
.card .side.baseline{border-top-color:#888}.card .side.candidate{border-top-color:#0b57d0}
.card .side .body{flex-direction:column}.change{font-size:12px;margin-top:4px}
.thumb.pair{width:198px}.thumb.pair .imgs{display:flex;gap:2px}.thumb.fixed{border:2px solid #137333}"""

METRIC_NAMES = {
    "map": "COCO mAP@[.5:.95]", "ap50": "AP@0.5", "ap75": "AP@0.75",
    "precision": "precision (one-to-one, score >= min_score)", "recall": "recall (one-to-one, score >= min_score)",
    "false_positives": "false positives (score >= min_score)", "found": "expected objects found",
    "objects": "expected objects", "detections": "predicted boxes (all scores)",
    "accuracy": "top-1 accuracy", "miou_set": "mean IoU over the set (summed confusion matrix)",
    "miou_per_image_mean": "mean of per-image mIoU", "pixel_accuracy": "pixel accuracy",
    "images": "golden images", "images_failed": "golden images failed",
}
FLOOR_OF = {"map": "min_map", "ap50": "min_ap50", "accuracy": "min_accuracy", "miou_set": "min_miou_set"}
SKIP_METRICS = {"task", "floors", "iou_per_class"}
METRIC_ORDER = ["map", "ap50", "ap75", "precision", "recall", "accuracy", "miou_set", "miou_per_image_mean",
                "pixel_accuracy", "images", "images_failed", "objects", "found", "false_positives", "detections"]


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return "n/a" if v is None else str(v)


def _metrics_html(m: dict) -> str:
    e = html.escape
    if not m:
        return "<p>No golden answers: the set metrics were not measured.</p>"
    floors = m.get("floors") or {}
    rows = []
    for k, v in sorted(m.items(), key=lambda kv: (METRIC_ORDER.index(kv[0]) if kv[0] in METRIC_ORDER else 50)):
        if k in SKIP_METRICS or isinstance(v, dict):
            continue
        name = METRIC_NAMES.get(k) or (f"top-{k[3:-9]} accuracy" if k.startswith("top") and k.endswith("_accuracy") else k)
        floor = floors.get(FLOOR_OF.get(k, ""))
        if floor is None:
            fl = ""
        else:
            ok = v is not None and v >= floor
            fl = f"<span class='{'pass' if ok else 'fail'}'>{'&ge;' if ok else '&lt;'} {e(_num(floor))}</span>"
        rows.append(f"<tr><td>{e(name)}</td><td><b>{e(_num(v))}</b></td><td>{fl}</td></tr>")
    per_class = m.get("iou_per_class") or {}
    extra = ""
    if per_class:
        extra = ("<table><tr><th>class</th><th>IoU over the set</th></tr>" + "".join(
            f"<tr><td>{e(str(c))}</td><td>{e(_num(v))}</td></tr>" for c, v in per_class.items()) + "</table>")
    return (f"<table class=metrics><tr><th>{e(str(m.get('task', '')))} metric</th><th>value</th><th>floor</th></tr>"
            + "".join(rows) + "</table>" + extra)


def _checks_html(checks: list[dict]) -> str:
    e = html.escape
    golden = [c for c in checks if c["name"].startswith("golden: ")]
    other = [c for c in checks if not c["name"].startswith("golden: ")]
    g_failed = [c for c in golden if not c["passed"]]
    shown = sorted(other, key=lambda c: (c["passed"], c["name"]))

    def row(c):
        if c["name"].startswith("golden: "):  # its numbers are in the image's card or thumbnail
            numbers = f"<a href='#img-{e(c['name'][8:])}'>the image</a>"
        else:
            numbers = e(json.dumps(c.get("numbers", {}), default=str))
        return (f"<tr class='{'' if c['passed'] else 'failed'}'><td>{'PASS' if c['passed'] else 'FAIL'}</td>"
                f"<td>{e(c['name'])}</td><td>{e(str(c.get('detail', '')))}</td>"
                f"<td class=small>{numbers}</td></tr>")
    failed_other = [c for c in shown if not c["passed"]]
    rows = "".join(row(c) for c in failed_other + g_failed[:GOLDEN_ROWS] + [c for c in shown if c["passed"]])
    if golden:
        more = (f"; {len(g_failed) - GOLDEN_ROWS} more failed images not listed here"
                if len(g_failed) > GOLDEN_ROWS else "")
        rows += (f"<tr class='{'failed' if g_failed else ''}'><td>{'FAIL' if g_failed else 'PASS'}</td>"
                 f"<td>golden images ({len(golden)})</td><td>{len(golden) - len(g_failed)} passed, "
                 f"{len(g_failed)} failed{more}; each image's numbers are with its pictures below and in "
                 f"verdict.json</td><td></td></tr>")
    return f"<table><tr><th></th><th>check</th><th>detail</th><th>numbers</th></tr>{rows}</table>"


def _nums_html(numbers: dict) -> str:
    e = html.escape
    rows = []
    for k, v in numbers.items():
        if isinstance(v, dict):
            cell = "<br>".join(f"{e(str(a))} {e(_num(b))}" for a, b in v.items())
        else:
            cell = e(v if isinstance(v, str) else _num(v))
        rows.append(f"<tr><td>{e(str(k))}</td><td>{cell}</td></tr>")
    return f"<table class=nums>{''.join(rows)}</table>"


def _card(p: dict) -> str:
    e = html.escape
    figs = "".join(f"<figure><figcaption class=small>{e(label)}</figcaption><img alt='{e(label)}' src='{src}'></figure>"
                   for label, src in p["full"]())
    cls = "" if p["passed"] else " failed"
    return (f"<div class='card{cls}' data-image='{e(p['image'])}' id='img-{e(p['image'])}'><div><b>{e(p['image'])}</b> "
            f"<span class='{'pass' if p['passed'] else 'fail'}'>{'PASS' if p['passed'] else 'FAIL'}</span></div>"
            f"<div class=body><div class=pics>{figs}</div>{_nums_html(p.get('numbers') or {})}</div>"
            f"<div class=detail>{e(p['detail'])}</div></div>")


def _thumb(p: dict) -> str:
    e = html.escape
    cls = "" if p["passed"] else " failed"
    status = "PASS" if p["passed"] else "FAIL"
    return (f"<figure class='thumb{cls}' data-image='{e(p['image'])}' id='img-{e(p['image'])}'><img alt='{e(p['image'])}' "
            f"title='{e(p['image'])} {status}: {e(p['detail'])}' src='{p['thumb']()}'>"
            f"<figcaption>{e(p['image'])}<br>{e(p.get('caption', ''))}</figcaption></figure>")


def order(images: list[dict], *, full_failed: int = FULL_FAILED, full_passing: int = FULL_PASSING):
    """(failed in full, worst passing in full, the rest for the grid): failed first, worst first."""
    def key(p):
        return (tuple(p.get("rank") or ()), p["image"])
    failed = sorted((p for p in images if not p["passed"]), key=key)
    passing = sorted((p for p in images if p["passed"]), key=key)
    return failed[:full_failed], passing[:full_passing], failed[full_failed:] + passing[full_passing:]


# --- baseline vs candidate (the regression gate) ------------------------------------------------

NO_BASELINE = "No baseline: first release of this model, the regression gate passes"
SAME = 1e-9  # |delta| below this is "unchanged"


def delta_class(delta, higher_is_better) -> str:
    """The colour class of a metric delta: ``worse`` (red), ``better`` (green) or ``same`` (neutral).
    ``higher_is_better`` None (a count with no direction) is always neutral."""
    if delta is None or higher_is_better is None or abs(delta) < SAME:
        return "same"
    return "better" if (delta > 0) == bool(higher_is_better) else "worse"


def _signed(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return ("+" if v > 0 else "") + _num(v)
    return f"{v:+d}" if isinstance(v, int) else str(v)


def _ratio(v, limit) -> str:
    """A ratio cell, red when it is over its limit."""
    if v is None:
        return "<td>n/a</td>"
    over = limit is not None and v > limit
    return f"<td class='{'worse' if over else 'same'}'>{v:.2f}x{' &gt; ' + _num(float(limit)) if over else ''}</td>"


def _regression_metrics(rows: list[dict], limit) -> str:
    e = html.escape
    if not rows:
        return "<p>No set metrics to compare (the candidate or the baseline gave no golden answers).</p>"
    out = []
    for r in rows:
        delta = r.get("delta")
        if delta is None and isinstance(r.get("baseline"), (int, float)) and isinstance(r.get("candidate"), (int, float)):
            delta = r["candidate"] - r["baseline"]
        cls = delta_class(delta, r.get("higher_is_better"))
        mark = ""
        if r.get("regressed"):
            cls += " regressed"
            mark = f" (beyond max_metric_drop {e(_num(limit))})" if limit is not None else " (regressed)"
        name = METRIC_NAMES.get(r["name"], r["name"])
        direction = {True: "higher is better", False: "lower is better"}.get(r.get("higher_is_better"), "")
        out.append(f"<tr data-metric='{e(r['name'])}'><td>{e(name)}<br><span class=small>{direction}</span></td>"
                   f"<td>{e(_num(r.get('baseline')))}</td><td><b>{e(_num(r.get('candidate')))}</b></td>"
                   f"<td class='delta {cls}'>{e(_signed(delta))}{mark}</td></tr>")
    return ("<table class=regression-metrics><tr><th>metric</th><th>baseline</th><th>candidate</th><th>delta</th></tr>"
            + "".join(out) + "</table>")


def _regression_html(reg: dict | None) -> str:
    """The "Baseline vN vs candidate" section ('' for old verdicts without a regression)."""
    e = html.escape
    if not reg:
        return ""
    base = reg.get("baseline")
    status = reg.get("status")
    if not base:
        if status == "no baseline":
            return f"<p class=regression id=regression>{NO_BASELINE}.</p>"
        return (f"<p class=regression id=regression>Regression gate: {e(str(status))}: "
                f"{e(str(reg.get('summary') or ''))}</p>")
    limits = reg.get("limits") or {}
    v = base.get("version")
    parts = [f"<h2 id=regression>Baseline v{e(str(v))} vs candidate</h2>"]
    failures = "".join(f"<li>{e(str(f))}</li>" for f in reg.get("failures") or [])
    summary = e(str(reg.get("summary") or ""))
    if status == "blocked":
        parts.append(f"<p class='gate fail'>BLOCKED by the regression gate</p><p>{summary}</p>"
                     f"<ul class=fail>{failures}</ul>")
    elif status == "accepted":
        parts.append(f"<p class='gate accepted'>REGRESSION ACCEPTED: {e(str(reg.get('accepted_reason') or ''))}</p>"
                     f"<p>{summary}</p>" + (f"<p>What was accepted:</p><ul class=accepted>{failures}</ul>" if failures else ""))
    elif status == "passed":
        parts.append(f"<p class='gate pass'>PASSED the regression gate</p><p>{summary}</p>")
    else:
        parts.append(f"<p class=gate>{e(str(status))}</p><p>{summary}</p>")
    parts.append(f"<table><tr><th>baseline</th><td>version {e(str(v))}</td></tr>"
                 f"<tr><th>chosen from</th><td>{e(str(base.get('source', '')))}</td></tr>"
                 f"<tr><th>its checkpoint</th><td>{e(str(base.get('checkpoint') or ''))}</td></tr></table>")
    parts.append("<h3>Golden set metrics, baseline vs candidate</h3>"
                 + _regression_metrics(reg.get("metrics") or [], limits.get("max_metric_drop")))
    fl = reg.get("flips")
    if fl:
        rate, lim = fl.get("rate"), limits.get("max_flip_rate")
        over = rate is not None and lim is not None and rate > lim
        parts.append(
            "<h3>Per-image changes</h3><table class=flips><tr><th>images</th><th>regressed</th><th>fixed</th>"
            "<th>changed</th><th>regressed rate</th></tr>"
            f"<tr><td>{e(_num(fl.get('images')))}</td>"
            f"<td class='{'worse' if fl.get('regressed') else 'same'}'>{e(_num(fl.get('regressed')))}</td>"
            f"<td class='{'better' if fl.get('fixed') else 'same'}'>{e(_num(fl.get('fixed')))}</td>"
            f"<td>{e(_num(fl.get('changed')))}</td><td class='{'worse' if over else 'same'}'>{e(_num(rate))}"
            f"{' &gt; ' + e(_num(lim)) if over else ''}{' (limit ' + e(_num(lim)) + ')' if lim is not None and not over else ''}"
            "</td></tr></table>")
    lat = reg.get("latency_ms") or {}
    if lat:
        lim = limits.get("max_latency_ratio")
        rows = "".join(
            f"<tr><td>{e(k)}</td><td>{_num((x.get('baseline') or {}).get('p50'))}</td>"
            f"<td>{_num((x.get('baseline') or {}).get('p95'))}</td><td>{_num((x.get('candidate') or {}).get('p50'))}</td>"
            f"<td>{_num((x.get('candidate') or {}).get('p95'))}</td>{_ratio(x.get('ratio_p50'), lim)}{_ratio(x.get('ratio_p95'), lim)}"
            f"<td>{_num((x.get('candidate') or {}).get('n'))}</td></tr>" for k, x in lat.items())
        parts.append(
            f"<h3>Latency, interleaved in the same server (ms; limit {e(_num(lim))}x)</h3><table class=latency>"
            "<tr><th>protocol / signature</th><th>baseline p50</th><th>baseline p95</th><th>candidate p50</th>"
            f"<th>candidate p95</th><th>ratio p50</th><th>ratio p95</th><th>n</th></tr>{rows}</table>")
    mem = reg.get("memory_mb")
    if mem:
        limit_mb = mem.get("limit_mb", limits.get("serving_memory_limit_mb"))
        both_over = limit_mb is not None and mem.get("with_both") is not None and mem["with_both"] > limit_mb

        def mb(x):
            return "n/a" if x is None else f"{x:.1f} MB"
        parts.append(
            "<h3>Memory of the serving container</h3><table class=memory>"
            f"<tr><th>server, no model</th><td>{mb(mem.get('server'))}</td></tr>"
            f"<tr><th>with the baseline loaded</th><td>{mb(mem.get('with_baseline'))}</td></tr>"
            f"<tr><th>with both loaded (a version swap in production)</th>"
            f"<td class='{'worse' if both_over else 'same'}'>{mb(mem.get('with_both'))}</td></tr>"
            f"<tr><th>baseline version</th><td>{mb(mem.get('baseline'))}</td></tr>"
            f"<tr><th>candidate version</th><td>{mb(mem.get('candidate'))}</td></tr>"
            f"<tr><th>ratio candidate / baseline (limit {e(_num(limits.get('max_memory_ratio')))}x)</th>"
            f"{_ratio(mem.get('ratio'), limits.get('max_memory_ratio'))}</tr>"
            f"<tr><th>serving_memory_limit_mb</th><td>{'not set' if limit_mb is None else mb(limit_mb)}</td></tr></table>")
    load = reg.get("load_seconds")
    if load:
        parts.append(f"<p>Load time: baseline {e(_num(load.get('baseline')))} s, candidate "
                     f"{e(_num(load.get('candidate')))} s.</p>")
    sig = reg.get("signatures")
    if sig is not None:
        breaking = "".join(f"<li>{e(str(b))}</li>" for b in sig.get("breaking") or [])
        adds = "".join(f"<li>{e(str(a))}</li>" for a in sig.get("additions") or [])
        ok = sig.get("compatible", not breaking)
        parts.append("<h3>Signatures</h3>"
                     + (f"<p class=pass>compatible with the baseline{', adds:' if adds else ''}</p>" if ok
                        else "<p class=fail>NOT compatible with the baseline:</p>")
                     + (f"<ul class='fail breaking'>{breaking}</ul>" if breaking else "")
                     + (f"{'' if ok else '<p>additions:</p>'}<ul class=additions>{adds}</ul>" if adds else ""))
    return "".join(parts)


def _side(label: str, side: dict | None, css: str) -> str:
    e = html.escape
    if side is None:
        return (f"<div class='side {css}'><div><b>{e(label)}</b></div><div class=detail>no answer for this image"
                f"</div></div>")
    figs = "".join(f"<figure><figcaption class=small>{e(lb)}</figcaption><img alt='{e(label)}: {e(lb)}' src='{src}'>"
                   f"</figure>" for lb, src in side["full"]())
    ok = side["passed"]
    return (f"<div class='side {css}'><div><b>{e(label)}</b> <span class='{'pass' if ok else 'fail'}'>"
            f"{'PASS' if ok else 'FAIL'}</span></div><div class=body><div class=pics>{figs}</div>"
            f"{_nums_html(side.get('numbers') or {})}</div><div class=detail>{e(str(side.get('detail', '')))}</div></div>")


def _change_word(ch: dict) -> tuple[str, str]:
    if ch.get("regressed"):
        return "REGRESSED", "fail"
    if ch.get("fixed"):
        return "FIXED", "pass"
    return "", ""


def _pair_card(p: dict, version) -> str:
    """One image: the baseline's pictures and numbers beside the candidate's, with the change."""
    e = html.escape
    ch = p.get("change") or {}
    word, wcls = _change_word(ch)
    cls = " regressed" if ch.get("regressed") else "" if p["passed"] else " failed"
    return (f"<div class='card pair{cls}' data-image='{e(p['image'])}' id='img-{e(p['image'])}'>"
            f"<div><b>{e(p['image'])}</b> <span class='{wcls}'>{word}</span></div>"
            f"<div class=change>{e(str(ch.get('summary', '')))}</div><div class=sides>"
            f"{_side(f'baseline v{version}', p.get('baseline'), 'baseline')}"
            f"{_side('candidate', p, 'candidate')}</div></div>")


def _thumb_pair(p: dict, version) -> str:
    e = html.escape
    ch = p.get("change") or {}
    b = p.get("baseline")
    cls = " regressed" if ch.get("regressed") else " fixed" if ch.get("fixed") else "" if p["passed"] else " failed"
    word = _change_word(ch)[0] or ("PASS" if p["passed"] else "FAIL")
    b_img = (f"<img alt='baseline v{e(str(version))}' title='baseline v{e(str(version))}: {e(str(b.get('detail', '')))}' "
             f"src='{b['thumb']()}'>" if b else "<span class=small>no baseline answer</span>")
    title = f"{p['image']} {word}: {ch.get('summary', '')}; candidate: {p['detail']}"
    b_cap = b.get("caption", "") if b else "-"
    return (f"<figure class='thumb pair{cls}' data-image='{e(p['image'])}' id='img-{e(p['image'])}'><div class=imgs>"
            f"{b_img}<img alt='candidate' title='{e(title)}' src='{p['thumb']()}'></div>"
            f"<figcaption>{e(' '.join(filter(None, (p['image'], _change_word(ch)[0]))))}<br>v{e(str(version))}: {e(b_cap)}<br>"
            f"candidate: {e(p.get('caption', ''))}</figcaption></figure>")


def order_pairs(images: list[dict], worst: list[str] = (), *, full_failed: int = FULL_FAILED,
                full_passing: int = FULL_PASSING):
    """With a baseline: (regressed in full, failed in full, worst passing in full, the rest for the grid).
    Regressed images come first (in the gate's ``worst`` order, then worst first); they and the
    candidate's failed images share the ``full_failed`` budget; the grid starts with the ones that
    did not fit, then worst first."""
    pos = {name: i for i, name in enumerate(worst)}

    def key(p):
        return (pos.get(p["image"], len(pos)), tuple(p.get("rank") or ()), p["image"])
    regressed = sorted((p for p in images if (p.get("change") or {}).get("regressed")), key=key)
    failed = sorted((p for p in images if not p["passed"] and not (p.get("change") or {}).get("regressed")), key=key)
    passing = sorted((p for p in images if p["passed"] and not (p.get("change") or {}).get("regressed")), key=key)
    r_full = regressed[:full_failed]
    f_full = failed[:max(0, full_failed - len(r_full))]
    p_full = passing[:full_passing]
    rest = regressed[len(r_full):] + failed[len(f_full):] + passing[len(p_full):]
    return r_full, f_full, p_full, rest


def _pair_sections(images: list[dict], reg: dict, legend: str, full_failed: int, full_passing: int) -> str:
    version = (reg.get("baseline") or {}).get("version")
    worst = [w.get("image") for w in reg.get("worst") or []]
    r_full, f_full, p_full, rest = order_pairs(images, worst, full_failed=full_failed, full_passing=full_passing)
    n_reg = sum(bool((p.get("change") or {}).get("regressed")) for p in images)
    n_fixed = sum(bool((p.get("change") or {}).get("fixed")) for p in images)
    n_failed = sum(not p["passed"] for p in images)
    shown = []
    if r_full:
        shown.append(f"the {len(r_full)} regressed" if len(r_full) == n_reg else
                     f"the {len(r_full)} worst regressed (the other {n_reg - len(r_full)} lead the grid)")
    if f_full:
        shown.append(f"{len(f_full)} failed by the candidate (and not better with the baseline)")
    if p_full:
        shown.append(f"the {len(p_full)} worst passing")
    grid = f"; the other {len(rest)} as thumbnail pairs, regressed and failed first (hover for the detail)" if rest else ""
    out = (f"<p class=legend>{legend}</p><p>{len(images)} images: {n_reg} regressed, {n_fixed} fixed, {n_failed} "
           f"failed by the candidate. Each image shows baseline v{html.escape(str(version))} (left) and the "
           f"candidate (right). With full pictures: {' then '.join(shown) or 'none'}{grid}.</p>")
    if r_full:
        out += (f"<h3 id=regressed class=fail>Regressed images</h3><div class=cards>"
                f"{''.join(_pair_card(p, version) for p in r_full)}</div>")
    if f_full:
        out += (f"<h3 id=failed class=fail>Failed images</h3><div class=cards>"
                f"{''.join(_pair_card(p, version) for p in f_full)}</div>")
    if p_full:
        out += (f"<h3 id=worst>Worst passing images</h3><div class=cards>"
                f"{''.join(_pair_card(p, version) for p in p_full)}</div>")
    if rest:
        out += (f"<h3 id=grid>Other images</h3><div class=thumbs>"
                f"{''.join(_thumb_pair(p, version) for p in rest)}</div>")
    return out


def write(out_dir: str, verdict: dict, images: list[dict], *, gx_docs: str | None, legend: str = "",
          full_failed: int = FULL_FAILED, full_passing: int = FULL_PASSING) -> dict:
    """Write verdict.json and index.html into out_dir; returns their paths.

    images: one entry per golden image: image, passed, detail, numbers, rank (tuple, lower = worse),
    caption (a few words for the thumbnail), full() -> [(label, data uri)], thumb() -> data uri;
    with a baseline also ``baseline`` (passed, detail, numbers, caption, full, thumb: the baseline's
    answer) and ``change`` (regressed, fixed, summary)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "verdict.json"), "w") as fh:
        json.dump(verdict, fh, indent=2, sort_keys=True, default=str)
    e = html.escape
    checks = verdict["checks"]
    failed = [c for c in checks if not c["passed"]]
    # the primary cause first: when absolute checks failed, the gate's section comes after them
    absolute_failed = any(not c["name"].startswith(("regression:", "compatibility:")) for c in failed)
    lat = verdict.get("latency_ms", {})
    lat_rows = "".join(f"<tr><td>{e(k)}</td><td>{v.get('p50', 0):.1f}</td><td>{v.get('p95', 0):.1f}</td>"
                       f"<td>{v.get('n', 0)}</td></tr>" for k, v in lat.items())
    f_full, p_full, rest = order(images, full_failed=full_failed, full_passing=full_passing)
    n_failed = sum(not p["passed"] for p in images)
    reg = verdict.get("regression")
    if images and reg and reg.get("baseline"):
        sections = _pair_sections(images, reg, legend, full_failed, full_passing)
    elif images:
        shown = []
        if f_full:
            shown.append(f"the {len(f_full)} failed, worst first" if len(f_full) == n_failed else
                         f"the {len(f_full)} worst of the failed (the other {n_failed - len(f_full)} lead the grid)")
        if p_full:
            shown.append(f"the {len(p_full)} worst passing")
        grid = (f"; the other {len(rest)} as thumbnails, failed first, then worst first (hover for the detail)"
                if rest else "")
        sections = (f"<p class=legend>{legend}</p><p>{len(images)} images, {n_failed} failed. With full pictures: "
                    f"{' then '.join(shown)}{grid}.</p>")
        if f_full:
            sections += f"<h3 id=failed class=fail>Failed images</h3><div class=cards>{''.join(_card(p) for p in f_full)}</div>"
        if p_full:
            sections += f"<h3 id=worst>Worst passing images</h3><div class=cards>{''.join(_card(p) for p in p_full)}</div>"
        if rest:
            sections += f"<h3 id=grid>Other images</h3><div class=thumbs>{''.join(_thumb(p) for p in rest)}</div>"
    else:
        sections = "<p>No golden answers to show.</p>"
    status = "PASSED" if verdict["passed"] else "FAILED"
    golden_vs = (f", baseline v{e(str(reg['baseline'].get('version')))} vs candidate"
                 if images and reg and reg.get("baseline") else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8">{CSP_META}<title>{e(verdict['model'])}: validation {status}</title>
<style>{CSS}</style></head><body>
<h1>{e(verdict['model'])} — candidate validation</h1>
<div class="verdict {'pass' if verdict['passed'] else 'fail'}">{status}</div>
<p>{e(verdict.get('reason') or 'every check passed')}</p>
{'' if absolute_failed else _regression_html(reg)}
<h2>Golden set metrics</h2>{_metrics_html(verdict.get('metrics') or {})}
<table><tr><th>candidate</th><td>{e(verdict.get('candidate', ''))}</td></tr>
<tr><th>checkpoint</th><td>{e(str(verdict.get('checkpoint', '')))}</td></tr>
<tr><th>served by</th><td>{e(verdict.get('server', ''))}</td></tr>
<tr><th>time to AVAILABLE</th><td>{verdict.get('seconds_to_available', 0):.1f}s</td></tr>
<tr><th>checks</th><td>{len(checks) - len(failed)} passed, {len(failed)} failed</td></tr></table>
<h2>Checks{' (failed first)' if failed else ''}</h2>{_checks_html(checks)}
{_regression_html(reg) if absolute_failed else ''}
<h2>Golden images{golden_vs}</h2>{sections}
<h2>Latency (single-image requests)</h2><table><tr><th>protocol / signature</th><th>p50 ms</th><th>p95 ms</th><th>n</th></tr>{lat_rows}</table>
{'<p><a href="gx/index.html">great-expectations results</a> (raw: <a href="gx/results.json">gx/results.json</a>)</p>' if gx_docs else ''}
</body></html>"""
    with open(os.path.join(out_dir, "index.html"), "w") as fh:
        fh.write(page)
    return {"verdict": os.path.join(out_dir, "verdict.json"), "index": os.path.join(out_dir, "index.html")}


# --- great-expectations results --------------------------------------------------------------------

GX_SHOWN_KWARGS_SKIP = {"batch_id"}
GX_UNEXPECTED_SHOWN = 10


def _gx_kwargs(kwargs: dict) -> str:
    parts = []
    for k, v in kwargs.items():
        if k in GX_SHOWN_KWARGS_SKIP:
            continue
        text = json.dumps(v, default=str)
        parts.append(f"{k}={text if len(text) <= 80 else text[:77] + '...'}")
    return ", ".join(parts)


def _gx_observed(result: dict) -> str:
    if "observed_value" in result:
        return f"observed {json.dumps(result['observed_value'], default=str)}"
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list") or []
        text = f"{result['unexpected_count']} of {result.get('element_count', '?')} unexpected"
        if sample:
            text += f", e.g. {json.dumps(sample[:GX_UNEXPECTED_SHOWN], default=str)}"
        return text
    return json.dumps(result, default=str)[:200] if result else ""


def gx_page(results: list[dict]) -> str:
    """A self-contained page of great-expectations validation results (``to_json_dict()`` of each
    ExpectationSuiteValidationResult, plus ``asset`` and ``rows``): failed expectations first."""
    e = html.escape
    sections = []
    for r in results:
        stats = r.get("statistics") or {}
        rows = []
        for x in sorted(r.get("results") or [], key=lambda x: bool(x.get("success"))):
            cfg = x.get("expectation_config") or {}
            ok = bool(x.get("success"))
            exc = (x.get("exception_info") or {}).get("exception_message")
            rows.append(f"<tr class='{'' if ok else 'failed'}'><td>{'PASS' if ok else 'FAIL'}</td>"
                        f"<td>{e(str(cfg.get('type', '')))}</td><td class=small>{e(_gx_kwargs(cfg.get('kwargs') or {}))}</td>"
                        f"<td class=small>{e(exc or _gx_observed(x.get('result') or {}))}</td></tr>")
        ok = bool(r.get("success"))
        sections.append(
            f"<h2>{e(str(r.get('asset', '')))} <span class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</span></h2>"
            f"<p class=small>suite {e(str(r.get('suite_name', '')))}; {e(str(r.get('rows', '?')))} rows; "
            f"{e(str(stats.get('successful_expectations', '?')))} of {e(str(stats.get('evaluated_expectations', '?')))} "
            f"expectations hold</p>"
            f"<table><tr><th></th><th>expectation</th><th>arguments</th><th>result</th></tr>{''.join(rows)}</table>")
    version = next((str((r.get("meta") or {}).get("great_expectations_version", "")) for r in results), "")
    return f"""<!doctype html><html><head><meta charset="utf-8">{CSP_META}<title>great-expectations results</title>
<style>{CSS}</style></head><body>
<h1>great-expectations results</h1>
<p class=small>Every served output of the golden set, as tables checked by great-expectations {e(version)}.
Back to the <a href="../index.html">validation report</a>; the raw results are in
<a href="results.json">results.json</a>.</p>
{''.join(sections) or '<p>No results.</p>'}
</body></html>"""


def write_gx(out_dir: str, results: list[dict]) -> dict:
    """``results.json`` (GX's own results) and ``index.html`` (gx_page) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"results": os.path.join(out_dir, "results.json"), "index": os.path.join(out_dir, "index.html")}
    with open(paths["results"], "w") as fh:
        json.dump(results, fh, indent=1, default=str)
    with open(paths["index"], "w") as fh:
        fh.write(gx_page(results))
    return paths
