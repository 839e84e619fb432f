"""Unit tests for the numpy metrics in demo/evaluate.py (no TensorFlow needed)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))

from demo import evaluate  # noqa: E402
from demo import shapes  # noqa: E402


def test_box_iou_known_values():
  a = np.array([[0, 0, 10, 10]], np.float32)
  b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], np.float32)
  np.testing.assert_allclose(evaluate.box_iou(a, b)[0], [1.0, 25 / 175, 0.0])


def _detections(scene_list, jitter=0.0, drop_last=False, wrong_class=False):
  n = max(len(s.classes) for s in scene_list)
  boxes = np.zeros((len(scene_list), n, 4), np.float32)
  scores = np.zeros((len(scene_list), n), np.float32)
  classes = np.zeros((len(scene_list), n), np.int32)
  num = np.zeros((len(scene_list),), np.int32)
  for i, s in enumerate(scene_list):
    k = len(s.classes) - (1 if drop_last and len(s.classes) > 1 else 0)
    boxes[i, :k] = s.boxes[:k] + jitter
    scores[i, :k] = 0.9
    classes[i, :k] = (s.classes[:k] % 3) + 1 if wrong_class else s.classes[:k]
    num[i] = k
  return {'detection_boxes': boxes, 'detection_scores': scores,
          'detection_classes': classes, 'num_detections': num}


def test_detection_metrics_perfect_and_wrong():
  scenes = shapes.detection_set(10, 3)
  perfect = evaluate.detection_metrics(_detections(scenes), scenes)
  assert perfect['precision'] == 1.0 and perfect['recall'] == 1.0
  wrong = evaluate.detection_metrics(_detections(scenes, wrong_class=True), scenes)
  assert wrong['precision'] == 0.0 and wrong['recall'] == 0.0
  far = evaluate.detection_metrics(_detections(scenes, jitter=200.0), scenes)
  assert far['true_positives'] == 0


def test_detection_metrics_missing_and_low_scores():
  scenes = shapes.detection_set(20, 4)
  partial = evaluate.detection_metrics(_detections(scenes, drop_last=True), scenes)
  assert partial['precision'] == 1.0
  assert partial['recall'] < 1.0
  low = _detections(scenes)
  low['detection_scores'][:] = 0.4
  none = evaluate.detection_metrics(low, scenes)
  assert none['detections'] == 0 and none['precision'] == 0.0


def test_segmentation_miou():
  _, masks = shapes.segmentation_set(5, 2)
  onehot = np.eye(4, dtype=np.float32)[masks]
  assert evaluate.segmentation_metrics({'logits': onehot}, masks)['miou'] == 1.0
  background = np.zeros_like(onehot)
  background[..., 0] = 1.0
  m = evaluate.segmentation_metrics({'logits': background}, masks)
  assert m['iou'][1:] == [0.0, 0.0, 0.0]
  assert m['miou'] == pytest.approx(m['iou'][0] / 4, abs=1e-4)


def test_classification_accuracy():
  labels = np.array([0, 1, 2, 2])
  probs = np.eye(3)[[0, 1, 2, 0]]
  assert evaluate.classification_metrics({'probs': probs}, labels)['accuracy'] == 0.75
