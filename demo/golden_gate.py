"""Does a demo checkpoint pass its own golden set? Checked in process, with the validator's own golden
checks (validation/validate.py ``golden_checks``: per-image expectations and the config's set-metric
floors), on the answers of the Model Garden serving module (what the exported SavedModel runs).

demo/checkpoint_cache.py runs it on every freshly trained checkpoint and on a cached one whose golden
set changed: a checkpoint that fails its golden set is never handed to the demo or the tests.

    python demo/golden_gate.py --kind segmentation --checkpoint DIR_OR_CKPT [--json]

Prints per image the metric and its margin to the threshold (the numbers in demo/TRAINING_RESULTS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from demo import experiments  # noqa: E402

CONFIG = os.path.join(ROOT, "config", "models.yaml")
# served answers can differ a little from in-process ones: the demo's regression candidate must be
# below the final by the gate's tolerance plus this much (regression_candidate)
REGRESSION_MARGIN = 0.01


def golden_dir(kind: str) -> str:
    return os.path.join(ROOT, "demo", "golden", experiments.spec(kind).model_name)


def golden_digest(kind: str) -> str:
    """sha256 over the golden set's files and the model's config entry (thresholds, floors)."""
    h = hashlib.sha256()
    folder = golden_dir(kind)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fh:
            h.update(name.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
    from registry import config
    model = config.load(CONFIG).model(experiments.spec(kind).model_name)
    h.update(json.dumps({"task": model.task, "extra": model.extra}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def margin(task: str, golden_image, outputs: dict) -> tuple[float, float]:
    """(metric, margin) of one golden image: how far its answer is from failing (> 0: passes).

    classification: p(label) and p(label) - the best other class's p (top-1 needs it > 0);
    segmentation: mIoU and mIoU - min_miou; detection: the worst of (score - min_score, IoU - min_iou)
    over the expected objects (matched with every prediction counted, highest score first) and
    fp_min_score - the best score of a prediction that matches no expected object."""
    from validation import expectations
    e = golden_image.expect
    if task == "classification":
        p = np.asarray(outputs.get("probs", outputs.get("logits")), dtype=np.float64)[0]
        other = np.delete(p, e["label"])
        return float(p[e["label"]]), float(p[e["label"]] - other.max())
    if task == "segmentation":
        value = expectations.miou(expectations.predicted_mask(outputs, golden_image.mask.shape), golden_image.mask)
        return value, value - e["min_miou"]
    boxes, scores, classes = expectations.detections(outputs)
    m = expectations.match(e["boxes"], e["classes"], boxes, scores, classes, min_iou=e["min_iou"], min_score=0.0)
    worst = [min(scores[i] - e["min_score"], iou - e["min_iou"]) for i, _, iou in m.pairs]
    worst += [-e["min_score"]] * len(m.missed)
    fp_score = e["min_score"] if e.get("fp_min_score") is None else e["fp_min_score"]
    if int(e.get("max_false_positives", 0)) == 0 and m.false_positives:
        worst.append(fp_score - float(max(scores[i] for i in m.false_positives)))
    ious = [iou for _, _, iou in m.pairs]
    return (float(min(ious)) if ious else 0.0), float(min(worst)) if worst else 0.0


def run(kind: str, checkpoint: str) -> dict:
    return next(_evaluate(kind, [checkpoint]))


def _evaluate(kind: str, checkpoints: list[str]):
    """``run``'s result for each of several checkpoints of one training run, lazily (one model
    built, each checkpoint restored in turn)."""
    import tensorflow as tf

    from exporters import golden as golden_mod
    from registry import config
    from validation.validate import golden_checks

    model = config.load(CONFIG).model(experiments.spec(kind).model_name)
    params = experiments.load_params(kind, _params_file(checkpoints[0]))
    module = experiments.serving_module(kind, params)
    golden = golden_mod.load(golden_dir(kind) + "/", task=model.task)
    serve = tf.function(module.serve)
    by_shape: dict[tuple, list] = {}
    for g in golden.images:
        by_shape.setdefault(g.image.shape, []).append(g)
    for checkpoint in checkpoints:
        experiments.restore_model(module.model, checkpoint)
        answers = {}
        for group in by_shape.values():
            for i in range(0, len(group), 32):
                part = group[i:i + 32]
                out = {k: np.asarray(v) for k, v in serve(tf.constant(np.stack([g.image for g in part]))).items()}
                for j, g in enumerate(part):
                    answers[g.name] = {k: v[j:j + 1] for k, v in out.items()}
        checks, _, metrics = golden_checks(model, golden, answers)
        passed = {c["name"][len("golden: "):]: c for c in checks if c["name"].startswith("golden: ")}
        images = {}
        for g in golden.images:
            value, slack = margin(model.task, g, answers[g.name])
            images[g.name] = {"passed": passed[g.name]["passed"], "metric": round(value, 4),
                              "margin": round(slack, 4), "detail": passed[g.name]["detail"]}
        failed = [f"{c['name']}: {c['detail']}" for c in checks if not c["passed"]]
        worst = min(images.items(), key=lambda kv: kv[1]["margin"])
        yield {"kind": kind, "checkpoint": checkpoint, "passed": not failed, "failed": failed,
               "images": images, "metrics": metrics, "worst": {"image": worst[0], **worst[1]},
               "golden_digest": golden_digest(kind)}


def checkpoint_steps(folder: str) -> list[int]:
    """The steps of the ckpt-N checkpoints in a training folder, ascending."""
    return sorted(int(f[len("ckpt-"):-len(".index")]) for f in os.listdir(folder)
                  if f.startswith("ckpt-") and f.endswith(".index"))


def regression_candidate(kind: str, folder: str, final: dict) -> dict:
    """The checkpoint the demo releases on purpose to show the regression gate: the latest earlier
    checkpoint of the run that passes every absolute golden check (images, floors) while a gated set
    metric is more than the gate's tolerance (``max_metric_drop``) + ``REGRESSION_MARGIN`` below the
    final's, so that the gate alone blocks it against the published final. Scans from the final
    down; ``final`` is ``run`` of the final checkpoint.

    Returns {candidate: {step, checkpoint, metrics, drops, worst} or None, tolerance, margin, scanned}."""
    from registry import config
    from validation import regression

    model = config.load(CONFIG).model(experiments.spec(kind).model_name)
    tolerance = regression.limits(model.extra.get("regression"))["max_metric_drop"]
    gated = regression.GATED[model.task]
    steps = checkpoint_steps(folder)[:-1][::-1]
    out = {"candidate": None, "tolerance": tolerance, "margin": REGRESSION_MARGIN, "scanned": []}
    for step, r in zip(steps, _evaluate(kind, [os.path.join(folder, f"ckpt-{s}") for s in steps])):
        drops = {k: round(final["metrics"][k] - r["metrics"][k], 4) for k in gated}
        out["scanned"].append({"step": step, "passed": r["passed"], "drops": drops,
                               "worst_margin": r["worst"]["margin"]})
        if r["passed"] and max(drops.values()) > tolerance + REGRESSION_MARGIN:
            out["candidate"] = {"step": step, "checkpoint": r["checkpoint"], "metrics": r["metrics"],
                                "drops": drops, "worst": r["worst"]}
            break
    return out


def _params_file(checkpoint: str) -> str | None:
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    path = os.path.join(folder, "params.yaml")
    return path if os.path.exists(path) else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", required=True, choices=sorted(experiments.KINDS))
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (its newest) or a ckpt-N prefix")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--regression-scan", action="store_true",
                   help="also find the demo's regression candidate among the folder's earlier checkpoints "
                        "(regression_candidate; --checkpoint is the training folder)")
    a = p.parse_args(argv)
    r = run(a.kind, a.checkpoint)
    if a.regression_scan and r["passed"]:
        r["regression_scan"] = regression_candidate(a.kind, a.checkpoint, r)
    if a.json:
        print(json.dumps(r, default=str))
    else:
        for name, i in r["images"].items():
            print(f"{name}: {'pass' if i['passed'] else 'FAIL'} metric {i['metric']} margin {i['margin']}")
        print(f"{'PASSED' if r['passed'] else 'FAILED'}: worst {r['worst']}; metrics {r['metrics']}")
        if "regression_scan" in r:
            print(f"regression candidate: {json.dumps(r['regression_scan'], default=str)}")
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
