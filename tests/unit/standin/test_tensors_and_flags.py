"""The stand-in's JSON tensor mapping (TF Serving's json_tensor.cc rules) and flag/environment
handling, without a server."""
from __future__ import annotations

import json

import numpy as np
import pytest

from standin import server, tensors
from standin.errors import ServingError
from standin.manager import parse_versions

DT = {"images": tensors.DT_UINT8}


def parse(doc, infos=DT):
    return tensors.parse_predict_json(json.dumps(doc), lambda sig: infos)


def test_row_and_columnar_give_the_same_tensor():
    img = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(1, 2, 2, 3)
    _, a, fa = parse({"instances": img.tolist()})
    _, b, fb = parse({"inputs": {"images": img.tolist()}})
    assert (fa, fb) == (tensors.ROW, tensors.COLUMNAR)
    assert a["images"].dtype == np.uint8 and np.array_equal(a["images"], img) and np.array_equal(b["images"], img)


def test_b64_and_plain_strings():
    _, t, _ = parse({"instances": [{"b64": "AP8="}, "x"]}, {"s": tensors.DT_STRING})
    assert t["s"].tolist() == [b"\x00\xff", b"x"]


@pytest.mark.parametrize("doc,text", [
    ({"instances": [[[[1.5, 2, 3]]]]}, "is not of expected type: uint8"),
    ({"instances": [[[[True, 2, 3]]]]}, "Type: True is not of expected type: uint8"),
    ({"instances": [[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]]}, "Expecting tensor size: 3 but got: 6"),
    ({"instances": [[[1], 2]]}, "found at incorrect level"),
    ({"instances": [[1, [2]]]}, "Encountered list at unexpected level"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"instances": [1], "inputs": [1]}, "expecting only one of 'inputs' or 'instances'"),
    ({"signature_name": 3, "instances": [1]}, "'signature_name' key must be a string value"),
    ({"inputs": {"other": [1]}}, "Missing named input: images in 'inputs' object."),
])
def test_json_errors_are_invalid_argument(doc, text):
    with pytest.raises(ServingError) as info:
        parse(doc)
    assert info.value.code == 3 and info.value.http_status == 400 and text in info.value.message


def test_outputs_json_like_tf_serving():
    out = {"scores": np.array([[0.2, 1 / 3]], np.float32), "n": np.array([2], np.int32),
           "label_bytes": np.array([b"\xff"], dtype=object), "name": np.array([b"cat"], dtype=object)}
    text = tensors.outputs_to_json(out, tensors.ROW)
    assert '0.2,' in text.replace(" ", "") and "0.33333334" in text  # no float32 noise digits
    doc = json.loads(text)
    assert doc == {"predictions": [{"label_bytes": {"b64": "/w=="}, "n": 2, "name": "cat",
                                    "scores": [0.2, 0.33333334]}]}
    assert json.loads(tensors.outputs_to_json({"x": np.array([1.0, np.nan], np.float32)}, tensors.COLUMNAR)
                      .replace("NaN", "null")) == {"outputs": [1.0, None]}
    with pytest.raises(ServingError, match="inconsistent batch size"):
        tensors.outputs_to_json({"a": np.zeros(2), "b": np.zeros(3)}, tensors.ROW)


def test_proto_round_trip():
    for arr in (np.arange(6, dtype=np.uint8).reshape(2, 3), np.array([0.5, -1], np.float32),
                np.array([b"a", b"\x00"], dtype=object), np.array([True, False]), np.array([2**40], np.int64)):
        p = tensors.array_to_proto(arr)
        assert not p.tensor_content  # typed *_val fields, as TF Serving's AsProtoField
        back = tensors.proto_to_array(p)
        assert back.dtype == arr.dtype and back.tolist() == arr.tolist()


def test_version_folder_names():
    assert parse_versions(["1", "12", ".tmp-5", "_manifests", "3.partial", "abc", "007"]) == {1: "1", 12: "12", 7: "007"}


def test_environment_like_the_image_entrypoint(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "det")
    monkeypatch.setenv("MODEL_BASE_PATH", "/srv/models")
    args, unknown = server.build_parser().parse_known_args(["--enable_batching", "--foo=1"])
    assert server.resolve_model(args) == ("det", "/srv/models/det")
    assert unknown == ["--enable_batching", "--foo=1"]
    args, _ = server.build_parser().parse_known_args(["--model_name=x", "--model_base_path=/m/x",
                                                      "--enable_model_warmup=false"])
    assert server.resolve_model(args) == ("x", "/m/x") and args.enable_model_warmup is False
    assert (args.port, args.rest_api_port, args.file_system_poll_wait_seconds) == (8500, 8501, 1)
    monkeypatch.delenv("MODEL_NAME")
    monkeypatch.delenv("MODEL_BASE_PATH")
    args, _ = server.build_parser().parse_known_args([])
    assert server.resolve_model(args) == ("default", None)
