"""tfs_api/protos.py: TF Serving's messages and numpy <-> TensorProto without importing
TensorFlow. Hand-computed cases first; then parity with TensorFlow's own conversion
(tf.make_tensor_proto / tf.make_ndarray, the SavedModel read through tensorflow's saved_model_pb2);
then fresh processes: the validator's client code leaves ``tensorflow`` out of sys.modules, and a
process that imports the real TensorFlow before or after it keeps working with both."""
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from tfs_api import protos as tp
from tfs_api import signatures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
P = signatures.PREDICT


def dims(proto) -> list[int]:
    return [d.size for d in proto.tensor_shape.dim]


# ---------------------------------------------------------------------------------- hand-computed
def test_an_image_batch_goes_as_raw_little_endian_bytes():
    x = np.arange(6, dtype=np.uint8).reshape(1, 1, 2, 3)
    t = tp.tensor_proto(x)
    assert (t.dtype, dims(t)) == (4, [1, 1, 2, 3])  # DT_UINT8
    assert t.tensor_content == bytes([0, 1, 2, 3, 4, 5]) and not t.int_val
    f = tp.tensor_proto(np.array([1.5, -2.0], np.float32))
    assert (f.dtype, f.tensor_content) == (1, struct.pack("<2f", 1.5, -2.0))
    i = tp.tensor_proto(np.array([[1], [-2]], np.int64))
    assert (i.dtype, dims(i), i.tensor_content) == (9, [2, 1], struct.pack("<2q", 1, -2))


def test_one_value_goes_into_its_typed_field():
    assert list(tp.tensor_proto(np.array([200], np.uint8)).int_val) == [200]
    assert list(tp.tensor_proto(np.array([[0.25]], np.float32)).float_val) == [0.25]
    assert list(tp.tensor_proto(np.array([7], np.int64)).int64_val) == [7]
    assert list(tp.tensor_proto(np.array([1.0], np.float16)).half_val) == [0x3C00]  # float16 bits of 1.0
    assert list(tp.tensor_proto(np.array([True])).bool_val) == [True]
    assert list(tp.tensor_proto(np.array([3, 3], np.uint16)).int_val) == [3, 3]  # uint16: never tensor_content
    s = tp.tensor_proto(np.array(5, np.int32))
    assert (s.HasField("tensor_shape"), dims(s), list(s.int_val)) == (True, [], [5])  # a scalar: shape present, no dims


def test_empty_dimensions_carry_no_values():
    t = tp.tensor_proto(np.zeros((2, 0), np.float32))
    assert (t.dtype, dims(t), t.tensor_content, list(t.float_val)) == (1, [2, 0], b"", [])
    back = tp.to_ndarray(t)
    assert (back.dtype, back.shape) == (np.float32, (2, 0))


def test_bytes_inputs_are_a_string_tensor():
    t = tp.tensor_proto(np.array([b"a\x00b", "\u00e9", b""], dtype=object))
    assert (t.dtype, dims(t), list(t.string_val)) == (7, [3], [b"a\x00b", b"\xc3\xa9", b""])
    back = tp.to_ndarray(t)
    assert back.dtype == object and back.tolist() == [b"a\x00b", b"\xc3\xa9", b""]
    with pytest.raises(tp.TensorError, match="holds a int"):
        tp.tensor_proto(np.array([b"ok", 3], dtype=object))


def test_a_short_typed_field_is_padded_with_its_last_value():
    T = tp.message("tensorflow.TensorProto")
    f = T(dtype=1, float_val=[1.5])
    f.tensor_shape.dim.add().size = 2
    f.tensor_shape.dim.add().size = 2
    assert tp.to_ndarray(f).tolist() == [[1.5, 1.5], [1.5, 1.5]] and tp.to_ndarray(f).dtype == np.float32
    i = T(dtype=3, int_val=[1, 2])
    i.tensor_shape.dim.add().size = 3
    assert tp.to_ndarray(i).tolist() == [1, 2, 2] and tp.to_ndarray(i).dtype == np.int32
    s = T(dtype=7, string_val=[b"x"])
    s.tensor_shape.dim.add().size = 2
    assert tp.to_ndarray(s).tolist() == [b"x", b"x"]
    z = T(dtype=9)
    z.tensor_shape.dim.add().size = 2
    assert tp.to_ndarray(z).tolist() == [0, 0] and tp.to_ndarray(z).dtype == np.int64
    c = T(dtype=8, scomplex_val=[1.0, 2.0, 3.0, -4.0])
    c.tensor_shape.dim.add().size = 2
    assert tp.to_ndarray(c).tolist() == [1 + 2j, 3 - 4j]


