"""Checkpoints of the demo trainer, cached outside the clone and keyed by a hash of the trainer's
code, the params override, the steps and the seed: training runs once per change, not per test run.

    python demo/checkpoint_cache.py KIND [--steps N]   # prints the cached folder (trains if needed)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.environ.get("TFS_RELEASE_CACHE", os.path.expanduser("~/.cache/tfs-release")),
                     "checkpoints")
MODELS = {"classification": "shapes-classifier", "segmentation": "shapes-segmenter",
          "detection": "shapes-detector"}
CODE = ("demo/train.py", "demo/shapes.py", "demo/experiments.py")


def key(kind: str, steps: int | None, seed: int | None) -> str:
    h = hashlib.sha256(f"{kind}|{steps}|{seed}".encode())
    for rel in CODE + (f"config/{MODELS[kind]}.params.yaml",):
        with open(os.path.join(REPO, rel), "rb") as fh:
            h.update(rel.encode() + b"\0" + fh.read())
    return h.hexdigest()[:16]


def get(kind: str, *, steps: int | None = None, seed: int | None = None, log=sys.stderr) -> str:
    """Folder with ckpt-N files, the `checkpoint` state file and params.yaml (trains when missing)."""
    dest = os.path.join(CACHE, f"{MODELS[kind]}-{steps or 'full'}-{key(kind, steps, seed)}")
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    tmp = dest + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, os.path.join(REPO, "demo", "train.py"), "--kind", kind, "--out", tmp]
    if steps:
        cmd += ["--steps", str(steps)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    print(f"training the demo {kind} model (cached in {dest}; minutes, once per trainer change)",
          file=log, flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO,
                                                  "TF_CPP_MIN_LOG_LEVEL": "2"})
    open(os.path.join(tmp, ".complete"), "w").close()
    os.makedirs(CACHE, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    print(f"trained {kind} in {time.monotonic() - t0:.0f}s", file=log, flush=True)
    return dest


def checkpoint_files(folder: str) -> list[str]:
    """What a training job uploads: ckpt-*, the state file, params.yaml."""
    return sorted(f for f in os.listdir(folder) if f.startswith("ckpt-") or f in ("checkpoint", "params.yaml"))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=sorted(MODELS))
    p.add_argument("--steps", type=int)
    a = p.parse_args()
    print(get(a.kind, steps=a.steps))
