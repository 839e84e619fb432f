"""Write a checkpoint that exports fine but must not ship: the demo model's architecture with
freshly initialised (random) weights, as training would write it after a bad restart.

    python demo/broken_checkpoint.py --kind classification --out DIR --step N   # writes DIR/ckpt-N.*
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", default="classification", choices=["classification", "segmentation", "detection"])
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, required=True)
    a = p.parse_args(argv)
    import tensorflow as tf
    from official.core import task_factory

    from demo import experiments
    tf.keras.utils.set_random_seed(7)
    params = experiments.load_params(a.kind)
    model = task_factory.get_task(params.task).build_model()
    path = tf.train.Checkpoint(model=model).write(os.path.join(a.out, f"ckpt-{a.step}"))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
