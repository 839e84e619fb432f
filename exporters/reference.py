"""What the exporter ships beside the SavedModel:

- ``reference/``: the model's own in-process answers for every golden image and signature, the
  parity reference for the served answers: one ``<signature>/answers.npz`` per signature (arrays
  ``<image key>/<output>``, written as the batches come) plus ``index.json`` naming each image's
  key. One file per signature, not per image: a golden set of hundreds of images is then a few
  objects to stage and download, not hundreds. (Candidates staged before this layout, with one
  ``<signature>/<image>.npz`` per image, still load.)
- ``assets.extra/tf_serving_warmup_requests`` inside the SavedModel: PredictionLog records of
  single-image requests, ``WARMUP_RECORDS`` (32) at most over all signatures, images spread over the
  golden set. TF Serving replays every record before the version becomes AVAILABLE (and allows at
  most 1000), so the file must not grow with the golden set.

Reference answers are computed in batches (``tfs_api/batching.py``, the validator's batching):
same-shaped images together for image_tensor, any images for image_bytes/tf_example, each answer
split back per image with its batch dimension of 1.
"""
from __future__ import annotations

import json
import os
import time
import zipfile

import numpy as np

from tfs_api import batching
from exporters.golden import GoldenSet
from exporters.model_garden import INPUT_KEY
from tfs_api.inputs import model_input

MAX_WARMUP = 1000   # TF Serving's limit
WARMUP_RECORDS = 32  # what the exporter writes at most: replayed at every load
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
ANSWERS = "answers.npz"


def _fixed_batch(fn) -> int | None:
    """A signature function's fixed input batch dimension (exported with a batch_size), if any."""
    try:
        args, kwargs = fn.structured_input_signature
    except (AttributeError, TypeError, ValueError):
        return None
    spec = kwargs.get(INPUT_KEY) if kwargs else (args[0] if args else None)
    if spec is None or spec.shape.rank is None:
        return None
    return batching.fixed_batch(spec.shape.as_list())


def _tensor(x: np.ndarray):
    import tensorflow as tf
    return tf.constant(x.tolist() if x.dtype == object else x, dtype=tf.string if x.dtype == object else tf.uint8)


def reference_answers(functions: dict, golden: GoldenSet, input_types: dict[str, str], out_dir: str, *,
                      batch_size: int = batching.DEFAULT_BATCH_SIZE) -> dict:
    """Run every golden image through every signature's function, in process, in batches of at
    most ``batch_size`` (capped at the signature's fixed batch dimension)."""
    t0 = time.monotonic()
    index = {"signatures": {}, "images": [g.name for g in golden.images]}
    calls = 0
    for sig, typ in input_types.items():
        fn = functions[sig]
        size = min(batch_size, _fixed_batch(fn) or batch_size)
        os.makedirs(os.path.join(out_dir, sig), exist_ok=True)
        keys = {}
        # an .npz is a zip of .npy files: written one answer at a time, never all held in memory
        with zipfile.ZipFile(os.path.join(out_dir, sig, ANSWERS), "w", zipfile.ZIP_STORED) as zf:
            for idx in batching.plan_images(typ, golden.images, size):
                x = batching.stack([model_input(typ, golden.images[i]) for i in idx])
                outs = {k: v.numpy() for k, v in fn(**{INPUT_KEY: _tensor(x)}).items()}
                calls += 1
                for i, out in zip(idx, batching.split(outs, len(idx), what=f"signature {sig!r} (in process)")):
                    for name, value in out.items():
                        _write_npy(zf, f"{i}/{name}", value)
                    keys[golden.images[i].name] = str(i)
        index["signatures"][sig] = {"input_type": typ, "archive": f"{sig}/{ANSWERS}", "keys": keys}
    with open(os.path.join(out_dir, "index.json"), "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
    index["seconds"] = round(time.monotonic() - t0, 3)
    index["calls"] = calls
    return index


def _write_npy(zf: zipfile.ZipFile, key: str, value) -> None:
    arr = np.asarray(value)
    if arr.dtype == object:  # string outputs: fixed-width bytes, loadable without pickle
        arr = arr.astype(np.bytes_)
    with zf.open(key + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=False)


def load_reference(ref_dir: str) -> dict:
    """{signature: {image name: {output: array}}} from a downloaded reference/ folder."""
    with open(os.path.join(ref_dir, "index.json")) as fh:
        index = json.load(fh)
    out = {}
    for sig, entry in index["signatures"].items():
        out[sig] = {}
        if "archive" in entry:
            by_key: dict = {}
            from registry.s3 import local_path_for  # a path named by index.json stays inside ref_dir
            with np.load(local_path_for(ref_dir, entry["archive"]), allow_pickle=False) as z:
                for f in z.files:
                    key, _, name = f.partition("/")
                    by_key.setdefault(key, {})[name] = z[f]
            out[sig] = {image: by_key.get(key, {}) for image, key in entry["keys"].items()}
            continue
        for name, f in entry["files"].items():  # one file per image (exporters before the archive)
            with np.load(os.path.join(ref_dir, sig, f), allow_pickle=False) as z:
                out[sig][name] = {k: z[k] for k in z.files}
    return out


def warmup_images(golden: GoldenSet, input_types: dict[str, str], limit: int = WARMUP_RECORDS) -> list:
    """(signature, image) pairs for the warmup file: every signature, at most ``limit`` records in
    all (at least one per signature), images spread over the golden set."""
    per_sig = max(1, min(limit, MAX_WARMUP) // max(1, len(input_types)))
    per_sig = min(per_sig, len(golden.images))
    return [(sig, g) for sig in input_types for g in batching.spread(golden.images, per_sig)]


def write_warmup(saved_model_dir: str, model_name: str, golden: GoldenSet, input_types: dict[str, str], *,
                 limit: int = WARMUP_RECORDS) -> int:
    """TF Serving's warmup file: PredictionLog(PredictRequest) records of one image each, at most
    ``limit`` (default 32) whatever the golden set's size."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = 0
    with tf.io.TFRecordWriter(path) as w:
        for sig, g in warmup_images(golden, input_types, limit):
            x = model_input(input_types[sig], g)
            proto = tf.make_tensor_proto(x.tolist() if x.dtype == object else x,
                                         dtype=tf.string if x.dtype == object else tf.uint8,
                                         shape=x.shape)
            req = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig),
                inputs={INPUT_KEY: proto})
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
            w.write(log.SerializeToString())
            n += 1
    return n
