"""Run in a fresh process: load a SavedModel the way TF Serving does (the `serve` MetaGraph in a
TF1 Session, feeds/fetches by the signature's tensor names) with only core TensorFlow imported,
answer every golden image, and compare with the exporter's reference answers.

    python check_saved_model.py SAVED_MODEL_DIR REFERENCE_DIR GOLDEN_DIR  -> JSON on stdout
"""
import io
import json
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from exporters.reference import load_reference  # noqa: E402 - numpy only, no Model Garden


def main(sm_dir, ref_dir, golden_dir):
    with open(os.path.join(ref_dir, "index.json")) as fh:
        index = json.load(fh)
    reference = load_reference(ref_dir)
    worst = {}
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sm_dir)
        for sig, entry in index["signatures"].items():
            sd = meta.signature_def[sig]
            feed_name = sd.inputs["inputs"].name
            fetches = {k: v.name for k, v in sd.outputs.items()}
            for image, ref in reference[sig].items():
                with open(os.path.join(golden_dir, image), "rb") as fh:
                    encoded = fh.read()
                typ = entry["input_type"]
                if typ == "image_tensor":
                    x = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))[None]
                elif typ == "image_bytes":
                    x = np.array([encoded], dtype=object)
                else:
                    ex = tf.train.Example(features=tf.train.Features(feature={
                        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))}))
                    x = np.array([ex.SerializeToString()], dtype=object)
                got = sess.run(fetches, {feed_name: x})
                for k in ref:
                    d = float(np.max(np.abs(got[k].astype(np.float64) - ref[k].astype(np.float64)))) if ref[k].size else 0.0
                    worst[f"{sig}/{k}"] = max(worst.get(f"{sig}/{k}", 0.0), d)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("official", "tf_keras", "keras", "tensorflow_models"))
    print(json.dumps({"max_abs_diff": worst, "non_core_modules": heavy[:10]}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
