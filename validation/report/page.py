"""The report's front page: ``verdict.json`` and ``index.html`` (verdict, metrics, checks, golden
images as cards and thumbnails, latency)."""
from __future__ import annotations

import html
import json
import os

from validation.report.common import (CSP_META, CSS, FULL_FAILED, FULL_PASSING, GOLDEN_ROWS, METRIC_NAMES, _num,
                                      _nums_html)
from validation.report.regression import _pair_sections, _regression_html

FLOOR_OF = {"map": "min_map", "ap50": "min_ap50", "accuracy": "min_accuracy", "miou_set": "min_miou_set"}
SKIP_METRICS = {"task", "floors", "iou_per_class"}
METRIC_ORDER = ["map", "ap50", "ap75", "precision", "recall", "accuracy", "miou_set", "miou_per_image_mean",
                "pixel_accuracy", "images", "images_failed", "objects", "found", "false_positives", "detections"]


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
