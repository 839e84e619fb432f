"""Held-out quality of a demo checkpoint, and of the same model untrained.

Runs the Model Garden *serving* module (``serve(uint8 images)``, the function
the exported SavedModel's ``serving_default`` runs) on N seeded shapes images
whose seed differs from training, and reports:

- classification: top-1 accuracy (chance 1/3)
- segmentation: mIoU over the 4 classes incl. background
- detection: precision / recall at IoU >= 0.5 for detections with
  score >= 0.5 (class-aware, greedy by score, each box matched once)

  python demo/evaluate.py --kind detection --checkpoint /tmp/ckpt/shapes-detector
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from demo import experiments  # noqa: E402
from demo import shapes  # noqa: E402

EVAL_SEED = 10_000  # training uses seed 1 by default
DEFAULT_COUNT = 200
IOU_THRESHOLD = 0.5
SCORE_THRESHOLD = 0.5


# ---------------------------------------------------------------------------
# held-out data and metrics (numpy only)


def held_out(kind: str, count: int = DEFAULT_COUNT, seed: int = EVAL_SEED):
  """(uint8 images [N,H,W,3], truth) with truth per kind:
  labels [N] | masks [N,H,W] | list of shapes.Scene."""
  size = experiments.spec(kind).image_size
  if kind == 'classification':
    return shapes.classification_set(count, seed, size)
  if kind == 'segmentation':
    return shapes.segmentation_set(count, seed, size)
  scenes = shapes.detection_set(count, seed, size)
  return np.stack([s.image for s in scenes]), scenes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU matrix between [N,4] and [M,4] boxes (ymin, xmin, ymax, xmax)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  ymin = np.maximum(a[:, None, 0], b[None, :, 0])
  xmin = np.maximum(a[:, None, 1], b[None, :, 1])
  ymax = np.minimum(a[:, None, 2], b[None, :, 2])
  xmax = np.minimum(a[:, None, 3], b[None, :, 3])
  inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def classification_metrics(outputs: dict, labels: np.ndarray) -> dict:
  pred = np.argmax(outputs['probs'], axis=-1)
  return {'accuracy': float(np.mean(pred == labels)), 'count': int(len(labels))}


def segmentation_metrics(outputs: dict, masks: np.ndarray,
                         num_classes: int = 4) -> dict:
  pred = np.argmax(outputs['logits'], axis=-1)
  if pred.shape != masks.shape:
    raise ValueError(f'prediction shape {pred.shape} != mask shape {masks.shape}')
  cm = np.bincount(masks.astype(np.int64).ravel() * num_classes + pred.ravel(),
                   minlength=num_classes * num_classes).reshape(
                       num_classes, num_classes)
  inter = np.diag(cm).astype(np.float64)
  union = cm.sum(0) + cm.sum(1) - inter
  iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
  return {'miou': float(np.nanmean(iou)),
          'iou': [None if np.isnan(v) else round(float(v), 4) for v in iou],
          'pixel_accuracy': float(inter.sum() / cm.sum()),
          'count': int(len(masks))}


def detection_metrics(outputs: dict, scenes: list,
                      iou_threshold: float = IOU_THRESHOLD,
                      score_threshold: float = SCORE_THRESHOLD) -> dict:
  tp = n_pred = n_gt = 0
  for i, scene in enumerate(scenes):
    n = int(np.asarray(outputs['num_detections'][i]).reshape(-1)[0])
    boxes = np.asarray(outputs['detection_boxes'][i][:n])
    scores = np.asarray(outputs['detection_scores'][i][:n])
    classes = np.asarray(outputs['detection_classes'][i][:n]).astype(np.int64)
    keep = scores >= score_threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind='stable')
    boxes, classes = boxes[order], classes[order]
    n_pred += len(boxes)
    n_gt += len(scene.classes)
    if not len(boxes) or not len(scene.classes):
      continue
    ious = box_iou(boxes, scene.boxes)
    matched = np.zeros(len(scene.classes), bool)
    for j in range(len(boxes)):
      cand = np.where(~matched & (scene.classes == classes[j]) &
                      (ious[j] >= iou_threshold))[0]
      if len(cand):
        matched[cand[np.argmax(ious[j][cand])]] = True
        tp += 1
  return {'precision': tp / n_pred if n_pred else 0.0,
          'recall': tp / n_gt if n_gt else 0.0,
          'true_positives': tp, 'detections': n_pred, 'objects': n_gt,
          'iou_threshold': iou_threshold, 'score_threshold': score_threshold,
          'count': len(scenes)}


def metrics(kind: str, outputs: dict, truth) -> dict:
  return {'classification': classification_metrics,
          'segmentation': segmentation_metrics,
          'detection': detection_metrics}[kind](outputs, truth)


HEADLINE = {'classification': ('accuracy',), 'segmentation': ('miou',),
            'detection': ('precision', 'recall')}


def headline(kind: str, m: dict) -> str:
  return ' '.join(f'{k} {m[k]:.3f}' for k in HEADLINE[kind])


# ---------------------------------------------------------------------------
# running the model (TensorFlow)


def predict(serve_fn, images: np.ndarray, batch_size: int = 32) -> dict:
  """Calls serve_fn(uint8 batch) -> dict of tensors; concatenates numpy."""
  import tensorflow as tf
  parts = []
  for i in range(0, len(images), batch_size):
    out = serve_fn(tf.constant(images[i:i + batch_size]))
    parts.append({k: np.asarray(v) for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def params_for(kind: str, checkpoint: str | None):
  """params.yaml beside the checkpoint if there is one, else config/."""
  if checkpoint:
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(
        checkpoint)
    candidate = os.path.join(folder, 'params.yaml')
    if os.path.exists(candidate):
      return experiments.load_params(kind, candidate)
  return experiments.load_params(kind)


def evaluate(kind: str, checkpoint: str | None, count: int = DEFAULT_COUNT,
             seed: int = EVAL_SEED, init_seed: int = 0, params=None) -> dict:
  """Metrics of ``checkpoint`` (None: freshly initialised, seeded weights)."""
  import tensorflow as tf
  import tf_keras

  params = params or params_for(kind, checkpoint)
  tf.keras.utils.set_random_seed(init_seed)
  tf_keras.utils.set_random_seed(init_seed)
  module = experiments.serving_module(kind, params)
  if checkpoint:
    experiments.restore_model(module.model, checkpoint)
  images, truth = held_out(kind, count, seed)
  t0 = time.time()
  outputs = predict(tf.function(module.serve), images)
  m = metrics(kind, outputs, truth)
  m['seconds'] = round(time.time() - t0, 2)
  m['checkpoint'] = checkpoint or 'random-init'
  return m


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--kind', required=True, choices=sorted(experiments.KINDS))
  p.add_argument('--checkpoint', required=True,
                 help='checkpoint directory (newest) or ckpt-N prefix')
  p.add_argument('--count', type=int, default=DEFAULT_COUNT)
  p.add_argument('--seed', type=int, default=EVAL_SEED,
                 help='held-out data seed (training uses 1)')
  p.add_argument('--no-random', action='store_true',
                 help='skip the untrained (random weights) baseline')
  p.add_argument('--json', action='store_true')
  a = p.parse_args(argv)
  result = {'kind': a.kind,
            'trained': evaluate(a.kind, a.checkpoint, a.count, a.seed)}
  if not a.no_random:
    result['random'] = evaluate(a.kind, None, a.count, a.seed)
  if a.json:
    print(json.dumps(result))
  else:
    for which in ('trained', 'random'):
      if which in result:
        print(f'[{a.kind}] {which:7s} {headline(a.kind, result[which])} '
              f'({result[which]["count"]} held-out images, seed {a.seed}; '
              f'{result[which]["checkpoint"]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
