"""The three demo models: their Model Garden experiments and params overrides.

Shared by demo/train.py, demo/golden_gate.py and the tests. Imports
TensorFlow / Model Garden lazily (inside functions) so that importing this
module stays cheap.
"""

from __future__ import annotations

import dataclasses
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class KindSpec:
  kind: str            # classification | segmentation | detection
  model_name: str      # name in config/models.yaml and TF Serving
  experiment: str      # Model Garden experiment name
  params_file: str     # params override, relative to the repo
  image_size: int      # square input size (pixels)


KINDS = {
    'classification': KindSpec('classification', 'shapes-classifier',
                               'resnet_imagenet',
                               'config/shapes-classifier.params.yaml', 64),
    'segmentation': KindSpec('segmentation', 'shapes-segmenter',
                             'seg_deeplabv3_pascal',
                             'config/shapes-segmenter.params.yaml', 64),
    'detection': KindSpec('detection', 'shapes-detector',
                          'retinanet_resnetfpn_coco',
                          'config/shapes-detector.params.yaml', 128),
}


def spec(kind: str) -> KindSpec:
  try:
    return KINDS[kind]
  except KeyError:
    raise ValueError(
        f'unknown kind {kind!r}; expected one of {sorted(KINDS)}') from None


def load_params(kind: str, override_file: str | None = None,
                train_steps: int | None = None):
  """Experiment config = Model Garden experiment + YAML override (strict).

  ``override_file`` defaults to the kind's file under config/; it may also be
  a full ``params.yaml`` written by a training run.
  """
  import official.vision  # noqa: F401  (registers the vision experiments)
  from official.core import exp_factory
  from official.modeling import hyperparams

  s = spec(kind)
  override_file = override_file or os.path.join(REPO, s.params_file)
  if not os.path.exists(override_file):
    raise FileNotFoundError(f'params override {override_file} not found')
  params = exp_factory.get_exp_config(s.experiment)
  params = hyperparams.override_params_dict(params, override_file,
                                            is_strict=True)
  if train_steps is not None:
    params.override({'trainer': {'train_steps': int(train_steps)}},
                    is_strict=True)
  params.validate()
  params.lock()
  return params


def serving_module(kind: str, params, batch_size=None):
  """The Model Garden export module (image_tensor input) for ``kind``.

  Its ``serve(uint8 images)`` is exactly what the exported SavedModel's
  ``serving_default`` runs: same preprocessing and postprocessing.
  """
  from official.vision.serving import detection
  from official.vision.serving import image_classification
  from official.vision.serving import semantic_segmentation

  size = spec(kind).image_size
  cls = {
      'classification': image_classification.ClassificationModule,
      'segmentation': semantic_segmentation.SegmentationModule,
      'detection': detection.DetectionModule,
  }[kind]
  return cls(params=params, batch_size=batch_size,
             input_image_size=[size, size], input_type='image_tensor',
             num_channels=3)


def restore_model(model, checkpoint_path: str) -> None:
  """Reads ``tf.train.Checkpoint(model=model)`` from a ckpt prefix or dir."""
  import tensorflow as tf

  path = checkpoint_path
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
    if path is None:
      raise FileNotFoundError(f'no checkpoint in {checkpoint_path}')
  status = tf.train.Checkpoint(model=model).read(path)
  status.expect_partial().assert_existing_objects_matched()
