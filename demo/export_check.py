"""Smoke check: a demo checkpoint exports with Model Garden and the SavedModel loads.

Exports with ``export_saved_model_lib.export_inference_graph(input_type=
'image_tensor', batch_size=None, ...)`` using the ``params.yaml`` the training
run wrote, loads the result with ``tf.saved_model.load``, runs
``serving_default`` on held-out shapes images, and compares with the
in-process serving module (max abs difference) and the metric.

This is not the exporter package (exporters/ is); it only proves the demo
checkpoints are what the exporter expects.

  python demo/export_check.py --kind classification \
      --checkpoint /tmp/ckpt/shapes-classifier/ckpt-600
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from demo import evaluate  # noqa: E402
from demo import experiments  # noqa: E402


def _dir_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def export_and_check(kind: str, checkpoint: str, export_dir: str | None = None,
                     count: int = 64) -> dict:
  import tensorflow as tf
  from official.vision.serving import export_saved_model_lib

  size = experiments.spec(kind).image_size
  if os.path.isdir(checkpoint):
    checkpoint = tf.train.latest_checkpoint(checkpoint)
  params = evaluate.params_for(kind, checkpoint)
  export_dir = export_dir or tempfile.mkdtemp(prefix=f'export-{kind}-')

  t0 = time.time()
  export_saved_model_lib.export_inference_graph(
      input_type='image_tensor', batch_size=None, input_image_size=[size, size],
      params=params, checkpoint_path=checkpoint, export_dir=export_dir)
  export_seconds = time.time() - t0

  t0 = time.time()
  loaded = tf.saved_model.load(export_dir)
  load_seconds = time.time() - t0
  signature = loaded.signatures['serving_default']
  (input_name, input_spec), = signature.structured_input_signature[1].items()
  images, truth = evaluate.held_out(kind, count)
  saved = evaluate.predict(lambda x: signature(**{input_name: x}), images)

  module = experiments.serving_module(kind, params)
  experiments.restore_model(module.model, checkpoint)
  direct = evaluate.predict(tf.function(module.serve), images)
  max_diff = {k: float(np.max(np.abs(saved[k].astype(np.float64) -
                                     direct[k].astype(np.float64))))
              for k in saved if k in direct}
  return {
      'kind': kind, 'checkpoint': checkpoint, 'export_dir': export_dir,
      'export_seconds': round(export_seconds, 1),
      'load_seconds': round(load_seconds, 1),
      'saved_model_bytes': _dir_size(export_dir),
      'input': {'name': input_name, 'dtype': input_spec.dtype.name,
                'shape': input_spec.shape.as_list()},
      'outputs': {k: [v.dtype.name, v.shape.as_list()]
                  for k, v in signature.structured_outputs.items()},
      'max_abs_diff_vs_in_process': max_diff,
      'saved_model_metrics': evaluate.metrics(kind, saved, truth),
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--kind', required=True, choices=sorted(experiments.KINDS))
  p.add_argument('--checkpoint', required=True,
                 help='ckpt-N prefix or checkpoint directory (newest)')
  p.add_argument('--export-dir', default=None,
                 help='where to write the SavedModel (default: a temp dir)')
  p.add_argument('--count', type=int, default=64)
  a = p.parse_args(argv)
  result = export_and_check(a.kind, a.checkpoint, a.export_dir, a.count)
  print(json.dumps(result, indent=1, default=str))
  return 0


if __name__ == '__main__':
  sys.exit(main())
