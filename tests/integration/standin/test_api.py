"""The stand-in's REST and gRPC APIs against one running server (a real subprocess on 127.0.0.1),
with answers compared to in-process ``tf.saved_model.load`` answers (tolerance 1e-6)."""
from __future__ import annotations

import base64
import json
import os
import shutil

import grpc
import numpy as np
import pytest

from .support import MODEL, GrpcClient, StandinProcess, get, post, write_warmup

TOL = 1e-6


@pytest.fixture(scope="module")
def server(tiny_models, images, tmp_path_factory):
    base = tmp_path_factory.mktemp("api") / MODEL
    base.mkdir()
    shutil.copytree(tiny_models["v1"], base / "1")
    write_warmup(str(base / "1"), [images, images[:1], np.zeros((1, 4, 4, 3), np.uint8)])
    shutil.copytree(tiny_models["v2"], base / ".tmp-5")  # not a version: must be ignored
    s = StandinProcess(str(base), str(base.parent / "standin.log"),
                       extra=["--enable_batching=true", "--made_up_flag=7", "--rest_api_timeout_in_ms=20000"])
    try:
        s.startup_seconds = s.wait_available()
        print(f"stand-in startup to AVAILABLE: {s.startup_seconds:.2f} s")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = GrpcClient(server.grpc_port)
    yield c
    c.close()


def url(server, suffix=""):
    return f"{server.rest}/v1/models/{MODEL}{suffix}"


# ------------------------------------------------------------------------------------- status
def test_status_rest_is_tf_serving_json(server):
    code, body = get(url(server))
    assert code == 200
    # exactly TF Serving's GetModelStatusResponse JSON; '.tmp-5' is not a version
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    code, body = get(url(server, "/versions/1"))
    assert code == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"


def test_status_grpc(client):
    from tensorflow_serving.apis import get_model_status_pb2
    resp = client.status(version=1)
    assert len(resp.model_version_status) == 1
    st = resp.model_version_status[0]
    assert st.version == 1 and st.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert st.status.error_code == 0
    assert [s.version for s in client.status().model_version_status] == [1]


def test_flags_and_warmup_logged(server):
    log = server.log()
    assert "stand-in" in log and "NOT TensorFlow Serving" in log
    assert "--enable_batching is accepted but ignored" in log
    assert "'--made_up_flag=7' ignored" in log
    # the three warmup records were replayed before the version became AVAILABLE
    assert "Number of warmup records read: 3." in log
    assert log.index("Number of warmup records read") < log.index("Successfully loaded servable version")
    assert "version: 5" not in log


