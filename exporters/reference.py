"""What the exporter ships beside the SavedModel:

- ``reference/``: the model's own in-process answers for every golden image and signature
  (``<signature>/<image>.npz``, one array per output, plus ``index.json``): the parity reference
  for the served answers;
- ``assets.extra/tf_serving_warmup_requests`` inside the SavedModel: PredictionLog records built
  from golden images (at most 1000), which TF Serving replays at load time.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from exporters.golden import GoldenSet
from exporters.model_garden import INPUT_KEY

MAX_WARMUP = 1000
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def example_bytes(encoded: bytes) -> bytes:
    """A serialized tf.Example as Model Garden's tf_example signature parses it."""
    from tensorflow.core.example import example_pb2, feature_pb2
    fmt = b"png" if encoded[:8] == b"\x89PNG\r\n\x1a\n" else b"jpeg"
    ex = example_pb2.Example(features=feature_pb2.Features(feature={
        "image/encoded": feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[encoded])),
        "image/format": feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[fmt])),
    }))
    return ex.SerializeToString()


def model_input(input_type: str, image) -> np.ndarray:
    """The batch-of-one input a client sends for ``image`` (a GoldenImage) to a signature of
    ``input_type``: uint8 [1,H,W,3] or a [1] array of bytes."""
    if input_type == "image_tensor":
        return image.image[np.newaxis]
    if input_type == "image_bytes":
        return np.array([image.encoded], dtype=object)
    if input_type == "tf_example":
        return np.array([example_bytes(image.encoded)], dtype=object)
    raise ValueError(f"unknown input type {input_type!r}")


def _safe_stem(name: str) -> str:
    return os.path.splitext(name.replace("/", "__"))[0]


def reference_answers(functions: dict, golden: GoldenSet, input_types: dict[str, str], out_dir: str) -> dict:
    """Run every golden image through every signature's function, in process."""
    import tensorflow as tf
    t0 = time.monotonic()
    index = {"signatures": {}, "images": [g.name for g in golden.images]}
    for sig, typ in input_types.items():
        fn = functions[sig]
        os.makedirs(os.path.join(out_dir, sig), exist_ok=True)
        entries = {}
        for g in golden.images:
            x = model_input(typ, g)
            tensor = tf.constant(x.tolist() if x.dtype == object else x,
                                 dtype=tf.string if x.dtype == object else tf.uint8)
            outs = {k: v.numpy() for k, v in fn(**{INPUT_KEY: tensor}).items()}
            stem = _safe_stem(g.name)
            np.savez(os.path.join(out_dir, sig, stem + ".npz"), **outs)
            entries[g.name] = stem + ".npz"
        index["signatures"][sig] = {"input_type": typ, "files": entries}
    with open(os.path.join(out_dir, "index.json"), "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
    index["seconds"] = round(time.monotonic() - t0, 3)
    return index


def load_reference(ref_dir: str) -> dict:
    """{signature: {image name: {output: array}}} from a downloaded reference/ folder."""
    with open(os.path.join(ref_dir, "index.json")) as fh:
        index = json.load(fh)
    out = {}
    for sig, entry in index["signatures"].items():
        out[sig] = {}
        for name, f in entry["files"].items():
            with np.load(os.path.join(ref_dir, sig, f), allow_pickle=False) as z:
                out[sig][name] = {k: z[k] for k in z.files}
    return out


def write_warmup(saved_model_dir: str, model_name: str, golden: GoldenSet, input_types: dict[str, str]) -> int:
    """TF Serving's warmup file: PredictionLog(PredictRequest) records, ≤ 1000."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = 0
    with tf.io.TFRecordWriter(path) as w:
        for sig, typ in input_types.items():
            for g in golden.images:
                if n >= MAX_WARMUP:
                    break
                x = model_input(typ, g)
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
