"""Tiny SavedModels that break validation in one specific way each, staged like the exporter
stages (candidate.json, reference answers). Built in this process with core TensorFlow."""
from __future__ import annotations

import os

import numpy as np

from exporters import golden as golden_mod
from exporters.reference import reference_answers
from registry.staging import stage


def classifier_module(*, input_dtype="uint8", probs_dtype="float32", nan=False, py_op=False, weight=1.0):
    """A 3-class 'classifier' whose answer is the argmax of the mean colour channels."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.eye(3) * weight)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], getattr(tf, input_dtype), name="inputs")])
        def serve(self, inputs):
            x = tf.reduce_mean(tf.cast(inputs, tf.float32), axis=[1, 2]) / 255.0
            logits = tf.matmul(x, self.w)
            if nan:
                logits = logits * float("nan")
            if py_op:  # EagerPyFunc: a Python-only op no TF Serving binary has
                logits = tf.py_function(lambda t: t, [logits], tf.float32)
                logits.set_shape([None, 3])
            probs = tf.nn.softmax(logits)
            return {"logits": logits, "probs": tf.cast(probs, getattr(tf, probs_dtype))}
    return M()


def save(module, path, signature_name="serving_default"):
    import tensorflow as tf
    tf.saved_model.save(module, path, signatures={signature_name: module.serve})
    return path


def stage_candidate(client, serving, sm_dir, golden_dir, workdir, *, input_types=None, reference=True):
    """Stage ``sm_dir`` with reference answers computed from the SavedModel itself."""
    import tensorflow as tf
    input_types = input_types or {"serving_default": "image_tensor"}
    ref_dir = os.path.join(workdir, "reference-" + os.path.basename(sm_dir))
    extra = {}
    if reference:
        loaded = tf.saved_model.load(sm_dir)
        golden = golden_mod.load(golden_dir, task="classification")
        fns = {s: loaded.signatures[s] for s in input_types if s in loaded.signatures}
        if fns:
            reference_answers(fns, golden, {s: t for s, t in input_types.items() if s in fns}, ref_dir)
            extra = {"reference": ref_dir}
    if not extra:
        os.makedirs(os.path.join(ref_dir, "none"), exist_ok=True)
        with open(os.path.join(ref_dir, "index.json"), "w") as fh:
            fh.write('{"signatures": {}, "images": []}')
        extra = {"reference": ref_dir}
    return stage(client, serving, sm_dir, fields={"input_types": input_types, "task": "classification"},
                 extra_dirs=extra)


def corrupt_variables(sm_dir):
    """Valid signatures, unloadable weights: truncate the variables data shard."""
    vdir = os.path.join(sm_dir, "variables")
    for n in os.listdir(vdir):
        if n.startswith("variables.data"):
            p = os.path.join(vdir, n)
            with open(p, "r+b") as fh:
                fh.truncate(max(1, os.path.getsize(p) // 3))
    return sm_dir


__all__ = ["classifier_module", "save", "stage_candidate", "corrupt_variables", "np"]
