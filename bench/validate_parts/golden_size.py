"""``golden-size``: whole-validation wall time for golden sets of 8, 100 and 500 images (and the
largest one image per request), each against the first size."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from bench.validate_parts.common import serving_store, small_classifier, stage_golden_candidate


def golden_sizes(rounds: int, sizes: list[int], image: str) -> dict:
    import logging

    from registry.config import ModelConfig
    from registry.s3 import S3Uri
    from validation.validate import validate_candidate
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench-validate-golden-")
    sw, s3 = serving_store(work)
    try:
        serving = S3Uri("serving", "bench-cls/")
        sm_src = small_classifier(os.path.join(work, "sm-src"))
        cands = {n: stage_golden_candidate(s3, serving, sm_src, n, work) for n in sizes}
        runs = [(n, None) for n in sizes] + [(max(sizes), 1)]  # last: the largest set one image per request
        res: dict = {r: [] for r in runs}

        def validate(n, bs):
            gdir, uri = cands[n]
            model = ModelConfig(name="bench-cls", serving=serving, task="classification", golden=gdir + "/",
                                input_types={"serving_default": "image_tensor"},
                                extra={"validation_batch_size": bs} if bs else {})
            t = time.monotonic()
            v = validate_candidate(s3, model, uri, launcher="docker", image=image, baseline=None)
            if not v["passed"]:
                raise SystemExit(f"validation of the {n}-image set failed: {v['reason']}")
            return v, time.monotonic() - t

        t = time.monotonic()
        validate(min(sizes), None)  # untimed: the validator's one-time imports (great-expectations ~10 s)
        print(f"  warm-up validation (one-time imports), not counted: {time.monotonic() - t:.1f}s", flush=True)
        for r in range(rounds):
            for n, bs in (runs if r % 2 == 0 else runs[::-1]):
                v, wall = validate(n, bs)
                req = v["golden_requests"]
                m = {"wall_s": wall, "available_s": v["seconds_to_available"],
                     "without_start_s": wall - v["seconds_to_available"],
                     "golden_requests_s": sum(x["seconds"] for x in req.values()),
                     "requests": sum(x["requests"] for x in req.values())}
                res[(n, bs)].append(m)
                print(f"  round {r} {n:4} images{' (batch 1)' if bs else '':10}: {wall:6.1f}s (AVAILABLE after "
                      f"{m['available_s']:.1f}s, golden requests {m['golden_requests_s']:.1f}s in {m['requests']} "
                      f"requests)", flush=True)
        med = {k: {f: statistics.median(x[f] for x in ms) for f in ms[0]} for k, ms in res.items()}
        base = med[(min(sizes), None)]["wall_s"]
        for n in sizes:
            w = med[(n, None)]["wall_s"]
            print(f"{n:4} golden images: validation {w:.1f}s = {w / base:.2f}x the {min(sizes)}-image run"
                  + (f" (target <= 3x: {'PASS' if w / base <= 3 else 'FAIL'})" if n == max(sizes) else ""))
        pairs = [res[(max(sizes), None)][r]["wall_s"] / res[(min(sizes), None)][r]["wall_s"] for r in range(rounds)]
        print(f"{max(sizes)} / {min(sizes)} images per round: " + ", ".join(f"{x:.2f}x" for x in pairs)
              + f" (median {statistics.median(pairs):.2f}x)")
        rest0 = med[(min(sizes), None)]["without_start_s"]
        for n in sizes:
            m = med[(n, None)]
            print(f"{n:4} golden images without start -> AVAILABLE (the part most exposed to other load): "
                  f"{m['without_start_s']:.1f}s = {m['without_start_s'] / rest0:.2f}x; golden requests "
                  f"{m['golden_requests_s']:.2f}s in {m['requests']:.0f} requests")
        one = med[(max(sizes), 1)]["wall_s"]
        print(f"{max(sizes):4} golden images one per request (validation_batch_size: 1): {one:.1f}s = "
              f"{one / base:.2f}x the {min(sizes)}-image run; batched / one-per-request = "
              f"{med[(max(sizes), None)]['wall_s'] / one:.2f}x")
        return {"medians": {f"{n}" + ("-batch1" if bs else ""): m for (n, bs), m in med.items()}, "rounds": rounds,
                "ratio_per_round": pairs}
    finally:
        sw.stop()
        shutil.rmtree(work, ignore_errors=True)
