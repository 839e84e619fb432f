"""``baseline``: the same validation without a baseline (a first release) and with one (the
regression gate: baseline and candidate in one server)."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from bench.validate_parts.common import serving_store, small_classifier, stage_golden_candidate


def with_baseline(rounds: int, n: int, image: str) -> dict:
    import logging

    from production import baseline as production_baseline
    from registry.config import ModelConfig
    from registry.publish import publish
    from registry.s3 import S3Uri
    from validation.validate import validate_candidate
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench-validate-baseline-")
    sw, s3 = serving_store(work)
    try:
        first, gated = S3Uri("serving", "first/"), S3Uri("serving", "gated/")
        sm_src = small_classifier(os.path.join(work, "sm-src"))
        gdir, cand_first = stage_golden_candidate(s3, first, sm_src, n, work)
        _, base = stage_golden_candidate(s3, gated, sm_src, n, os.path.join(work, "b"))
        publish(s3, gated, "bench-cls", base, allow_unvalidated=True)
        _, cand_gated = stage_golden_candidate(s3, gated, sm_src, n, os.path.join(work, "c"))

        def validate(serving, uri):
            model = ModelConfig(name="bench-cls", serving=serving, task="classification", golden=gdir + "/",
                                input_types={"serving_default": "image_tensor"})
            t = time.monotonic()
            v = validate_candidate(s3, model, uri, launcher="docker", image=image,
                                   baseline=production_baseline.choose(s3, model))
            if not v["passed"]:
                raise SystemExit(f"validation failed: {v['reason']}")
            return v, time.monotonic() - t

        validate(first, cand_first)  # untimed: one-time imports
        runs = {"without": (first, cand_first), "with": (gated, cand_gated)}
        res = {k: [] for k in runs}
        for r in range(rounds):
            for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                v, wall = validate(*runs[k])
                res[k].append(wall)
                g = v["regression"]
                extra = (f"; gate {g['status']}, memory MB {g['memory_mb']}, loads {g['load_seconds']}"
                         if k == "with" else "")
                print(f"  round {r} {k:7} baseline: {wall:6.1f}s{extra}", flush=True)
        w, wo = statistics.median(res["with"]), statistics.median(res["without"])
        print(f"validation of {n} golden images with a baseline {w:.1f}s vs without {wo:.1f}s = {w / wo:.2f}x "
              f"(target <= 1.6x: {'PASS' if w / wo <= 1.6 else 'FAIL'})")
        return {"with_s": res["with"], "without_s": res["without"], "ratio": w / wo, "images": n}
    finally:
        sw.stop()
        shutil.rmtree(work, ignore_errors=True)
