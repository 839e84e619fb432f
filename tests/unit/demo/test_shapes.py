"""Unit tests for demo/shapes.py (numpy + pillow only; no TensorFlow)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))

from demo import shapes  # noqa: E402


def _assert_tight_box(mask: np.ndarray, box: np.ndarray):
  """Every mask pixel lies inside the box and every box edge touches one."""
  ymin, xmin, ymax, xmax = (int(v) for v in box)
  assert np.all(box == np.round(box)), box
  assert 0 <= ymin < ymax <= mask.shape[0]
  assert 0 <= xmin < xmax <= mask.shape[1]
  ys, xs = np.nonzero(mask)
  assert len(ys) > 0
  assert ys.min() == ymin and ys.max() == ymax - 1
  assert xs.min() == xmin and xs.max() == xmax - 1


@pytest.mark.parametrize('seed', [0, 1, 12345])
def test_same_seed_same_sets(seed):
  a_img, a_lab = shapes.classification_set(6, seed)
  b_img, b_lab = shapes.classification_set(6, seed)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_lab, b_lab)
  a_img, a_mask = shapes.segmentation_set(6, seed)
  b_img, b_mask = shapes.segmentation_set(6, seed)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_mask, b_mask)
  for a, b in zip(shapes.detection_set(6, seed), shapes.detection_set(6, seed)):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.classes, b.classes)


def test_different_seeds_differ():
  a, _ = shapes.classification_set(4, 1)
  b, _ = shapes.classification_set(4, 2)
  assert not np.array_equal(a, b)
  da = shapes.detection_set(4, 1)
  db = shapes.detection_set(4, 2)
  assert any(not np.array_equal(x.image, y.image) for x, y in zip(da, db))


def test_prefix_stable_across_set_length():
  small, small_labels = shapes.classification_set(3, 7)
  large, large_labels = shapes.classification_set(10, 7)
  np.testing.assert_array_equal(small, large[:3])
  np.testing.assert_array_equal(small_labels, large_labels[:3])


def test_sample_from_int_seed_is_deterministic():
  a = shapes.detection_sample(99)
  b = shapes.detection_sample(99)
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.mask, b.mask)


def test_classification_types_and_label_range():
  images, labels = shapes.classification_set(90, 3, size=64)
  assert images.dtype == np.uint8 and images.shape == (90, 64, 64, 3)
  assert labels.min() >= 0 and labels.max() <= 2
  # Balanced enough that all three labels appear.
  assert set(labels.tolist()) == {0, 1, 2}


def test_classification_dominant_shape_is_large():
  for i in range(30):
    scene_rng = np.random.default_rng([5, i])
    label = int(np.random.default_rng([5, i]).integers(0, 3))
    image, got = shapes.classification_sample(scene_rng)
    assert got == label
    # The shape colour differs from the background: many pixels far from the
    # corner colour mean a large object is present.
    corner = image[:3, :3].reshape(-1, 3).mean(0)
    far = np.linalg.norm(image.astype(float) - corner, axis=-1) > 45
    assert far.mean() > 0.04, (i, far.mean())


def test_segmentation_mask_classes_and_shapes():
  images, masks = shapes.segmentation_set(40, 4, size=64)
  assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
  assert masks.shape == (40, 64, 64) and masks.dtype == np.uint8
  assert masks.min() == 0 and masks.max() <= 3
  assert set(np.unique(masks).tolist()) == {0, 1, 2, 3}
  for m in masks:
    assert (m > 0).any()  # at least one object per image
    assert (m == 0).mean() > 0.3  # background dominates


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_detection_boxes_tightly_enclose_object_pixels(seed):
  for scene in shapes.detection_set(40, seed, size=128):
    assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
    assert scene.boxes.dtype == np.float32 and scene.classes.dtype == np.int32
    assert 1 <= len(scene.classes) <= 3
    assert scene.boxes.shape == (len(scene.classes), 4)
    assert np.all((scene.classes >= 1) & (scene.classes <= 3))
    assert set(np.unique(scene.mask).tolist()) <= {0, 1, 2, 3}
    covered = np.zeros(scene.mask.shape, bool)
    for box, cls in zip(scene.boxes, scene.classes):
      ymin, xmin, ymax, xmax = (int(v) for v in box)
      window = np.zeros(scene.mask.shape, bool)
      window[ymin:ymax, xmin:xmax] = True
      # Objects do not overlap, so this object's pixels are the mask pixels
      # of its class inside its box.
      obj = window & (scene.mask == cls)
      _assert_tight_box(obj, box)
      assert not (covered & window).any(), 'boxes overlap'
      covered |= window
    # No labelled pixel lies outside every box.
    assert not ((scene.mask > 0) & ~covered).any()


def test_boxes_exact_for_known_rectangle():
  scene = shapes.make_scene(np.random.default_rng(0), 32, 32, [1],
                            min_side=10, max_side=12)
  ymin, xmin, ymax, xmax = (int(v) for v in scene.boxes[0])
  expected = np.zeros((32, 32), np.uint8)
  expected[ymin:ymax, xmin:xmax] = 1
  np.testing.assert_array_equal(scene.mask, expected)


def test_objects_are_visible_in_the_image():
  for scene in shapes.detection_set(10, 8):
    bg = scene.image[scene.mask == 0].astype(float).mean(0)
    for cls in scene.classes:
      fg = scene.image[scene.mask == cls].astype(float).mean(0)
      assert np.linalg.norm(fg - bg) > 40


def test_unknown_class_rejected():
  with pytest.raises(ValueError):
    shapes.make_scene(0, 32, 32, [4], min_side=8, max_side=10)


@pytest.mark.parametrize('kind', shapes.KINDS)
def test_write_golden_set_round_trips(tmp_path, kind):
  from PIL import Image
  path = shapes.write_golden_set(str(tmp_path), kind, count=3, seed=11)
  doc = json.loads(open(path).read())
  assert doc['task'] == kind and doc['schema'] == 1 and len(doc['images']) == 3
  from exporters import golden  # the loader the exporter and the validator use accepts it
  loaded = golden.load(str(tmp_path) + '/', task=kind)
  assert [g.name for g in loaded.images] == [e['file'] for e in doc['images']]
  size = shapes.DEFAULT_SIZE[kind]
  for i, entry in enumerate(doc['images']):
    image = np.asarray(Image.open(tmp_path / entry['file']))
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    rng = np.random.default_rng([11, i])
    if kind == 'classification':
      expected, label = shapes.classification_sample(rng, size)
      assert entry['label'] == label
      assert entry['label_name'] == shapes.CLASSIFICATION_LABELS[label]
    elif kind == 'segmentation':
      expected, mask = shapes.segmentation_sample(rng, size)
      got_mask = np.asarray(Image.open(tmp_path / entry['mask']))
      np.testing.assert_array_equal(got_mask, mask)
    else:
      scene = shapes.detection_sample(rng, size)
      expected = scene.image
      np.testing.assert_array_equal(np.array(entry['boxes']), scene.boxes)
      assert entry['classes'] == scene.classes.tolist()
    np.testing.assert_array_equal(image, expected)
