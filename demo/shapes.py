"""Seeded synthetic "shapes" data for the demo training job and golden sets.

Pure numpy (plus pillow for writing PNGs); never imports TensorFlow, so the
Airflow side and the unit tests can use it.

Every scene is a noisy single-colour background with one or more solid,
coloured shapes drawn on it. Shapes are rasterised on pixel centres, so the
per-pixel class mask is exact and every box is derived from that mask:

- boxes are ``[ymin, xmin, ymax, xmax]`` in pixels, float32, with *exclusive*
  max edges (pixel-edge coordinates, the Model Garden convention): a shape
  covering rows 10..19 has ``ymin=10, ymax=20``. The box is the tightest
  axis-aligned box around the shape's mask pixels.
- detection / segmentation class ids: 0 background, 1 rectangle, 2 ellipse,
  3 triangle (``DETECTION_CLASSES``).
- classification labels: 0 rectangle, 1 ellipse, 2 triangle
  (``CLASSIFICATION_LABELS``), i.e. ``class id - 1``.

Objects in one scene never overlap (each keeps a small gap), so every box
encloses exactly its own object's pixels.

A sample depends only on ``(seed, index)`` (``numpy.random.default_rng([seed,
index])``): the first k samples of a set are the same whatever its length.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Sequence

import numpy as np

CLASSIFICATION_LABELS = ('rectangle', 'ellipse', 'triangle')
# id -> name for detection and segmentation (0 is background).
DETECTION_CLASSES = {1: 'rectangle', 2: 'ellipse', 3: 'triangle'}
NUM_SHAPE_KINDS = 3

_NOISE_SIGMA = 10.0
_MIN_COLOUR_DISTANCE = 90.0
_GAP = 2  # pixels kept free between objects


@dataclasses.dataclass(frozen=True)
class Scene:
  """One generated image with exact ground truth.

  image: uint8 [H, W, 3]. mask: uint8 [H, W], class id per pixel (0 = bg).
  boxes: float32 [N, 4] ymin, xmin, ymax, xmax (exclusive max edges).
  classes: int32 [N] class ids 1..3 (same order as boxes).
  """
  image: np.ndarray
  mask: np.ndarray
  boxes: np.ndarray
  classes: np.ndarray


def _rng(seed_or_rng) -> np.random.Generator:
  if isinstance(seed_or_rng, np.random.Generator):
    return seed_or_rng
  return np.random.default_rng(seed_or_rng)


def _sample_rng(seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), int(index)])


# ---------------------------------------------------------------------------
# rasterisation


def _pixel_centres(height: int, width: int):
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  return yy + 0.5, xx + 0.5


def _rectangle_mask(rng, height, width, region):
  """Axis-aligned rectangle filling a random sub-box of ``region``."""
  y0, x0, y1, x1 = region
  h = y1 - y0
  w = x1 - x0
  rh = int(rng.integers(max(4, int(h * 0.6)), h + 1))
  rw = int(rng.integers(max(4, int(w * 0.6)), w + 1))
  oy = y0 + int(rng.integers(0, h - rh + 1))
  ox = x0 + int(rng.integers(0, w - rw + 1))
  mask = np.zeros((height, width), bool)
  mask[oy:oy + rh, ox:ox + rw] = True
  return mask


def _ellipse_mask(rng, height, width, region):
  """A (possibly rotated) ellipse inscribed in ``region``."""
  y0, x0, y1, x1 = region
  cy = (y0 + y1) / 2.0
  cx = (x0 + x1) / 2.0
  ry_max = (y1 - y0) / 2.0
  rx_max = (x1 - x0) / 2.0
  ry = rng.uniform(0.65, 1.0) * ry_max
  rx = rng.uniform(0.65, 1.0) * rx_max
  angle = rng.uniform(0, np.pi)
  yy, xx = _pixel_centres(height, width)
  dy = yy - cy
  dx = xx - cx
  c, s = np.cos(angle), np.sin(angle)
  u = c * dx + s * dy
  v = -s * dx + c * dy
  # Scale the rotated radii so the ellipse stays inside the region.
  ext_x = np.sqrt((rx * c) ** 2 + (ry * s) ** 2)
  ext_y = np.sqrt((rx * s) ** 2 + (ry * c) ** 2)
  k = min(1.0, rx_max / ext_x, ry_max / ext_y)
  rx *= k
  ry *= k
  mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
  return mask


def _triangle_mask(rng, height, width, region):
  """A triangle with vertices inside ``region`` and a reasonable area."""
  y0, x0, y1, x1 = region
  h = y1 - y0
  w = x1 - x0
  yy, xx = _pixel_centres(height, width)
  for _ in range(100):
    # One vertex on the top edge, two on the bottom edge (then maybe rotate
    # by swapping axes / flipping) gives clearly triangular shapes.
    apex = (y0, x0 + rng.uniform(0.0, 1.0) * w)
    left = (y1, x0 + rng.uniform(0.0, 0.3) * w)
    right = (y1, x0 + rng.uniform(0.7, 1.0) * w)
    pts = np.array([apex, left, right], dtype=np.float64)
    orient = int(rng.integers(0, 4))
    if orient in (1, 3):  # apex on the left (or right, below)
      pts = np.stack([y0 + (pts[:, 1] - x0) * h / w,
                      x0 + (pts[:, 0] - y0) * w / h], axis=1)
    if orient == 2:  # apex at the bottom
      pts[:, 0] = y0 + y1 - pts[:, 0]
    if orient == 3:  # apex on the right
      pts[:, 1] = x0 + x1 - pts[:, 1]
    (ay, ax), (by, bx), (cy, cx) = pts
    area = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) / 2.0
    if area < 0.3 * h * w:
      continue
    d1 = (xx - bx) * (ay - by) - (ax - bx) * (yy - by)
    d2 = (xx - cx) * (by - cy) - (bx - cx) * (yy - cy)
    d3 = (xx - ax) * (cy - ay) - (cx - ax) * (yy - ay)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    mask = ~(neg & pos)
    if mask.sum() >= 16:
      return mask
  raise RuntimeError('could not draw a triangle in region %r' % (region,))


_DRAWERS = {1: _rectangle_mask, 2: _ellipse_mask, 3: _triangle_mask}


def _mask_box(mask: np.ndarray) -> np.ndarray:
  rows = np.flatnonzero(mask.any(axis=1))
  cols = np.flatnonzero(mask.any(axis=0))
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


# ---------------------------------------------------------------------------
# colours and scenes


def _background(rng, height, width):
  base = rng.uniform(30, 225, size=3)
  return base


def _object_colour(rng, background, used):
  for _ in range(200):
    colour = rng.uniform(0, 255, size=3)
    if np.linalg.norm(colour - background) < _MIN_COLOUR_DISTANCE:
      continue
    if any(np.linalg.norm(colour - u) < 40 for u in used):
      continue
    return colour
  # Fall back to the colour opposite the background.
  return 255.0 - background


def _render(rng, height, width, background, layers):
  """layers: list of (bool mask, rgb colour). Adds gaussian noise."""
  canvas = np.empty((height, width, 3), np.float64)
  canvas[...] = background
  # Gentle low-frequency shading so backgrounds are not flat.
  yy, xx = _pixel_centres(height, width)
  gy, gx = rng.uniform(-20, 20, size=2)
  canvas += (gy * (yy / height - 0.5) + gx * (xx / width - 0.5))[..., None]
  for mask, colour in layers:
    canvas[mask] = colour
  canvas += rng.normal(0.0, _NOISE_SIGMA, size=canvas.shape)
  return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _random_region(rng, height, width, min_side, max_side):
  h = int(rng.integers(min_side, max_side + 1))
  w = int(rng.integers(min_side, max_side + 1))
  h = min(h, height - 2)
  w = min(w, width - 2)
  y0 = int(rng.integers(1, height - h))
  x0 = int(rng.integers(1, width - w))
  return (y0, x0, y0 + h, x0 + w)


def _overlaps(region, taken):
  y0, x0, y1, x1 = region
  for (a0, b0, a1, b1) in taken:
    if (y0 < a1 + _GAP and a0 < y1 + _GAP and
        x0 < b1 + _GAP and b0 < x1 + _GAP):
      return True
  return False


def make_scene(seed_or_rng, height: int, width: int,
               classes: Sequence[int], min_side: int, max_side: int) -> Scene:
  """Draws the given shape classes (ids 1..3) without overlaps.

  A shape that does not fit after many tries is dropped (the first one always
  fits), so ``len(scene.classes) <= len(classes)``.
  """
  rng = _rng(seed_or_rng)
  background = _background(rng, height, width)
  taken, layers, boxes, out_classes, colours = [], [], [], [], []
  mask = np.zeros((height, width), np.uint8)
  for cls in classes:
    cls = int(cls)
    if cls not in _DRAWERS:
      raise ValueError(f'unknown shape class id {cls}; expected 1..3')
    for _ in range(100):
      region = _random_region(rng, height, width, min_side, max_side)
      if not _overlaps(region, taken):
        break
    else:
      continue
    shape = _DRAWERS[cls](rng, height, width, region)
    colour = _object_colour(rng, background, colours)
    colours.append(colour)
    taken.append(region)
    layers.append((shape, colour))
    mask[shape] = cls
    boxes.append(_mask_box(shape))
    out_classes.append(cls)
  image = _render(rng, height, width, background, layers)
  return Scene(image=image, mask=mask,
               boxes=np.array(boxes, np.float32).reshape(-1, 4),
               classes=np.array(out_classes, np.int32))


# ---------------------------------------------------------------------------
# the three kinds of samples


def classification_sample(seed_or_rng, size: int = 64):
  """One dominant shape. Returns (uint8 [size,size,3] image, label 0..2)."""
  rng = _rng(seed_or_rng)
  label = int(rng.integers(0, NUM_SHAPE_KINDS))
  scene = make_scene(rng, size, size, [label + 1],
                     min_side=int(size * 0.4), max_side=int(size * 0.85))
  return scene.image, label


def segmentation_sample(seed_or_rng, size: int = 64):
  """1-3 shapes. Returns (uint8 image [size,size,3], uint8 mask [size,size])."""
  rng = _rng(seed_or_rng)
  n = int(rng.integers(1, 4))
  classes = rng.integers(1, NUM_SHAPE_KINDS + 1, size=n)
  scene = make_scene(rng, size, size, classes,
                     min_side=int(size * 0.22), max_side=int(size * 0.5))
  return scene.image, scene.mask


def detection_sample(seed_or_rng, size: int = 128) -> Scene:
  """1-3 non-overlapping shapes with exact boxes and class ids 1..3."""
  rng = _rng(seed_or_rng)
  n = int(rng.integers(1, 4))
  classes = rng.integers(1, NUM_SHAPE_KINDS + 1, size=n)
  return make_scene(rng, size, size, classes,
                    min_side=int(size * 0.16), max_side=int(size * 0.45))


def classification_set(count: int, seed: int, size: int = 64):
  """(uint8 [count,size,size,3] images, int32 [count] labels)."""
  images = np.empty((count, size, size, 3), np.uint8)
  labels = np.empty((count,), np.int32)
  for i in range(count):
    images[i], labels[i] = classification_sample(_sample_rng(seed, i), size)
  return images, labels


def segmentation_set(count: int, seed: int, size: int = 64):
  """(uint8 [count,size,size,3] images, uint8 [count,size,size] masks)."""
  images = np.empty((count, size, size, 3), np.uint8)
  masks = np.empty((count, size, size), np.uint8)
  for i in range(count):
    images[i], masks[i] = segmentation_sample(_sample_rng(seed, i), size)
  return images, masks


def detection_set(count: int, seed: int, size: int = 128) -> list[Scene]:
  return [detection_sample(_sample_rng(seed, i), size) for i in range(count)]


# ---------------------------------------------------------------------------
# golden sets on disk

KINDS = ('classification', 'segmentation', 'detection')
# What every golden image must meet (golden.json "defaults"; exporters/golden.py): the demo models
# pass them with the margins measured in demo/TRAINING_RESULTS.md.
GOLDEN_THRESHOLDS = {
    'classification': {'top_k': 1},
    'segmentation': {'min_miou': 0.5},
    # every object found (IoU >= 0.5) at a score >= 0.1, and no false box with score >= 0.5: a
    # low-confidence hit on a thin shape is fine, a confident box where nothing is is not
    'detection': {'min_score': 0.1, 'fp_min_score': 0.5, 'min_iou': 0.5, 'max_false_positives': 0},
}
DEFAULT_SIZE = {'classification': 64, 'segmentation': 64, 'detection': 128}


def write_golden_set(out_dir: str, kind: str, count: int, seed: int,
                     size: int | None = None) -> str:
  """Writes ``count`` PNG images (+ masks) and ``golden.json``; returns its path.

  Layout: ``NNNN.png`` (RGB); segmentation also ``NNNN.mask.png`` (8-bit,
  class id per pixel). ``golden.json`` follows the golden-set schema of
  exporters/golden.py: ``{"schema": 1, "task", "classes": {id: name},
  "images": [...]}`` (+ ``seed``, ``size``) where each image entry has
  ``file`` and, per task, ``label`` (classification), ``mask``
  (segmentation) or ``boxes`` [[ymin,xmin,ymax,xmax], ...] and ``classes``
  (detection, ids 1..3). The label map holds the ids a model may answer:
  detection has no background class, segmentation has class 0.
  """
  from PIL import Image  # pillow; only needed for writing files

  if kind not in KINDS:
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
  size = size or DEFAULT_SIZE[kind]
  os.makedirs(out_dir, exist_ok=True)
  entries = []
  for i in range(count):
    rng = _sample_rng(seed, i)
    name = f'{i:04d}.png'
    entry = {'file': name}
    if kind == 'classification':
      image, label = classification_sample(rng, size)
      entry.update(label=label, label_name=CLASSIFICATION_LABELS[label])
    elif kind == 'segmentation':
      image, mask = segmentation_sample(rng, size)
      mask_name = f'{i:04d}.mask.png'
      Image.fromarray(mask, mode='L').save(os.path.join(out_dir, mask_name))
      entry.update(mask=mask_name,
                   classes_present=sorted(int(c) for c in np.unique(mask)))
    else:
      scene = detection_sample(rng, size)
      image = scene.image
      entry.update(boxes=scene.boxes.tolist(),
                   classes=scene.classes.tolist())
    Image.fromarray(image, mode='RGB').save(os.path.join(out_dir, name))
    entries.append(entry)
  if kind == 'classification':
    classes = dict(enumerate(CLASSIFICATION_LABELS))
  elif kind == 'segmentation':
    classes = {0: 'background', **DETECTION_CLASSES}
  else:
    classes = dict(DETECTION_CLASSES)
  doc = {'schema': 1, 'task': kind, 'seed': seed, 'size': [size, size],
         'box_format': 'ymin,xmin,ymax,xmax pixels, max edges exclusive',
         'classes': {str(k): v for k, v in classes.items()},
         'defaults': dict(GOLDEN_THRESHOLDS[kind]),
         'images': entries}
  path = os.path.join(out_dir, 'golden.json')
  with open(path, 'w') as f:
    json.dump(doc, f, indent=1)
  return path


def main(argv=None):
  p = argparse.ArgumentParser(description='Write a synthetic shapes golden set.')
  p.add_argument('--kind', choices=KINDS, required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--count', type=int, default=8)
  p.add_argument('--seed', type=int, default=1000)
  p.add_argument('--size', type=int, default=None)
  a = p.parse_args(argv)
  path = write_golden_set(a.out, a.kind, a.count, a.seed, a.size)
  print(f'wrote {a.count} {a.kind} images to {a.out} ({path})')


if __name__ == '__main__':
  main()
