"""Benchmark: `tfs-release export` vs the bare Model Garden export CLI on the same checkpoint.

Ours does more: download from S3 (verified), checked restore, SavedModel, in-process reference
answers for the golden set, warmup records, staging upload. The baseline is
`python -m official.vision.serving.export_saved_model` on the same local checkpoint. Both run as
fresh processes (imports included), alternating, in the same run; wall time and peak RSS are
medians. Target: ours <= 1.3x the bare CLI.

    python bench/export.py [--kinds classification,segmentation,detection] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import services  # noqa: E402
from demo import checkpoint_cache  # noqa: E402

KINDS = {
    "classification": ("shapes-classifier", "resnet_imagenet", [64, 64]),
    "segmentation": ("shapes-segmenter", "seg_deeplabv3_pascal", [64, 64]),
    "detection": ("shapes-detector", "retinanet_resnetfpn_coco", [128, 128]),
}


def wrapped(cmd, env) -> tuple[float, float]:
    """Run cmd under a tiny Python wrapper that reports the child's own peak RSS."""
    wrapper = ("import resource,subprocess,sys,time,json;t=time.monotonic();"
               "r=subprocess.run(sys.argv[1:]);"
               "print(json.dumps({'rc':r.returncode,'s':time.monotonic()-t,"
               "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, cwd=ROOT, capture_output=True, text=True)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed:\n{p.stderr[-3000:]}")
    return res["s"], res["rss"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="classification,segmentation,detection")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-export-")
    sw = services.start_seaweedfs(os.path.join(work, "s3"))
    env = {**os.environ, **sw.env(), "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {}
    try:
        import boto3
        s3 = boto3.client("s3", endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                          aws_secret_access_key=sw.secret_key, region_name="us-east-1")
        for b in ("training", "serving"):
            s3.create_bucket(Bucket=b)
        for kind in a.kinds.split(","):
            name, experiment, size = KINDS[kind]
            ckdir = checkpoint_cache.get(kind)
            for f in checkpoint_cache.checkpoint_files(ckdir):
                s3.upload_file(os.path.join(ckdir, f), "training", f"{name}/checkpoints/{f}")
            override = os.path.join(ROOT, "config", f"{name}.params.yaml")
            cfg = os.path.join(work, f"{name}.yaml")
            with open(cfg, "w") as fh:
                yaml.safe_dump({"models": {name: {
                    "task": kind, "checkpoints": f"s3://training/{name}/checkpoints/",
                    "serving": f"s3://serving/{name}/", "golden": os.path.join(ROOT, "demo", "golden", name),
                    "experiment": experiment, "params_override": override, "input_size": size}}}, fh)
            latest = os.path.join(ckdir, open(os.path.join(ckdir, "checkpoint")).read()
                                  .split('"')[1].rsplit("/", 1)[-1])
            ours_cmd = [sys.executable, "-m", "cli", "export", name, "--config", cfg, "--json"]
            ours, bare = [], []
            for r in range(a.rounds):
                out = os.path.join(work, f"bare-{kind}-{r}")
                bare_cmd = [sys.executable, "-m", "official.vision.serving.export_saved_model",
                            f"--experiment={experiment}", f"--export_dir={out}", f"--checkpoint_path={latest}",
                            f"--config_file={os.path.join(ckdir, 'params.yaml')}", "--input_type=image_tensor",
                            f"--input_image_size={size[0]},{size[1]}"]
                pair = [("ours", ours_cmd), ("bare", bare_cmd)]
                for label, cmd in (pair if r % 2 == 0 else pair[::-1]):
                    s, rss = wrapped(cmd, env)
                    (ours if label == "ours" else bare).append((s, rss))
                    print(f"  {kind:14} round {r} {label:4}: {s:6.1f}s  peak RSS {rss:6.0f} MB", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            o_s, b_s = statistics.median(x[0] for x in ours), statistics.median(x[0] for x in bare)
            o_m, b_m = statistics.median(x[1] for x in ours), statistics.median(x[1] for x in bare)
            ratio = o_s / b_s
            results[kind] = {"ours_s": round(o_s, 2), "bare_s": round(b_s, 2), "ratio": round(ratio, 3),
                             "ours_rss_mb": round(o_m), "bare_rss_mb": round(b_m)}
            print(f"{kind:14} ours {o_s:6.1f}s / bare CLI {b_s:6.1f}s = {ratio:.2f}x "
                  f"({'PASS' if ratio <= 1.3 else 'MISS'} target <= 1.3x); peak RSS {o_m:.0f} MB vs {b_m:.0f} MB",
                  flush=True)
    finally:
        sw.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"bench": "export", "results": results}))


if __name__ == "__main__":
    main()