# ----------------------------------------------------------------------------------- metadata
def test_metadata_rest(server):
    code, body = get(url(server, "/metadata"))
    assert code == 200, body
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "text", "gray"} <= set(sigs)
    sd = sigs["serving_default"]
    assert sd["method_name"] == "tensorflow/serving/predict"
    img = sd["inputs"]["images"]
    assert img["dtype"] == "DT_UINT8"
    assert [d["size"] for d in img["tensor_shape"]["dim"]] == ["-1", "-1", "-1", "3"]
    assert sd["outputs"]["scores"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sd["outputs"]["scores"]["tensor_shape"]["dim"]] == ["-1", "3"]
    assert sd["outputs"]["height"]["dtype"] == "DT_INT32"
    assert sigs["text"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sigs["text"]["outputs"]["upper_bytes"]["dtype"] == "DT_STRING"
    code2, body2 = get(url(server, "/versions/1/metadata"))
    assert code2 == 200 and body2 == body


def test_metadata_grpc(client, server):
    from tensorflow_serving.apis import get_model_metadata_pb2
    from tensorflow.core.framework import types_pb2
    resp = client.metadata()
    assert resp.model_spec.name == MODEL and resp.model_spec.version.value == 1
    any_msg = resp.metadata["signature_def"]
    assert any_msg.type_url.endswith("tensorflow.serving.SignatureDefMap")
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_msg.Unpack(sig_map)
    sd = sig_map.signature_def["serving_default"]
    assert sd.inputs["images"].dtype == types_pb2.DT_UINT8
    assert [d.size for d in sd.inputs["images"].tensor_shape.dim] == [-1, -1, -1, 3]
    assert sd.outputs["mean"].dtype == types_pb2.DT_FLOAT
    assert sig_map.signature_def["text"].inputs["text"].dtype == types_pb2.DT_STRING
    # the same signature names as REST
    _, body = get(url(server, "/metadata"))
    assert set(sig_map.signature_def) == set(body["metadata"]["signature_def"]["signature_def"])


# ------------------------------------------------------------------------------------ predict
def test_predict_rest_row_format(server, images, reference):
    code, body = post(url(server, ":predict"), {"instances": images.tolist()})
    assert code == 200, body
    ref = reference("v1", "serving_default", images=images)
    preds = body["predictions"]
    assert len(preds) == 2 and set(preds[0]) == {"scores", "mean", "height"}
    np.testing.assert_allclose([p["scores"] for p in preds], ref["scores"], atol=TOL, rtol=0)
    np.testing.assert_allclose([p["mean"] for p in preds], ref["mean"], atol=TOL, rtol=0)
    assert [p["height"] for p in preds] == ref["height"].tolist() == [5, 5]


def test_predict_rest_columnar_format_and_version_url(server, images, reference):
    body_in = {"signature_name": "serving_default", "inputs": {"images": images.tolist()}}
    code, body = post(url(server, "/versions/1:predict"), body_in)
    assert code == 200, body
    ref = reference("v1", "serving_default", images=images)
    out = body["outputs"]
    assert set(out) == {"scores", "mean", "height"}
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out["mean"], ref["mean"], atol=TOL, rtol=0)
    # a single input may also be given bare
    code, body2 = post(url(server, ":predict"), {"inputs": images.tolist()})
    assert code == 200 and body2 == body


def test_predict_rest_single_output_omits_the_name(server, images, reference):
    ref = reference("v1", "gray", images=images)["gray"]
    code, body = post(url(server, ":predict"), {"signature_name": "gray", "instances": images.tolist()})
    assert code == 200, body
    np.testing.assert_allclose(np.array(body["predictions"]), ref, atol=TOL, rtol=0)
    code, body = post(url(server, ":predict"), {"signature_name": "gray", "inputs": images.tolist()})
    assert code == 200
    np.testing.assert_allclose(np.array(body["outputs"]), ref, atol=TOL, rtol=0)


def test_predict_rest_b64_strings(server, reference):
    raw = [b"hello \xff\x00 bytes", "plain text".encode()]
    instances = [{"b64": base64.b64encode(raw[0]).decode()}, raw[1].decode()]
    code, body = post(url(server, ":predict"), {"signature_name": "text", "instances": instances})
    assert code == 200, body
    ref = reference("v1", "text", text=np.array(raw, dtype=object))
    preds = body["predictions"]
    assert [p["length"] for p in preds] == ref["length"].tolist() == [len(raw[0]), len(raw[1])]
    # an output named *_bytes comes back as {"b64": ...}
    assert [base64.b64decode(p["upper_bytes"]["b64"]) for p in preds] == list(ref["upper_bytes"])
    code, body = post(url(server, ":predict"), {"signature_name": "text",
                                                "inputs": {"text": [{"b64": base64.b64encode(r).decode()}
                                                                    for r in raw]}})
    assert code == 200, body
    assert body["outputs"]["length"] == ref["length"].tolist()
    assert [base64.b64decode(x["b64"]) for x in body["outputs"]["upper_bytes"]] == list(ref["upper_bytes"])


def test_predict_grpc(client, images, reference):
    import tensorflow as tf
    resp = client.predict({"images": images})
    ref = reference("v1", "serving_default", images=images)
    assert resp.model_spec.name == MODEL and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    assert set(resp.outputs) == {"scores", "mean", "height"}
    for k in ref:
        got = tf.make_ndarray(resp.outputs[k])
        assert got.dtype == ref[k].dtype and got.shape == ref[k].shape
        np.testing.assert_allclose(got, ref[k], atol=TOL, rtol=0)
    only = client.predict({"images": images}, output_filter=["scores"])
    assert set(only.outputs) == {"scores"}
    txt = client.predict({"text": np.array([b"a\x00b", b"xyz"], dtype=object)}, signature="text", version=1)
    assert list(tf.make_ndarray(txt.outputs["upper_bytes"])) == [b"A\x00B", b"XYZ"]
    assert tf.make_ndarray(txt.outputs["length"]).tolist() == [3, 3]


