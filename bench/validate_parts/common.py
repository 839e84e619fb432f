"""What the parts of bench/validate.py share: the demo classifier exported from its cached
checkpoint, a small classifier, a candidate staged with a golden set of N images."""
from __future__ import annotations

import os
import shutil

import numpy as np

from bench.validate_parts import ROOT


def export_classifier(dest: str) -> str:
    from demo import checkpoint_cache
    from exporters import model_garden, params as params_mod
    ckdir = checkpoint_cache.get("classification")
    params, _ = params_mod.resolve("resnet_imagenet", os.path.join(ROOT, "config", "shapes-classifier.params.yaml"),
                                   os.path.join(ckdir, "params.yaml"))
    module, _ = model_garden.build_module(params, task="classification", input_size=(64, 64))
    import tensorflow as tf
    model_garden.restore(module, tf.train.latest_checkpoint(ckdir), experiment="resnet_imagenet")
    sm = os.path.join(dest, "shapes-classifier", "1")
    model_garden.export(module, params, sm, {"serving_default": "image_tensor"})
    return dest


def small_classifier(path: str) -> str:
    """A small conv net (two strided convolutions, 64x64 resize, 3 classes; fixed random weights):
    real per-image compute, built in a second."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            g = tf.random.Generator.from_seed(1)
            self.c1 = tf.Variable(g.normal([3, 3, 3, 16]) * 0.3)
            self.c2 = tf.Variable(g.normal([3, 3, 16, 32]) * 0.1)
            self.d = tf.Variable(g.normal([32, 3]))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="inputs")])
        def serve(self, inputs):
            x = tf.image.resize(tf.cast(inputs, tf.float32) / 255.0, [64, 64])
            x = tf.nn.relu(tf.nn.conv2d(x, self.c1, 2, "SAME"))
            x = tf.nn.relu(tf.nn.conv2d(x, self.c2, 2, "SAME"))
            logits = tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.d) * 10.0
            return {"logits": logits, "probs": tf.nn.softmax(logits)}
    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.serve})
    return path


def stage_golden_candidate(s3, serving, sm_src: str, n: int, work: str) -> tuple[str, str]:
    """A golden set of ``n`` images labelled with the model's own answers, and a candidate staged as
    the exporter stages it (reference answers, warmup file). Returns (golden dir, candidate uri)."""
    import json as _json
    import tensorflow as tf
    from demo.shapes import write_golden_set
    from exporters import golden as golden_mod
    from exporters.reference import reference_answers, write_warmup
    from registry.staging import stage
    gdir = os.path.join(work, f"golden-{n}")
    write_golden_set(gdir, "classification", n, seed=1000)
    fn = tf.saved_model.load(sm_src).signatures["serving_default"]
    g = golden_mod.load(gdir + "/", task="classification")
    with open(os.path.join(gdir, "golden.json")) as fh:
        doc = _json.load(fh)
    for entry, img in zip(doc["images"], g.images):
        entry["label"] = int(np.argmax(fn(inputs=tf.constant(img.image[None]))["probs"].numpy()[0]))
    with open(os.path.join(gdir, "golden.json"), "w") as fh:
        _json.dump(doc, fh)
    g = golden_mod.load(gdir + "/", task="classification")
    sm = os.path.join(work, f"sm-{n}")
    shutil.copytree(sm_src, sm)
    types = {"serving_default": "image_tensor"}
    write_warmup(sm, "bench-cls", g, types)
    ref = os.path.join(work, f"ref-{n}")
    reference_answers({"serving_default": tf.saved_model.load(sm).signatures["serving_default"]}, g, types, ref)
    uri = stage(s3, serving, sm, fields={"input_types": types, "task": "classification", "model": "bench-cls"},
                extra_dirs={"reference": ref})
    return gdir, uri


def serving_store(work: str):
    """A SeaweedFS of its own under ``work`` with an empty ``serving`` bucket: (server, S3 client);
    the caller stops the server."""
    import services
    from registry.s3 import make_client
    sw = services.start_seaweedfs(os.path.join(work, "s3"))
    s3 = make_client(endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                     aws_secret_access_key=sw.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket="serving")
    return sw, s3
