"""Checkpoint -> SavedModel with TensorFlow Model Garden (official.vision.serving).

Never exports random weights: every model variable must be restored from the checkpoint
(``assert_existing_objects_matched`` after all variables exist), a variable of another shape is an
error naming it, and non-finite weights are an error. One signature per input type, named as the
config says (``input_types: {serving_default: image_tensor, serving_bytes: image_bytes}``).
"""
from __future__ import annotations

import logging
import re
import time

from registry.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
INPUT_KEY = "inputs"  # Model Garden's default input tensor name: the signature's input key


def _module_class(params):
    from official.vision import configs
    from official.vision.serving import detection, image_classification, semantic_segmentation
    t = params.task
    if isinstance(t, (configs.retinanet.RetinaNetTask, configs.maskrcnn.MaskRCNNTask)):
        return detection.DetectionModule, "detection"
    if isinstance(t, configs.semantic_segmentation.SemanticSegmentationTask):
        return semantic_segmentation.SegmentationModule, "segmentation"
    if isinstance(t, configs.image_classification.ImageClassificationTask):
        return image_classification.ClassificationModule, "classification"
    raise ConfigError(f"experiment task {type(t).__name__} is not exportable here: use a detection "
                      "(RetinaNet, Mask R-CNN), semantic segmentation or image classification experiment.")


def build_module(params, *, task: str | None, input_size, batch_size=None, first_input_type="image_tensor"):
    cls, kind = _module_class(params)
    if task and task != kind:
        raise ConfigError(f"config says task {task!r} but experiment params describe a {kind} model: "
                          "fix 'task' or 'experiment' in config/models.yaml.")
    module = cls(params=params, batch_size=batch_size, input_image_size=list(input_size),
                 input_type=first_input_type, num_channels=3)
    return module, kind


def _shape_mismatch(msg: str) -> str:
    m = re.search(r"incompatible tensor with shape (\S+) when attempting to restore variable with "
                  r"shape (\S+) and name (\S+)", msg.replace("\n", " "))
    if m:
        return f"variable {m.group(3)} has shape {m.group(2)} in the model but {m.group(1)} in the checkpoint"
    return msg.splitlines()[0][:300]


def restore(module, checkpoint_path: str, *, experiment: str) -> dict:
    """Build every variable, restore them all from ``checkpoint_path``, check they are finite."""
    import tensorflow as tf
    t0 = time.monotonic()
    # a trace creates every variable (heads are built lazily): the restore check then covers all
    module.inference_from_image_tensors.get_concrete_function(
        tf.TensorSpec([module._batch_size, None, None, 3], tf.uint8))  # noqa: SLF001
    ckpt = tf.train.Checkpoint(model=module.model)
    try:
        status = ckpt.read(checkpoint_path)
        status.assert_existing_objects_matched().expect_partial()
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, IndexError) as exc:
        first = (getattr(exc, "message", None) or str(exc)).splitlines()[0][:200]
        raise CheckpointError(f"checkpoint {checkpoint_path} is truncated or corrupt ({first}): re-upload "
                              "it, or export another one.") from None
    except tf.errors.NotFoundError as exc:
        raise CheckpointError(f"checkpoint {checkpoint_path} is incomplete ({exc.message.splitlines()[0][:200]}).") from None
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {checkpoint_path} does not fit experiment {experiment} with "
                              f"these params: {_shape_mismatch(str(exc))}. It is a checkpoint of another "
                              "architecture or num_classes: fix params_override or pick the right checkpoint.") from None
    except AssertionError as exc:
        names = re.findall(r"name='([^']+)'", str(exc)) or re.findall(r"<tf.Variable '([^']+)'", str(exc))
        missing = sorted(set(names))
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"checkpoint {checkpoint_path} does not restore every model variable "
                              f"({len(missing) or 'some'} unmatched: {shown or str(exc)[:300]}). It is a checkpoint "
                              f"of another architecture than experiment {experiment} with these params; "
                              "refusing to export partly random weights.") from None
    bad = [v.name for v in module.model.variables if not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if bad:
        raise CheckpointError(f"checkpoint {checkpoint_path} has non-finite (NaN/Inf) weights in "
                              f"{len(bad)} variable(s): {', '.join(bad[:6])}. Training diverged: use an "
                              "earlier checkpoint.")
    n = len(module.model.variables)
    log.info("restored %d variables from %s in %.1fs", n, checkpoint_path, time.monotonic() - t0)
    return {"variables": n}


def export(module, params, export_dir: str, input_types: dict[str, str]) -> dict:
    """Write the SavedModel straight into ``export_dir``: one signature per input type.
    Returns {signature name: the concrete function it was saved from} (for in-process answers)."""
    from official.vision.serving import export_saved_model_lib
    by_type: dict[str, str] = {}
    for sig, typ in input_types.items():
        if typ in by_type:
            raise ConfigError(f"signatures {by_type[typ]!r} and {sig!r} both use input type {typ!r}: "
                              "one signature per input type.")
        by_type[typ] = sig
    t0 = time.monotonic()
    export_saved_model_lib.export_inference_graph(
        input_type=next(iter(by_type)), batch_size=module._batch_size,  # noqa: SLF001
        input_image_size=list(module._input_image_size), params=params,  # noqa: SLF001
        checkpoint_path=None,  # restored (and checked) above; None here means "keep those weights"
        export_dir=export_dir, export_module=module, function_keys=by_type)
    log.info("exported SavedModel with signatures %s in %.1fs", sorted(input_types), time.monotonic() - t0)
    return module.get_inference_signatures(by_type)  # the same traced functions: no new trace


def _spec(s) -> dict:
    return {"dtype": s.dtype.name, "shape": [-1 if d is None else d for d in s.shape.as_list()]}


def describe_signatures(functions: dict) -> dict:
    """{name: {method, inputs: {key: {dtype, shape}}, outputs: {key: {dtype, shape}}}} with -1
    for unknown dimensions, from concrete functions or a loaded SavedModel's ``signatures``."""
    out = {}
    for name, fn in functions.items():
        args, kwargs = fn.structured_input_signature
        inputs = dict(kwargs) or {(a.name or INPUT_KEY): a for a in args}
        out[name] = {"method": "tensorflow/serving/predict",
                     "inputs": {k: _spec(s) for k, s in inputs.items()},
                     "outputs": {k: _spec(s) for k, s in fn.structured_outputs.items()}}
    return out
