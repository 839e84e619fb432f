"""A great-expectations 1.x suite over every served output (ephemeral context, ExpectationSuite,
ValidationDefinition, Checkpoint). The results go into the report folder as GX's own JSON and a
self-contained page (``validation.report.write_gx``), not as Data Docs: those load scripts and
styles from CDNs, which a report must not (it is served with a CSP that forbids both).

Rows: detection = one row per reported detection (+ one per image for counts); segmentation = one
row per image (finite logits, predicted classes); classification = one row per image and class.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

import numpy as np

log = logging.getLogger(__name__)


def frames(task: str, answers: list[tuple[str, str, dict]], *, image_sizes: dict[str, tuple[int, int]]):
    """answers: (image, signature, outputs). Returns {asset name: DataFrame}."""
    import pandas as pd
    if task == "detection":
        dets, counts = [], []
        for image, sig, out in answers:
            n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
            boxes = np.asarray(out["detection_boxes"], dtype=np.float64)[0]
            scores = np.asarray(out["detection_scores"], dtype=np.float64)[0]
            classes = np.asarray(out["detection_classes"])[0]
            h, w = image_sizes[image]
            counts.append({"image": image, "signature": sig, "num_detections": n, "max_detections": len(scores)})
            for i in range(n):
                dets.append({"image": image, "signature": sig, "score": scores[i], "cls": int(classes[i]),
                             "ymin": boxes[i][0], "xmin": boxes[i][1], "ymax": boxes[i][2], "xmax": boxes[i][3],
                             "height": h, "width": w})
        cols = ["image", "signature", "score", "cls", "ymin", "xmin", "ymax", "xmax", "height", "width"]
        return {"detections": pd.DataFrame(dets, columns=cols), "counts": pd.DataFrame(counts)}
    if task == "segmentation":
        rows = []
        for image, sig, out in answers:
            logits = np.asarray(out["logits"], dtype=np.float64)
            rows.append({"image": image, "signature": sig, "finite_fraction": float(np.isfinite(logits).mean()),
                         "max_class": int(logits[0].argmax(-1).max()) if np.isfinite(logits).all() else -1,
                         "min_class": int(logits[0].argmax(-1).min()) if np.isfinite(logits).all() else -1})
        return {"masks": pd.DataFrame(rows)}
    rows = []
    for image, sig, out in answers:
        probs = np.asarray(out.get("probs", out.get("logits")), dtype=np.float64)[0]
        for c, p in enumerate(probs):
            rows.append({"image": image, "signature": sig, "cls": c, "prob": p})
        rows_sum = float(np.sum(probs))
        rows.append({"image": image, "signature": sig, "cls": -1, "prob": rows_sum})
    import pandas as pd  # noqa: F811
    df = pd.DataFrame(rows)
    return {"probabilities": df[df.cls >= 0].reset_index(drop=True),
            "sums": df[df.cls < 0].rename(columns={"prob": "sum"}).reset_index(drop=True)}


def _expectations(task: str, asset: str, labels: set[int], max_detections: int | None):
    import great_expectations as gx
    E = gx.expectations
    if task == "detection" and asset == "detections":
        return [E.ExpectColumnValuesToNotBeNull(column=c) for c in ("score", "ymin", "xmin", "ymax", "xmax")] + [
            E.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
            E.ExpectColumnValuesToBeInSet(column="cls", value_set=sorted(labels)),
            E.ExpectColumnValuesToBeBetween(column="ymin", min_value=0),
            E.ExpectColumnValuesToBeBetween(column="xmin", min_value=0),
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="height", column_B="ymax", or_equal=True),
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="width", column_B="xmax", or_equal=True),
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="ymax", column_B="ymin", or_equal=True),
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="xmax", column_B="xmin", or_equal=True)]
    if task == "detection":
        return [E.ExpectColumnValuesToBeBetween(column="num_detections", min_value=0,
                                                max_value=max_detections or 1000)]
    if task == "segmentation":
        return [E.ExpectColumnValuesToBeBetween(column="finite_fraction", min_value=1.0, max_value=1.0),
                E.ExpectColumnValuesToBeBetween(column="min_class", min_value=0),
                E.ExpectColumnValuesToBeBetween(column="max_class", max_value=max(labels))]
    if asset == "probabilities":
        return [E.ExpectColumnValuesToNotBeNull(column="prob"),
                E.ExpectColumnValuesToBeBetween(column="prob", min_value=0, max_value=1),
                E.ExpectColumnValuesToBeInSet(column="cls", value_set=sorted(labels))]
    return [E.ExpectColumnValuesToBeBetween(column="sum", min_value=0.999, max_value=1.001)]


_prefetch: threading.Thread | None = None


def prefetch() -> None:
    """Import great-expectations (~2.5 s, most of it pandas and its own modules) in a background
    thread while the temporary server starts: the suite runs later without waiting for it. Idempotent;
    a failed import is only reported by ``run``, which imports it again."""
    global _prefetch
    if _prefetch is not None or "great_expectations" in sys.modules:
        return

    def load():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        try:
            import great_expectations  # noqa: F401
        except Exception:  # noqa: BLE001 - run() imports it again and reports what is wrong
            pass
    _prefetch = threading.Thread(target=load, name="gx-import", daemon=True)
    _prefetch.start()


def run(task: str, answers, *, labels: set[int], image_sizes, docs_dir: str | None,
        max_detections: int | None = None) -> list[dict]:
    """Run the suite; returns one check per expectation (name, passed, detail, numbers)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    # no progress bars in the step's log (TQDM_DISABLE above is too late when something imported tqdm
    # first): half of a validate log were "Calculating Metrics" bars
    from great_expectations.data_context.types.base import ProgressBarsConfig
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    ds = ctx.data_sources.add_pandas("served_outputs")
    checks, results = [], []
    for asset_name, df in frames(task, answers, image_sizes=image_sizes).items():
        bd = ds.add_dataframe_asset(name=asset_name).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{task}-{asset_name}"))
        for e in _expectations(task, asset_name, labels, max_detections):
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"served-{asset_name}", data=bd, suite=suite))
        cp = ctx.checkpoints.add(gx.Checkpoint(name=f"cp-{asset_name}", validation_definitions=[vd], actions=[]))
        result = cp.run(batch_parameters={"dataframe": df})
        for vr in result.run_results.values():
            results.append({"asset": asset_name, "rows": len(df), **vr.to_json_dict()})
            for r in vr.results:
                cfg = r.expectation_config
                kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "value_set")}
                unexpected = r.result.get("unexpected_count", 0) if r.result else 0
                checks.append({
                    "name": f"gx:{asset_name}:{cfg.type}({', '.join(f'{k}={v}' for k, v in kw.items())})",
                    "passed": bool(r.success),
                    "detail": "holds" if r.success else
                    f"{unexpected} unexpected value(s), e.g. {(r.result or {}).get('partial_unexpected_list', [])[:5]}",
                    "numbers": {"rows": len(df), "unexpected": unexpected}})
    if docs_dir:
        from validation import report
        report.write_gx(docs_dir, results)
    return checks
