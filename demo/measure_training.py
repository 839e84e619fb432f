"""Measure the demo recipes: train each demo model with several seeds and check the final, an
intermediate (the first saved) and a random-weight checkpoint against the golden set with
demo/golden_gate.py. Writes demo/training_results/<model>.json and the per-image tables in
demo/TRAINING_RESULTS.md (between the "measured" markers).

    python demo/measure_training.py --kind classification --seeds 1 2 3
    python demo/measure_training.py --render            # only re-render the markdown from the JSON

Minutes per seed; run on a quiet machine when the wall times matter.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from demo import checkpoint_cache, experiments  # noqa: E402

RESULTS = os.path.join(ROOT, "demo", "training_results")
DOC = os.path.join(ROOT, "demo", "TRAINING_RESULTS.md")
BEGIN, END = "<!-- measured: begin (demo/measure_training.py) -->", "<!-- measured: end -->"
METRIC = {"classification": "p(label)", "segmentation": "mIoU", "detection": "min IoU"}
MARGIN = {"classification": "p(label) - best other p (top-1 needs > 0)",
          "segmentation": "mIoU - min_miou",
          "detection": "worst of score - min_score, IoU - min_iou (per expected object) and "
                       "min_score - best unmatched score"}
SET_METRIC = {"classification": ("accuracy",), "segmentation": ("miou_set", "miou_per_image_mean"),
              "detection": ("ap50", "map", "precision", "recall")}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _steps(folder: str) -> list[int]:
    return sorted(int(f[len("ckpt-"):-len(".index")]) for f in os.listdir(folder) if f.endswith(".index"))


def _short(g: dict) -> dict:
    return {"passed": g["passed"], "failed": len(g["failed"]), "metrics": g["metrics"], "worst": g["worst"],
            "images": {k: [v["metric"], v["margin"]] for k, v in g["images"].items()}}


def measure(kind: str, seeds: list[int], runs_dir: str | None) -> dict:
    model = experiments.spec(kind).model_name
    out = {"kind": kind, "model": model, "params": f"config/{model}.params.yaml", "seeds": {}}
    work = tempfile.mkdtemp(prefix=f"measure-{kind}-")
    try:
        for seed in seeds:
            folder = os.path.join(runs_dir, f"{kind}-seed{seed}") if runs_dir else os.path.join(work, str(seed))
            t0 = time.monotonic()
            if not (runs_dir and os.path.exists(os.path.join(folder, "checkpoint"))):
                log = open(os.path.join(work, f"train-{seed}.log"), "w")
                subprocess.run([sys.executable, os.path.join(ROOT, "demo", "train.py"), "--kind", kind, "--out",
                                folder, "--seed", str(seed)], check=True, cwd=ROOT, env=_env(), stdout=log, stderr=log)
            train_s = time.monotonic() - t0
            steps = _steps(folder)
            final = checkpoint_cache.gate(kind, os.path.join(folder, f"ckpt-{steps[-1]}"))
            early = checkpoint_cache.gate(kind, os.path.join(folder, f"ckpt-{steps[0]}"))
            out["seeds"][str(seed)] = {"train_seconds": round(train_s, 1), "final_step": steps[-1],
                                       "intermediate_step": steps[0], "final": _short(final),
                                       "intermediate": _short(early)}
            if kind in checkpoint_cache.REGRESSION_SCAN:  # the demo's gate-only regression: which checkpoint
                scan = checkpoint_cache.gate(kind, folder).get("regression_scan") or {}
                cand = scan.get("candidate")
                out["seeds"][str(seed)]["regression_scan"] = {
                    "threshold": round(scan.get("tolerance", 0) + scan.get("margin", 0), 4),
                    "candidate": cand and {"step": cand["step"], "drops": cand["drops"],
                                           "worst": cand["worst"]["margin"]},
                    "scanned": scan.get("scanned", [])}
            print(f"[{model}] seed {seed}: final ckpt-{steps[-1]} {'PASS' if final['passed'] else 'FAIL'} "
                  f"worst {final['worst']['margin']:+.3f}; ckpt-{steps[0]} "
                  f"{'PASS' if early['passed'] else 'FAIL'} ({len(early['failed'])} failed)", flush=True)
        rnd = os.path.join(work, "random")
        subprocess.run([sys.executable, os.path.join(ROOT, "demo", "broken_checkpoint.py"), "--kind", kind,
                        "--out", rnd, "--step", "1"], check=True, cwd=ROOT, env=_env(), capture_output=True)
        out["random"] = _short(checkpoint_cache.gate(kind, os.path.join(rnd, "ckpt-1")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{model}.json"), "w") as fh:
        json.dump(out, fh, indent=1, sort_keys=True)
    return out


def _fmt_metrics(kind: str, m: dict) -> str:
    return ", ".join(f"{k} {m[k]:.3f}" for k in SET_METRIC[kind] if isinstance(m.get(k), (int, float)))


def render() -> str:
    parts = []
    for kind in ("classification", "segmentation", "detection"):
        model = experiments.spec(kind).model_name
        path = os.path.join(RESULTS, f"{model}.json")
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            r = json.load(fh)
        seeds = sorted(r["seeds"], key=int)
        parts.append(f"### {model} ({kind})\n")
        parts.append("| checkpoint | " + " | ".join(f"seed {s}" for s in seeds) + " |")
        parts.append("|---|" + "---|" * len(seeds))
        for which in ("final", "intermediate"):
            cells = []
            for s in seeds:
                x = r["seeds"][s]
                g = x[which]
                cells.append(f"ckpt-{x[which + '_step']}: **{'pass' if g['passed'] else 'FAIL'}** "
                             f"({g['failed']} failed check(s)); {_fmt_metrics(kind, g['metrics'])}; "
                             f"worst margin {g['worst']['margin']:+.3f} ({g['worst']['image']})")
            parts.append(f"| {which} | " + " | ".join(cells) + " |")
        if any("regression_scan" in r["seeds"][s] for s in seeds):
            cells = []
            for s in seeds:
                scan = r["seeds"][s].get("regression_scan") or {}
                c = scan.get("candidate")
                seen = ", ".join(f"ckpt-{x['step']} {'pass' if x['passed'] else 'FAIL'} drop {max(x['drops'].values()):+.3f}"
                                 for x in scan.get("scanned", []))
                cells.append((f"ckpt-{c['step']}: **pass**, worst margin {c['worst']:+.3f}; drops "
                              + ", ".join(f"{k} {v:+.3f}" for k, v in c["drops"].items()) if c else "**none**")
                             + f" (needs a drop > {scan.get('threshold')}; scanned {seen})")
            parts.append("| regression candidate (demo) | " + " | ".join(cells) + " |")
        g = r["random"]
        parts.append("| random weights | " + " | ".join(
            [f"**{'pass' if g['passed'] else 'FAIL'}** ({g['failed']} failed check(s)); "
             f"{_fmt_metrics(kind, g['metrics'])}"] + [""] * (len(seeds) - 1)) + " |")
        parts.append("| training wall time (shared, loaded machine) | " + " | ".join(
            f"{r['seeds'][s]['train_seconds']:.0f} s" if r["seeds"][s]["train_seconds"] >= 1 else "(folder reused)"
            for s in seeds) + " |")
        parts.append("")
        parts.append(f"Every golden image of the final checkpoints: {METRIC[kind]} and margin "
                     f"({MARGIN[kind]}); worst first by the lowest margin over the seeds.\n")
        parts.append("<details><summary>per-image table</summary>\n")
        parts.append("| image | " + " | ".join(f"seed {s} {METRIC[kind]} / margin" for s in seeds) + " |")
        parts.append("|---|" + "---|" * len(seeds))
        names = list(r["seeds"][seeds[0]]["final"]["images"])
        names.sort(key=lambda n: min(r["seeds"][s]["final"]["images"][n][1] for s in seeds))
        for n in names:
            parts.append(f"| {n} | " + " | ".join(
                "{:.3f} / {:+.3f}".format(*r["seeds"][s]["final"]["images"][n]) for s in seeds) + " |")
        parts.append("\n</details>\n")
    return "\n".join(parts)


def write_doc() -> None:
    with open(DOC) as fh:
        doc = fh.read()
    if BEGIN not in doc:
        doc = doc.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(DOC, "w") as fh:
        fh.write(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=sorted(experiments.KINDS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--runs-dir", help="keep (and reuse) the training folders here: <kind>-seed<N>/")
    p.add_argument("--render", action="store_true", help="only re-render the markdown")
    a = p.parse_args(argv)
    if not a.render:
        if not a.kind:
            p.error("--kind is required unless --render")
        measure(a.kind, a.seeds, a.runs_dir)
    write_doc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
