"""The report's "Baseline vN vs candidate" section (the regression gate, validation/regression.py)
and the golden images as baseline | candidate pairs."""
from __future__ import annotations

import html

from validation.report.common import FULL_FAILED, FULL_PASSING, METRIC_NAMES, _num, _nums_html

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
    for items, head, box, draw in ((r_full, "id=regressed class=fail>Regressed images", "cards", _pair_card),
                                   (f_full, "id=failed class=fail>Failed images", "cards", _pair_card),
                                   (p_full, "id=worst>Worst passing images", "cards", _pair_card),
                                   (rest, "id=grid>Other images", "thumbs", _thumb_pair)):
        if items:
            out += f"<h3 {head}</h3><div class={box}>{''.join(draw(p, version) for p in items)}</div>"
    return out