def test_tensors_that_do_not_fit_are_errors_that_say_why():
    T = tp.message("tensorflow.TensorProto")
    many = T(dtype=1, float_val=[1.0, 2.0, 3.0])
    many.tensor_shape.dim.add().size = 2
    with pytest.raises(tp.TensorError, match=r"shape \[2\] carries 3 values in float_val"):
        tp.to_ndarray(many)
    short = T(dtype=1, tensor_content=b"\x00" * 12)
    short.tensor_shape.dim.add().size = 2
    with pytest.raises(tp.TensorError, match=r"carries 3 values in tensor_content \(12 bytes\), not 2"):
        tp.to_ndarray(short)
    with pytest.raises(tp.TensorError, match="DT_RESOURCE"):
        tp.to_ndarray(T(dtype=20))
    with pytest.raises(tp.TensorError, match="DT_STRING tensor in tensor_content"):
        tp.to_ndarray(T(dtype=7, tensor_content=b"\x01a"))
    with pytest.raises(tp.TensorError, match="numpy dtype datetime64"):
        tp.tensor_proto(np.array(["2020-01-01"], dtype="datetime64[D]"))


def test_enums_are_tensorflows():
    for number, name in signatures._DT_ENUM.items():  # the contracts' table agrees with types.proto
        assert tp.enum_value("tensorflow.DataType", "DT_" + {"float32": "FLOAT", "float64": "DOUBLE",
                                                             "float16": "HALF"}.get(name, name.upper())) == number
    assert tp.enum_name("tensorflow.serving.ModelVersionStatus.State", 30) == "AVAILABLE"


def test_requests_round_trip_and_name_their_model():
    R = tp.message("tensorflow.serving.PredictRequest")
    req = R()
    req.model_spec.name, req.model_spec.signature_name = "m", "serving_default"
    req.model_spec.version.value = 3
    tp.tensor_proto(np.ones((1, 2, 2, 3), np.uint8), into=req.inputs["inputs"])
    back = R.FromString(req.SerializeToString())
    assert (back.model_spec.name, back.model_spec.version.value) == ("m", 3)
    assert tp.to_ndarray(back.inputs["inputs"]).tolist() == np.ones((1, 2, 2, 3), np.uint8).tolist()


def hand_built_saved_model(folder) -> str:
    sm = tp.message("tensorflow.SavedModel")()
    train = sm.meta_graphs.add()
    train.meta_info_def.tags.append("train")
    train.signature_def["train_sig"].method_name = "x"
    serve = sm.meta_graphs.add()
    serve.meta_info_def.tags.append("serve")
    sd = serve.signature_def["serving_default"]
    sd.method_name = P
    sd.inputs["inputs"].dtype = 4
    for n in (-1, -1, -1, 3):
        sd.inputs["inputs"].tensor_shape.dim.add().size = n
    sd.outputs["logits"].dtype = 1
    for n in (-1, 3):
        sd.outputs["logits"].tensor_shape.dim.add().size = n
    sd.outputs["classes"].dtype = 9
    sd.outputs["classes"].tensor_shape.unknown_rank = True
    serve.signature_def["__saved_model_init_op"].method_name = "init"
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "saved_model.pb"), "wb") as fh:
        fh.write(sm.SerializeToString())
    return folder


SIGNATURES = {"serving_default": {"method": P, "inputs": {"inputs": {"dtype": "uint8", "shape": [-1, -1, -1, 3]}},
                                  "outputs": {"logits": {"dtype": "float32", "shape": [-1, 3]},
                                              "classes": {"dtype": "int64", "shape": None}}}}


def test_static_signatures_from_saved_model_pb(tmp_path):
    assert signatures.signatures_from_saved_model(hand_built_saved_model(str(tmp_path))) == SIGNATURES


def test_grpc_metadata_to_normal_form():
    sdm = tp.message("tensorflow.serving.SignatureDefMap")()
    sd = sdm.signature_def["serving_default"]
    sd.method_name = P
    sd.inputs["inputs"].dtype = 7
    sd.inputs["inputs"].tensor_shape.dim.add().size = -1
    sd.outputs["probs"].dtype = 1
    resp = tp.message("tensorflow.serving.GetModelMetadataResponse")()
    resp.metadata["signature_def"].Pack(sdm)
    assert signatures.signatures_from_grpc_metadata(resp) == {
        "serving_default": {"method": P, "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
                            "outputs": {"probs": {"dtype": "float32", "shape": []}}}}


