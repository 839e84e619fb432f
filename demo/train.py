"""The demo "training job": a tiny Model Garden model trained on synthetic shapes.

Uses Model Garden's own task code: ``exp_factory.get_exp_config`` + the
params override in config/, the task's ``build_model``, its tf.Example
decoder and parser (on in-memory serialized tf.Examples, no TFRecord files),
``create_optimizer`` and ``train_step`` (which calls ``build_losses``).

It writes what a real training job writes into a LOCAL directory:
``ckpt-N.index`` + ``ckpt-N.data-00000-of-00001`` (``tf.train.Checkpoint(
model=model)``), the ``checkpoint`` state file, and ``params.yaml`` (the full
experiment config, ``init_checkpoint: ''``).

  python demo/train.py --kind classification --out /tmp/ckpt/shapes-classifier

Prints one line per saved checkpoint: step, mean loss since the last save,
seconds since the start of training.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from demo import experiments  # noqa: E402
from demo import shapes  # noqa: E402

DEFAULT_SEED = 1
# Fresh synthetic images for every step up to this many (then they repeat).
MAX_POOL = 10000


def _png(array) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  # stored, not deflated: the same pixels (PNG is lossless), half the encoding time and a faster
  # decode in the input pipeline (the noise makes these images all but incompressible anyway)
  Image.fromarray(array).save(buf, format='PNG', compress_level=0)
  return buf.getvalue()


def _features(args) -> dict:
  """One synthetic sample's tf.Example features as plain Python values (numpy + pillow only, so
  it runs in a worker process without TensorFlow)."""
  kind, seed, i, size = args
  rng = shapes._sample_rng(seed, i)  # pylint: disable=protected-access
  if kind == 'classification':
    image, label = shapes.classification_sample(rng, size)
    return {'image/encoded': _png(image), 'image/format': b'png',
            'image/class/label': int(label)}
  if kind == 'segmentation':
    image, mask = shapes.segmentation_sample(rng, size)
    return {'image/encoded': _png(image), 'image/format': b'png',
            'image/height': size, 'image/width': size,
            'image/segmentation/class/encoded': _png(mask),
            'image/segmentation/class/format': b'png'}
  if kind == 'detection':
    scene = shapes.detection_sample(rng, size)
    boxes = scene.boxes / float(size)  # tf.Example boxes are normalised
    return {'image/encoded': _png(scene.image), 'image/format': b'png',
            'image/height': size, 'image/width': size,
            'image/source_id': str(i).encode(),
            'image/object/bbox/ymin': [float(v) for v in boxes[:, 0]],
            'image/object/bbox/xmin': [float(v) for v in boxes[:, 1]],
            'image/object/bbox/ymax': [float(v) for v in boxes[:, 2]],
            'image/object/bbox/xmax': [float(v) for v in boxes[:, 3]],
            'image/object/class/label': [int(c) for c in scene.classes],
            'image/object/is_crowd': [0] * len(scene.classes)}
  raise ValueError(kind)


def serialized_examples(kind: str, count: int, seed: int, size: int) -> list:
  """Synthetic samples as serialized tf.Examples in Model Garden's layout.

  Samples depend only on (seed, index), so they are drawn in parallel worker processes (spawned:
  they import numpy and pillow, never TensorFlow) and come back in index order."""
  import multiprocessing
  import tensorflow as tf

  def feature(value):
    if isinstance(value, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], float):
      return tf.train.Feature(float_list=tf.train.FloatList(value=value))
    if isinstance(value, float):
      return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    if isinstance(value, int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(value)))

  jobs = [(kind, seed, i, size) for i in range(count)]
  workers = min(os.cpu_count() or 1, 4)
  if workers > 1 and count >= 500:
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      samples = pool.map(_features, jobs, chunksize=100)
  else:
    samples = [_features(j) for j in jobs]
  return [tf.train.Example(features=tf.train.Features(
      feature={k: feature(v) for k, v in feats.items()})).SerializeToString() for feats in samples]


def decoder_and_parser(kind: str, params, is_training: bool):
  """The decoder and parser exactly as the task's ``build_inputs`` makes them."""
  task_cfg = params.task
  data = task_cfg.train_data if is_training else task_cfg.validation_data
  if kind == 'classification':
    from official.vision.dataloaders import classification_input
    decoder = classification_input.Decoder(
        image_field_key=data.image_field_key,
        label_field_key=data.label_field_key,
        is_multilabel=data.is_multilabel)
    parser = classification_input.Parser(
        output_size=task_cfg.model.input_size[:2],
        num_classes=task_cfg.model.num_classes,
        image_field_key=data.image_field_key,
        label_field_key=data.label_field_key,
        decode_jpeg_only=data.decode_jpeg_only,
        aug_rand_hflip=data.aug_rand_hflip,
        aug_crop=data.aug_crop,
        aug_type=data.aug_type,
        color_jitter=data.color_jitter,
        random_erasing=data.random_erasing,
        is_multilabel=data.is_multilabel,
        dtype=data.dtype,
        center_crop_fraction=data.center_crop_fraction,
        tf_resize_method=data.tf_resize_method,
        three_augment=data.three_augment)
  elif kind == 'segmentation':
    from official.vision.dataloaders import segmentation_input
    decoder = segmentation_input.Decoder(
        image_feature=data.image_feature,
        additional_dense_features=data.additional_dense_features)
    parser = segmentation_input.Parser(
        output_size=data.output_size,
        crop_size=data.crop_size,
        ignore_label=task_cfg.losses.ignore_label,
        resize_eval_groundtruth=data.resize_eval_groundtruth,
        gt_is_matting_map=task_cfg.losses.gt_is_matting_map,
        groundtruth_padded_size=data.groundtruth_padded_size,
        aug_scale_min=data.aug_scale_min,
        aug_scale_max=data.aug_scale_max,
        aug_rand_hflip=data.aug_rand_hflip,
        preserve_aspect_ratio=data.preserve_aspect_ratio,
        dtype=data.dtype,
        image_feature=data.image_feature,
        additional_dense_features=data.additional_dense_features,
        centered_crop=data.centered_crop)
  elif kind == 'detection':
    from official.vision.dataloaders import retinanet_input
    from official.vision.dataloaders import tf_example_decoder
    decoder_cfg = data.decoder.get()
    decoder = tf_example_decoder.TfExampleDecoder(
        regenerate_source_id=decoder_cfg.regenerate_source_id,
        attribute_names=decoder_cfg.attribute_names)
    model = task_cfg.model
    parser = retinanet_input.Parser(
        output_size=model.input_size[:2],
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
        dtype=data.dtype,
        match_threshold=data.parser.match_threshold,
        unmatched_threshold=data.parser.unmatched_threshold,
        box_coder_weights=model.detection_generator.box_coder_weights,
        aug_type=data.parser.aug_type,
        aug_rand_hflip=data.parser.aug_rand_hflip,
        aug_rand_jpeg=data.parser.aug_rand_jpeg,
        aug_scale_min=data.parser.aug_scale_min,
        aug_scale_max=data.parser.aug_scale_max,
        skip_crowd_during_training=data.parser.skip_crowd_during_training,
        max_num_instances=data.parser.max_num_instances,
        pad=data.parser.pad,
        keep_aspect_ratio=data.parser.keep_aspect_ratio)
  else:
    raise ValueError(kind)
  return decoder, parser


