"""Benchmark: the serving side of validation.

For a trained demo classifier (exported here from the cached demo checkpoint), measured in the
same run: time from start to AVAILABLE and golden-request throughput over REST and gRPC, for
the docker launcher (stand-in image) and for the bare stand-in process (the baseline).

    python bench/validate.py [--rounds 3] [--requests 200]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_classifier(dest: str) -> str:
    from demo import checkpoint_cache
    from exporters import model_garden, params as params_mod
    ckdir = checkpoint_cache.get("classification")
    params, _ = params_mod.resolve("resnet_imagenet", os.path.join(ROOT, "config", "shapes-classifier.params.yaml"),
                                   os.path.join(ckdir, "params.yaml"))
    module, _ = model_garden.build_module(params, task="classification", input_size=(64, 64))
    import tensorflow as tf
    model_garden.restore(module, tf.train.latest_checkpoint(ckdir), experiment="resnet_imagenet")
    sm = os.path.join(dest, "shapes-classifier", "1")
    model_garden.export(module, params, sm, {"serving_default": "image_tensor"})
    return dest


def measure(launcher, base: str, images, requests: int) -> dict:
    from exporters.reference import model_input
    from validation.clients import GrpcClient, RestClient, wait_available
    t0 = time.monotonic()
    server = launcher.start(base, "shapes-classifier")
    try:
        rest = RestClient(server.host, server.rest_port, "shapes-classifier")
        wait_available(rest, deadline_s=300, alive=server.alive, poll=0.05)
        up = time.monotonic() - t0
        grpc = GrpcClient(server.host, server.grpc_port, "shapes-classifier")
        out = {"available_s": up}
        for name, client in (("rest", rest), ("grpc", grpc)):
            xs = [model_input("image_tensor", g) for g in images]
            client.predict("serving_default", "image_tensor", xs[0])  # first call outside the timing
            t = time.perf_counter()
            for i in range(requests):
                client.predict("serving_default", "image_tensor", xs[i % len(xs)])
            out[f"{name}_rps"] = requests / (time.perf_counter() - t)
        grpc.close()
        return out
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    import services
    from exporters import golden
    from standin.image import ensure_image
    from validation.launchers import DockerLauncher, ProcessLauncher
    services.ensure_docker()
    image = ensure_image()
    work = tempfile.mkdtemp(prefix="bench-validate-")
    try:
        base = export_classifier(os.path.join(work, "models"))
        images = golden.load(os.path.join(ROOT, "demo", "golden", "shapes-classifier") + "/").images
        res = {"docker": [], "process": []}
        for r in range(a.rounds):
            order = [("docker", DockerLauncher(image, run_id="bench")), ("process", ProcessLauncher())]
            for name, launcher in (order if r % 2 == 0 else order[::-1]):
                m = measure(launcher, base, images, a.requests)
                res[name].append(m)
                print(f"  round {r} {name:7}: AVAILABLE after {m['available_s']:5.1f}s, REST {m['rest_rps']:6.1f} req/s, "
                      f"gRPC {m['grpc_rps']:6.1f} req/s", flush=True)
        med = {n: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for n, ms in res.items()}
        d, p = med["docker"], med["process"]
        print(f"start -> AVAILABLE: docker {d['available_s']:.1f}s vs bare stand-in process {p['available_s']:.1f}s "
              f"= {d['available_s'] / p['available_s']:.2f}x")
        for n in ("docker", "process"):
            print(f"{n:7}: gRPC {med[n]['grpc_rps']:.1f} req/s vs REST {med[n]['rest_rps']:.1f} req/s "
                  f"= {med[n]['grpc_rps'] / med[n]['rest_rps']:.2f}x")
        print(f"docker vs process throughput: REST {d['rest_rps'] / p['rest_rps']:.2f}x, gRPC {d['grpc_rps'] / p['grpc_rps']:.2f}x")
        print(json.dumps({"bench": "validate", "medians": med, "rounds": a.rounds, "requests": a.requests}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