def test_missing_wheels_say_where_to_run():
    with pytest.raises(tp.ProtosUnavailable, match="worker environment"):
        tp._module_file("no_such_package_here.apis.predict_pb2")
    with pytest.raises(tp.ProtosUnavailable, match="no serialized file descriptor"):
        tp._read_generated(tp.__file__)


# ------------------------------------------------------------------- parity with TensorFlow's own
DTYPES = ["uint8", "float32", "float64", "int32", "int64", "int8", "int16", "uint16", "uint32", "uint64", "bool",
          "float16", "bfloat16", "complex64", "complex128"]
SHAPES = [(1, 4, 5, 3), (3, 2), (1,), (1, 1), (), (0,), (2, 0), (0, 3, 3)]


def array(dtype: str, shape) -> np.ndarray:
    dt = np.dtype(__import__("ml_dtypes").bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    x = np.random.default_rng(zlib.crc32(repr((dtype, shape)).encode())).normal(size=shape) * 60
    if dt.kind == "c":
        x = x + 1j * x[::-1] if x.ndim else x + 0.5j
    return x.astype(dt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_requests_equal_make_tensor_proto_and_answers_equal_make_ndarray(dtype):
    tf = pytest.importorskip("tensorflow")
    from standin.tensors import array_to_proto  # the stand-in's (TF Serving's AsProtoField) answer form
    T = tp.message("tensorflow.TensorProto")
    for shape in SHAPES:
        x = array(dtype, shape)
        assert tp.tensor_proto(x).SerializeToString(deterministic=True) == \
            tf.make_tensor_proto(x).SerializeToString(deterministic=True), (dtype, shape)
        answers = [tf.make_tensor_proto(x)]
        if dtype != "bfloat16":
            answers.append(array_to_proto(x))
        for theirs in answers:
            want = tf.make_ndarray(theirs)
            got = tp.to_ndarray(T.FromString(theirs.SerializeToString()))
            assert (got.dtype, got.shape) == (want.dtype, want.shape), (dtype, shape)
            assert np.array_equal(got, want, equal_nan=True), (dtype, shape)


@pytest.mark.parametrize("values", [[b"\x89PNG..."], [b"a\x00", b"", b"xyz"], [], ["h\u00e9"]])
def test_string_requests_equal_the_tensorflow_conversion(values):
    tf = pytest.importorskip("tensorflow")
    x = np.array(values, dtype=object)
    theirs = tf.make_tensor_proto(list(x), dtype=tf.string, shape=x.shape)  # what GrpcClient sent before
    assert tp.tensor_proto(x).SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    got = tp.to_ndarray(tp.message("tensorflow.TensorProto").FromString(theirs.SerializeToString()))
    want = tf.make_ndarray(theirs)
    assert (got.dtype, got.shape, got.tolist()) == (want.dtype, want.shape, want.tolist())


def test_static_signatures_equal_the_tensorflow_read(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import saved_model_pb2

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="inputs")])
        def images(self, inputs):
            x = tf.cast(inputs, tf.float32)
            return {"logits": tf.reduce_mean(x, axis=[1, 2]), "classes": tf.argmax(x[:, 0, 0], axis=-1),
                    "count": tf.shape(inputs)[:1], "nothing": tf.zeros([tf.shape(inputs)[0], 0])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def encoded(self, inputs):
            return {"length": tf.strings.length(inputs), "echo": inputs}

    m = M()
    tf.saved_model.save(m, str(tmp_path), signatures={"serving_default": m.images, "serving_bytes": m.encoded})
    ours = signatures.signatures_from_saved_model(str(tmp_path))
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((tmp_path / "saved_model.pb").read_bytes())
    meta = next(g for g in sm.meta_graphs if "serve" in g.meta_info_def.tags)
    theirs = {n: {"method": sd.method_name,
                  "inputs": {k: {"dtype": signatures._DT_ENUM[v.dtype], "shape": signatures._shape_from_proto(v.tensor_shape)}
                             for k, v in sd.inputs.items()},
                  "outputs": {k: {"dtype": signatures._DT_ENUM[v.dtype], "shape": signatures._shape_from_proto(v.tensor_shape)}
                              for k, v in sd.outputs.items()}}
              for n, sd in meta.signature_def.items() if not n.startswith("__")}
    assert ours == theirs
    assert ours["serving_default"]["outputs"]["classes"]["dtype"] == "int64"
    assert ours["serving_bytes"]["outputs"]["length"] == {"dtype": "int32", "shape": [-1]}


def test_tf_example_inputs_can_be_built_without_tensorflow():
    """The tf.Example the exporter's model_input sends (exporters/reference.py, through TensorFlow's
    example_pb2) is byte for byte the one built from tfs_protos' messages."""
    pytest.importorskip("tensorflow")
    from tfs_api.inputs import example_bytes
    png = b"\x89PNG\r\n\x1a\n rest of a png"
    ex = tp.message("tensorflow.Example")()
    ex.features.feature["image/encoded"].bytes_list.value.append(png)
    ex.features.feature["image/format"].bytes_list.value.append(b"png")
    assert ex.SerializeToString(deterministic=True) == \
        tp.message("tensorflow.Example").FromString(example_bytes(png)).SerializeToString(deterministic=True)


# ----------------------------------------------------------------------------------- fresh processes
def run_fresh(code: str, tmp_path) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_validator_clients_do_not_import_tensorflow(tmp_path):
    hand_built_saved_model(str(tmp_path / "sm"))
    out = run_fresh("""
        import json, sys
        import numpy as np
        from tfs_api import clients, signatures
        from validation import contracts, validate
        from tfs_api.protos import message, tensor_proto, to_ndarray
        g = clients.GrpcClient("127.0.0.1", 9, "m", timeout=0.5)  # nothing listens on port 9
        try:
            g.status()
        except clients.ServingError as exc:
            err = str(exc)
        req = message("tensorflow.serving.PredictRequest")()
        tensor_proto(np.zeros((2, 8, 8, 3), np.uint8), into=req.inputs["inputs"])
        tensor_proto(np.array([b"png"], dtype=object), into=req.inputs["b"])
        back = to_ndarray(message("tensorflow.serving.PredictRequest").FromString(req.SerializeToString()).inputs["b"])
        sigs = signatures.signatures_from_saved_model("sm")
        print(json.dumps({"err": err, "back": [v.decode() for v in back], "sigs": sigs,
                          "tf": sorted(m for m in sys.modules if m.split(".")[0] in
                                       ("tensorflow", "tensorflow_serving", "keras", "tf_keras"))}))
    """, tmp_path)
    assert out["tf"] == []
    assert out["err"].startswith("gRPC UNAVAILABLE") and out["back"] == ["png"]
    assert out["sigs"] == SIGNATURES


@pytest.mark.parametrize("order", ["tf-free first", "tensorflow first"])
def test_a_process_that_imports_tensorflow_too_keeps_both_working(tmp_path, order):
    """Our messages live in a private descriptor pool: TensorFlow's (default pool) are untouched
    whichever is loaded first, and the two speak the same wire format."""
    out = run_fresh(f"""
        import json
        import numpy as np
        if {order == "tensorflow first"!r}:
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2
        from tfs_api import protos as tp
        x = np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3)
        ours = tp.message("tensorflow.serving.PredictRequest")(model_spec={{"name": "m"}})
        tp.tensor_proto(x, into=ours.inputs["inputs"])
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        theirs = predict_pb2.PredictRequest(model_spec={{"name": "m"}})
        theirs.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
        parsed = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
        resp = predict_pb2.PredictResponse()
        resp.outputs["probs"].CopyFrom(tf.make_tensor_proto(np.array([[0.25, 0.75]], np.float32)))
        read = tp.to_ndarray(tp.message("tensorflow.serving.PredictResponse").FromString(
            resp.SerializeToString()).outputs["probs"])
        print(json.dumps({{
            "same_request": parsed == theirs,
            "tf_reads_ours": tf.make_ndarray(parsed.inputs["inputs"]).tolist() == x.tolist(),
            "we_read_tf": read.tolist() == [[0.25, 0.75]] and read.dtype == np.float32,
            "separate_classes": tp.message("tensorflow.TensorProto") is not type(theirs.inputs["inputs"]),
            "tf_still_works": float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0,
            "grpc_stub": hasattr(prediction_service_pb2_grpc, "PredictionServiceStub"),
        }}))
    """, tmp_path)
    assert out == {"same_request": True, "tf_reads_ours": True, "we_read_tf": True, "separate_classes": True,
                   "tf_still_works": True, "grpc_stub": True}