def training_dataset(kind: str, params, serialized: list, seed: int):
  import tensorflow as tf
  decoder, parser = decoder_and_parser(kind, params, is_training=True)
  parse = parser.parse_fn(is_training=True)
  ds = tf.data.Dataset.from_tensor_slices(serialized)
  ds = ds.shuffle(len(serialized), seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.map(lambda s: parse(decoder.decode(s)),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(params.task.train_data.global_batch_size, drop_remainder=True)
  return ds.prefetch(2)


def set_seeds(seed: int) -> None:
  """Seeds every generator and makes TensorFlow's ops deterministic: the same seed gives the same
  weights on one machine (other CPUs or TensorFlow builds may still round differently)."""
  import numpy as np
  import tensorflow as tf
  import tf_keras
  tf.keras.utils.set_random_seed(seed)
  tf_keras.utils.set_random_seed(seed)
  np.random.seed(seed)
  tf.config.experimental.enable_op_determinism()


def build_task_and_model(params):
  from official.core import task_factory
  task = task_factory.get_task(params.task)
  model = task.build_model()
  task.initialize(model)  # no-op: init_checkpoint is ''
  return task, model


def train(kind: str, out_dir: str, steps: int | None = None,
          seed: int = DEFAULT_SEED, save_every: int | None = None,
          params_override: str | None = None, log=print) -> dict:
  """Trains ``kind`` and writes checkpoints + params.yaml into ``out_dir``.

  Returns {'params', 'steps', 'seconds', 'checkpoints', 'final_loss'}.
  """
  import numpy as np
  import tensorflow as tf
  from official.core import train_utils

  s = experiments.spec(kind)
  params = experiments.load_params(kind, params_override, train_steps=steps)
  steps = int(params.trainer.train_steps)
  save_every = int(save_every or params.trainer.checkpoint_interval or steps)
  if steps <= 0 or save_every <= 0:
    raise ValueError('--steps and --save-every must be positive')
  os.makedirs(out_dir, exist_ok=True)
  set_seeds(seed)

  batch = params.task.train_data.global_batch_size
  pool = min(steps * batch, MAX_POOL)
  t0 = time.time()
  serialized = serialized_examples(kind, pool, seed, s.image_size)
  log(f'[{kind}] generated {pool} synthetic examples (seed {seed}) in '
      f'{time.time() - t0:.1f}s', file=sys.stderr)

  task, model = build_task_and_model(params)
  optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                    params.runtime)
  dataset = training_dataset(kind, params, serialized, seed)

  @tf.function
  def train_step(inputs):
    logs = task.train_step(inputs, model, optimizer, metrics=None)
    return logs[task.loss]

  checkpoint = tf.train.Checkpoint(model=model)
  manager = tf.train.CheckpointManager(
      checkpoint, out_dir, max_to_keep=params.trainer.max_to_keep or None,
      checkpoint_name='ckpt')
  train_utils.serialize_config(params, out_dir)

  saved = []
  losses = []
  t_start = time.time()
  iterator = iter(dataset)
  for step in range(1, steps + 1):
    loss = float(train_step(next(iterator)))
    if not np.isfinite(loss):
      raise FloatingPointError(f'[{kind}] loss is {loss} at step {step}')
    losses.append(loss)
    if step % save_every == 0 or step == steps:
      path = manager.save(checkpoint_number=step)
      elapsed = time.time() - t_start
      mean_loss = float(np.mean(losses))
      log(f'[{kind}] step {step}/{steps} loss {mean_loss:.4f} '
          f'{elapsed:.1f}s saved {path}')
      saved.append(path)
      losses = []
  seconds = time.time() - t_start
  return {'params': params, 'steps': steps, 'seconds': seconds,
          'checkpoints': saved, 'final_loss': mean_loss}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--kind', required=True, choices=sorted(experiments.KINDS))
  p.add_argument('--out', required=True, help='local output directory')
  p.add_argument('--steps', type=int, default=None,
                 help='training steps (default: trainer.train_steps of the '
                 'params override: 600 / 1100 / 500)')
  p.add_argument('--seed', type=int, default=DEFAULT_SEED)
  p.add_argument('--save-every', type=int, default=None,
                 help='save every K steps (default: trainer.checkpoint_interval)'
                 '; the last step is always saved')
  p.add_argument('--params-override', default=None,
                 help='Model Garden params override YAML (default: '
                 'config/shapes-<model>.params.yaml for the kind)')
  a = p.parse_args(argv)
  result = train(a.kind, a.out, a.steps, a.seed, a.save_every,
                 a.params_override)
  print(f'[{a.kind}] done: {result["steps"]} steps in '
        f'{result["seconds"]:.1f}s, final checkpoint {result["checkpoints"][-1]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
