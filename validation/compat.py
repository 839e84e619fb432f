"""Is a candidate a drop-in replacement for the baseline, as far as clients can tell?

Clients of TF Serving address a signature by name, feed inputs by key with a dtype and shape, read
outputs by key, and interpret class ids through a label map. A candidate breaks them when it
removes or renames a signature, an input or an output, changes an input's dtype or shape (a shape
that accepts fewer requests: a fixed dimension that differs, a known rank that changes, a free
dimension that became fixed), changes an output's dtype or rank, or gives a class id another
meaning. What it adds (signatures, outputs, classes) breaks no client.

Signatures are in validation/contracts' normal form:
    {name: {"method": str, "inputs": {key: {"dtype", "shape"}}, "outputs": {key: {"dtype", "shape"}}}}
"""
from __future__ import annotations


def _shape(s) -> str:
    return "unknown rank" if s is None else "[" + ", ".join("?" if d < 0 else str(d) for d in s) + "]"


def _input_shape_problem(old, new) -> str | None:
    """Why a request the baseline accepted could be refused by the candidate (None: it cannot)."""
    if new is None:
        return None  # unknown rank accepts anything
    if old is None:
        return f"shape {_shape(old)} -> {_shape(new)} (now a fixed rank)"
    if len(old) != len(new):
        return f"rank {len(old)} -> {len(new)} ({_shape(old)} -> {_shape(new)})"
    for i, (a, b) in enumerate(zip(old, new)):
        if b >= 0 and a != b:
            return f"dimension {i} {'?' if a < 0 else a} -> {b} ({_shape(old)} -> {_shape(new)})"
    return None


def _output_shape_problem(old, new) -> str | None:
    """An output whose rank changed, or a fixed dimension that changed, breaks a client's parsing."""
    if old is None or new is None:
        return None
    if len(old) != len(new):
        return f"rank {len(old)} -> {len(new)} ({_shape(old)} -> {_shape(new)})"
    for i, (a, b) in enumerate(zip(old, new)):
        if a >= 0 and b >= 0 and a != b:
            return f"dimension {i} {a} -> {b} ({_shape(old)} -> {_shape(new)})"
    return None


def compare_signatures(baseline: dict, candidate: dict) -> tuple[list[str], list[str]]:
    """(breaking, additions): readable sentences, one per difference, in a stable order."""
    breaking, additions = [], []
    for name in sorted(baseline):
        if name not in candidate:
            others = sorted(set(candidate) - set(baseline))
            hint = f" (the candidate has {', '.join(repr(o) for o in others)} instead: renamed?)" if others else ""
            breaking.append(f"signature {name!r} removed{hint}")
            continue
        old, new = baseline[name], candidate[name]
        if old.get("method") and new.get("method") and old["method"] != new["method"]:
            breaking.append(f"signature {name!r}: method {old['method']} -> {new['method']}")
        for kind, problem in (("input", _input_shape_problem), ("output", _output_shape_problem)):
            olds, news = old.get(kind + "s", {}), new.get(kind + "s", {})
            for key in sorted(olds):
                o, n = olds[key], news.get(key)
                if n is None:
                    breaking.append(f"signature {name!r}: {kind} {key!r} removed or renamed "
                                    f"(candidate {kind}s: {', '.join(sorted(news)) or 'none'})")
                    continue
                if o.get("dtype") != n.get("dtype"):
                    breaking.append(f"signature {name!r}: {kind} {key!r} dtype {o.get('dtype')} -> {n.get('dtype')}")
                why = problem(o.get("shape"), n.get("shape"))
                if why:
                    breaking.append(f"signature {name!r}: {kind} {key!r} {why}")
            for key in sorted(set(news) - set(olds)):
                if kind == "input":  # every input of a signature is required
                    breaking.append(f"signature {name!r}: new required input {key!r} ({news[key].get('dtype')} "
                                    f"{_shape(news[key].get('shape'))}): today's requests do not send it")
                else:
                    additions.append(f"signature {name!r}: output {key!r}")
    for name in sorted(set(candidate) - set(baseline)):
        additions.append(f"signature {name!r}")
    return breaking, additions


def compare_labels(baseline: dict | None, candidate: dict | None) -> tuple[list[str], list[str]]:
    """Label maps {class id: name}: an id that disappears or names another class breaks clients;
    new ids are additions. Unknown on either side (None): nothing to compare."""
    if not baseline or candidate is None:
        return [], []
    old = {str(k): v for k, v in baseline.items()}
    new = {str(k): v for k, v in candidate.items()}
    breaking, additions = [], []
    for k in sorted(old, key=_id_key):
        if k not in new:
            breaking.append(f"label map: class {k} ({old[k]!r}) removed")
        elif new[k] != old[k]:
            breaking.append(f"label map: class {k} changed meaning: {old[k]!r} -> {new[k]!r}")
    for k in sorted(set(new) - set(old), key=_id_key):
        additions.append(f"label map: class {k} ({new[k]!r})")
    return breaking, additions


def _id_key(k: str):
    return (0, int(k), "") if k.lstrip("-").isdigit() else (1, 0, k)


def compatibility(baseline_sigs: dict, candidate_sigs: dict, baseline_labels: dict | None = None,
                  candidate_labels: dict | None = None) -> dict:
    """{"compatible", "breaking", "additions", "detail"}: the gate's signature check."""
    b1, a1 = compare_signatures(baseline_sigs, candidate_sigs)
    b2, a2 = compare_labels(baseline_labels, candidate_labels)
    breaking, additions = b1 + b2, a1 + a2
    if breaking:
        detail = "incompatible with the baseline: " + "; ".join(breaking)
    elif additions:
        detail = "compatible, adds " + "; ".join(additions)
    else:
        detail = "compatible: same signatures" + (" and label map" if baseline_labels and candidate_labels else "")
    return {"compatible": not breaking, "breaking": breaking, "additions": additions, "detail": detail}
