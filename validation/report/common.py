"""What every page of the validation report shares: the styles, the Content-Security-Policy
meta tag, the full-card budgets, number formatting and the per-image numbers table."""
from __future__ import annotations

import html

FULL_FAILED = 24    # failed images shown with full pictures (the rest of them go to the grid, marked)
FULL_PASSING = 8    # worst passing images shown with full pictures
FULL_SIZE, THUMB_SIZE = 256, 96
# the page opened from a file (not through the report endpoint, which sends the same as a header)
# still fetches nothing and runs nothing
CSP_META = ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            'style-src \'unsafe-inline\'; base-uri \'none\'; form-action \'none\'">')
GOLDEN_ROWS = 10    # failed golden images listed in the checks table (all of them are in verdict.json)

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


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return "n/a" if v is None else str(v)


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