# ------------------------------------------------------------------------------------- errors
def test_rest_errors(server, images):
    cases = [
        # (url suffix, body, TF Serving's HTTP status, a piece of its message)
        (":predict", {"signature_name": "nope", "instances": images.tolist()}, 400,
         'Serving signature name: "nope" not found in signature def'),
        (":predict", {"instances": (images.astype(np.float32) + 0.5).tolist()}, 400,
         "is not of expected type: uint8"),
        (":predict", {"inputs": {"images": [[[["a", "b", "c"]]]]}}, 400, "is not of expected type: uint8"),
        (":predict", {"instances": [[[[1, 2]]]]}, 400, "Cannot feed value of shape"),
        (":predict", {"signature_name": "text", "inputs": {"text": [1, 2]}}, 400, "not of expected type: string"),
        (":predict", {"instance": []}, 400, "Missing 'inputs' or 'instances' key"),
        ("/versions/9:predict", {"instances": images.tolist()}, 404,
         f"Servable not found for request: Specific({MODEL}, 9)"),
        ("/labels/stable:predict", {"instances": images.tolist()}, 400, "Unrecognized servable version label"),
    ]
    for suffix, doc, status, text in cases:
        code, body = post(url(server, suffix), doc)
        assert code == status, (suffix, doc if len(str(doc)) < 200 else "...", body)
        assert set(body) == {"error"} and text in body["error"], body
    code, body = post(f"{server.rest}/v1/models/nope:predict", {"instances": [1]})
    assert code == 404 and body == {"error": "Servable not found for request: Latest(nope)"}
    code, body = get(f"{server.rest}/v1/models/nope")
    assert code == 404 and body == {"error": "Could not find any versions of model nope"}
    code, body = get(url(server, "/versions/9"))
    assert code == 404 and body == {"error": f"Could not find version 9 of model {MODEL}"}
    code, body = get(f"{server.rest}/v1/models/nope/metadata")
    assert code == 404 and "Servable not found" in body["error"]
    code, body = get(f"{server.rest}/v1/models")
    assert code == 400 and body == {"error": "Missing model name in request."}
    import urllib.request
    # the body is parsed before the model is looked up (so an unknown model with bad JSON is a 400)
    for target in (url(server, ":predict"), f"{server.rest}/v1/models/nope:predict"):
        req = urllib.request.Request(target, data=b"{not json", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("malformed JSON accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 400 and "JSON Parse error" in json.loads(e.read())["error"]
    code, body = post(f"{server.rest}/v1/models/{MODEL}:classify", {"examples": [{"x": 1}]})
    assert code == 501 and "error" in body
    code, body = post(f"{server.rest}/v1/foo", {})
    assert code == 400 and body == {"error": f"Malformed request: POST /v1/foo"}


def test_grpc_errors(client, images):
    def code_of(fn):
        with pytest.raises(grpc.RpcError) as info:
            fn()
        return info.value.code(), info.value.details()

    code, details = code_of(lambda: client.predict({"images": images}, signature="nope"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and 'Serving signature key "nope" not found' in details
    code, details = code_of(lambda: client.predict({"images": images.astype(np.float32)}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "to be uint8 but float is provided" in details
    code, details = code_of(lambda: client.predict({"pictures": images}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input tensor alias not found" in details
    code, details = code_of(lambda: client.predict({"images": images}, name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and details == "Servable not found for request: Latest(nope)"
    code, details = code_of(lambda: client.predict({"images": images}, version=9))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: client.status(name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: client.metadata(name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: client.predict({"images": images}, output_filter=["nope"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # a PredictionService method the stand-in does not implement
    from tensorflow_serving.apis import classification_pb2
    code, _ = code_of(lambda: client.predict_stub.Classify(classification_pb2.ClassificationRequest(), timeout=10))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_server_still_healthy_after_errors(server, images):
    code, body = post(url(server, ":predict"), {"instances": images[:1].tolist()})
    assert code == 200 and len(body["predictions"]) == 1
    assert os.path.exists(server.log_path)
