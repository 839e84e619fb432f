"""The stand-in's Servable in-process (no server): the TF1 Session loader's answers equal
tf.saved_model.load's, and warmup rules (replayed records, a failing record fails the load, at most
1000 records)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from standin.errors import FAILED_PRECONDITION, INVALID_ARGUMENT, ServingError
from standin.servable import Servable

from .support import MODEL, write_warmup


def _servable(path):
    s = Servable(MODEL, 1, path)
    s.load()
    return s


def test_session_answers_equal_saved_model_load(tiny_models, images, reference):
    s = _servable(tiny_models["v1"])
    try:
        name, out = s.run("", {"images": images})
        assert name == "serving_default"
        ref = reference("v1", "serving_default", images=images)
        for k in ref:
            np.testing.assert_allclose(out[k], ref[k], atol=1e-6, rtol=0)
        assert "__saved_model_init_op" in s.signature_defs()  # the full map, as TF Serving returns
    finally:
        s.close()


def test_warmup_counts_and_failures(tiny_models, images, tmp_path):
    good = str(tmp_path / "good")
    shutil.copytree(tiny_models["v1"], good)
    write_warmup(good, [images, images[:1]])
    s = _servable(good)
    assert s.warmup()[0] == 2
    s.close()

    # a record for a signature the model lacks fails the warmup, hence the load
    bad = str(tmp_path / "bad")
    shutil.copytree(tiny_models["v1"], bad)
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    req = predict_pb2.PredictRequest()
    req.model_spec.signature_name = "missing"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    os.makedirs(os.path.join(bad, "assets.extra"))
    with tf.io.TFRecordWriter(os.path.join(bad, "assets.extra", "tf_serving_warmup_requests")) as w:
        w.write(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
                .SerializeToString())
    s = _servable(bad)
    with pytest.raises(ServingError) as info:
        s.warmup()
    assert info.value.code == FAILED_PRECONDITION and 'Serving signature key "missing" not found' in info.value.message
    s.close()


def test_more_than_1000_warmup_records_is_an_error(tiny_models, tmp_path):
    many = str(tmp_path / "many")
    shutil.copytree(tiny_models["v1"], many)
    write_warmup(many, [np.zeros((1, 1, 1, 3), np.uint8)] * 1001)
    s = _servable(many)
    with pytest.raises(ServingError) as info:
        s.warmup()
    assert info.value.code == INVALID_ARGUMENT and "exceeds the maximum (1000)" in info.value.message
    s.close()
