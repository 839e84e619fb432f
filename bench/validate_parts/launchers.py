"""``launchers``: start -> AVAILABLE and golden throughput over REST and gRPC, the docker launcher
(stand-in image) vs the bare stand-in process (the baseline)."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from bench.validate_parts import ROOT
from bench.validate_parts.common import export_classifier


def measure(launcher, base: str, images, requests: int) -> dict:
    from tfs_api.inputs import model_input
    from tfs_api.clients import GrpcClient, RestClient, wait_available
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


def launchers(rounds: int, requests: int, image: str) -> dict:
    from exporters import golden
    from serving.launchers import DockerLauncher, ProcessLauncher
    work = tempfile.mkdtemp(prefix="bench-validate-")
    try:
        base = export_classifier(os.path.join(work, "models"))
        images = golden.load(os.path.join(ROOT, "demo", "golden", "shapes-classifier") + "/").images
        res = {"docker": [], "process": []}
        for r in range(rounds):
            order = [("docker", DockerLauncher(image, run_id="bench")), ("process", ProcessLauncher())]
            for name, launcher in (order if r % 2 == 0 else order[::-1]):
                m = measure(launcher, base, images, requests)
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
        return {"medians": med, "rounds": rounds, "requests": requests}
    finally:
        shutil.rmtree(work, ignore_errors=True)
