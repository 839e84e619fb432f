"""Benchmark: the serving side of validation.

Two parts, each measured against a baseline in the same run:
- ``launchers``: for a trained demo classifier (exported here from the cached demo checkpoint),
  time from start to AVAILABLE and golden-request throughput over REST and gRPC, for the docker
  launcher (stand-in image) and for the bare stand-in process (the baseline);
- ``golden-size``: wall time of a whole validation (``validate_candidate`` in this process: download,
  temporary server through the docker launcher with the stand-in image, batched golden requests,
  latency sample, checks, report upload) of one small SavedModel against golden sets of 8, 100 and
  500 images (``demo/shapes.py`` classification sets; labels set to the model's own answers so every
  image passes), printing each size's ratio to the 8-image run (target: 500 images <= 3x) and, for
  the largest set, the same validation with ``validation_batch_size: 1`` (one image per request);
- ``baseline``: the same validation (100 golden images) of one candidate without a baseline (a
  model's first release, the baseline of this part) and with one (the regression gate: a published
  version loaded beside it in the same server, empty -> baseline -> both for the memory readings,
  the baseline's answers to every golden image, interleaved latency; target: at most 1.6x);
- ``no-tensorflow``: wall time of the validation step as release runs it (``tfs-release validate`` in
  a fresh process, docker launcher with the stand-in image, S3 download, contract, temporary server,
  golden requests over REST and gRPC, checks, report upload) of the demo classifier (exported from
  the cached demo checkpoint, its 150-image golden set) with the TensorFlow-free clients
  (``tfs_api/protos.py``) vs the path they replaced (the same process with the old client
  code: ``tensorflow_serving``'s stubs and ``tf.make_tensor_proto`` / ``tf.make_ndarray``, the static
  check through ``tensorflow.core.protobuf``: each imports all of TensorFlow), the baseline; also the
  bare import cost of each path (``python -c`` importing the clients and building a request) and
  whether ``tensorflow`` got imported. Target: at most 0.6x.

    python bench/validate.py [--part all|launchers|golden-size|baseline|no-tensorflow] [--rounds 3]
                             [--requests 200] [--sizes 8,100,500]

One module per part in bench/validate_parts/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "launchers", "golden-size", "baseline", "no-tensorflow"], default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--sizes", default="8,100,500", help="golden-set sizes, the first is the baseline")
    a = ap.parse_args()
    import services
    from standin.image import ensure_image
    services.ensure_docker()
    image = ensure_image()
    from bench.validate_parts import gate, golden_size, launchers, no_tensorflow
    out = {"bench": "validate"}
    if a.part in ("all", "golden-size"):
        out["golden_size"] = golden_size.golden_sizes(a.rounds, [int(x) for x in a.sizes.split(",")], image)
    if a.part in ("all", "launchers"):
        out["launchers"] = launchers.launchers(a.rounds, a.requests, image)
    if a.part in ("all", "baseline"):
        out["baseline"] = gate.with_baseline(a.rounds, 100, image)
    if a.part in ("all", "no-tensorflow"):
        out["no_tensorflow"] = no_tensorflow.no_tensorflow(a.rounds, image)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
