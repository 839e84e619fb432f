"""The validation report: ``verdict.json`` (every check, the numbers) and ``index.html``, the page a
person reads first: verdict, failed checks on top, each golden image with expected (green) and
predicted (orange) boxes or masks drawn, latency. Self-contained: pictures are inlined, styles too;
the GX Data Docs sit beside it in ``gx/``."""
from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.uint8)


def _png(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _scaled(image: np.ndarray, scale: int):
    from PIL import Image
    im = Image.fromarray(image)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def detection_picture(image: np.ndarray, expect: dict, outputs: dict | None, labels: dict, min_score: float) -> str:
    from PIL import ImageDraw
    scale = max(1, 256 // max(image.shape[:2]))
    im = _scaled(image, scale)
    d = ImageDraw.Draw(im)
    for box, cls in zip(expect.get("boxes", []), expect.get("classes", [])):
        y0, x0, y1, x1 = [v * scale for v in box]
        d.rectangle([x0, y0, x1, y1], outline=(0, 200, 0), width=3)
        d.text((x0 + 2, y1 - 12), f"{labels.get(cls, cls)}", fill=(0, 200, 0))
    if outputs is not None:
        n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        for b, s, c in zip(np.asarray(outputs["detection_boxes"])[0][:n], np.asarray(outputs["detection_scores"])[0][:n],
                           np.asarray(outputs["detection_classes"])[0][:n]):
            if s < min_score or not np.all(np.isfinite(b)):
                continue
            y0, x0, y1, x1 = [float(v) * scale for v in b]
            d.rectangle([x0, y0, x1, y1], outline=(255, 140, 0), width=2)
            d.text((x0 + 2, y0 + 1), f"{labels.get(int(c), int(c))} {s:.2f}", fill=(255, 140, 0))
    return _png(im)


def mask_picture(image: np.ndarray, mask: np.ndarray) -> str:
    """Class ids in solid palette colours over the dimmed image (same colour = same class)."""
    from PIL import Image
    out = (image * 0.35).astype(np.uint8)
    fg = mask > 0
    out[fg] = PALETTE[np.clip(mask[fg], 1, len(PALETTE) - 1)]
    scale = max(1, 192 // max(image.shape[:2]))
    return _png(Image.fromarray(out).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST))


def class_legend(labels: dict) -> str:
    return "".join(f"{html.escape(str(name))}<span style='background:rgb{tuple(int(v) for v in PALETTE[c % len(PALETTE)])}'>"
                   "</span>" for c, name in sorted(labels.items()) if c > 0)


def image_picture(image: np.ndarray) -> str:
    return _png(_scaled(image, max(1, 128 // max(image.shape[:2]))))


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:4px}.pass{color:#137333}.fail{color:#b3261e}.verdict{font-size:28px;font-weight:700}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top;font-size:13px}th{background:#f4f4f4}tr.failed td{background:#fdecea}
.grid{display:flex;flex-wrap:wrap;gap:14px}.card{border:1px solid #ddd;border-radius:6px;padding:8px;width:300px}
.card.failed{border-color:#b3261e}.card img{max-width:100%;image-rendering:pixelated}.small{font-size:12px;color:#555}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}"""


def write(out_dir: str, verdict: dict, pictures: list[dict], *, gx_docs: str | None, legend: str = "") -> dict:
    """Write verdict.json and index.html into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "verdict.json"), "w") as fh:
        json.dump(verdict, fh, indent=2, sort_keys=True, default=str)
    checks = sorted(verdict["checks"], key=lambda c: (c["passed"], c["name"]))
    failed = [c for c in checks if not c["passed"]]
    e = html.escape
    rows = "".join(
        f"<tr class='{'' if c['passed'] else 'failed'}'><td>{'PASS' if c['passed'] else 'FAIL'}</td>"
        f"<td>{e(c['name'])}</td><td>{e(c.get('detail', ''))}</td>"
        f"<td class=small>{e(json.dumps(c.get('numbers', {}), default=str))}</td></tr>" for c in checks)
    lat = verdict.get("latency_ms", {})
    lat_rows = "".join(f"<tr><td>{e(k)}</td><td>{v.get('p50', 0):.1f}</td><td>{v.get('p95', 0):.1f}</td>"
                       f"<td>{v.get('n', 0)}</td></tr>" for k, v in lat.items())
    cards = "".join(
        f"<div class='card {'' if p['passed'] else 'failed'}'><b>{e(p['image'])}</b> "
        f"<span class='{'pass' if p['passed'] else 'fail'}'>{'PASS' if p['passed'] else 'FAIL'}</span><br>"
        + "".join(f"<div class=small>{e(label)}</div><img alt='{e(label)}' src='{src}'>" for label, src in p["pictures"])
        + f"<div class=small>{e(p['detail'])}</div></div>" for p in pictures)
    status = "PASSED" if verdict["passed"] else "FAILED"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(verdict['model'])}: validation {status}</title>
<style>{CSS}</style></head><body>
<h1>{e(verdict['model'])} — candidate validation</h1>
<div class="verdict {'pass' if verdict['passed'] else 'fail'}">{status}</div>
<p>{e(verdict.get('reason') or 'every check passed')}</p>
<table><tr><th>candidate</th><td>{e(verdict.get('candidate', ''))}</td></tr>
<tr><th>checkpoint</th><td>{e(str(verdict.get('checkpoint', '')))}</td></tr>
<tr><th>served by</th><td>{e(verdict.get('server', ''))}</td></tr>
<tr><th>time to AVAILABLE</th><td>{verdict.get('seconds_to_available', 0):.1f}s</td></tr>
<tr><th>checks</th><td>{len(checks) - len(failed)} passed, {len(failed)} failed</td></tr></table>
<h2>Checks{' (failed first)' if failed else ''}</h2>
<table><tr><th></th><th>check</th><th>detail</th><th>numbers</th></tr>{rows}</table>
<h2>Golden images</h2><p class="legend">expected<span style="background:#00c800"></span>
predicted<span style="background:#ff8c00"></span> {legend}</p><div class="grid">{cards}</div>
<h2>Latency (golden requests)</h2><table><tr><th>protocol / signature</th><th>p50 ms</th><th>p95 ms</th><th>n</th></tr>{lat_rows}</table>
{'<p><a href="gx/index.html">great-expectations Data Docs</a></p>' if gx_docs else ''}
</body></html>"""
    with open(os.path.join(out_dir, "index.html"), "w") as fh:
        fh.write(page)
    return {"verdict": os.path.join(out_dir, "verdict.json"), "index": os.path.join(out_dir, "index.html")}
