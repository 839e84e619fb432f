"""The great-expectations results as a self-contained page (``gx/index.html``): GX's own Data Docs
fetch CDN scripts and styles that the report endpoint's Content-Security-Policy forbids."""
from __future__ import annotations

import html
import json
import os

from validation.report.common import CSP_META, CSS

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
