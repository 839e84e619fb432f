"""Golden images go to the temporary server in batched requests (real Docker engine, stand-in
image, no S3): batched answers equal single-image answers over REST and gRPC, images of mixed
sizes batch per shape for image_tensor and freely for image_bytes, the batch size is respected
(counted in the stand-in's DEBUG request log), and latency is timed on single-image requests."""
import json
import os
import re
import time

import numpy as np
import pytest
from PIL import Image

from exporters import golden as golden_mod
from tfs_api.batching import BatchError
from exporters.reference import load_reference, reference_answers
from tfs_api.inputs import model_input
from registry.config import ModelConfig
from registry.s3 import S3Uri
from serving import launchers
from tfs_api import signatures
from validation import contracts
from tfs_api.clients import GrpcClient, RestClient, ServingError
from validation.validate import serve_and_check

pytestmark = pytest.mark.docker

MODEL = "batchy"
# 11 golden images, three sizes interleaved: A=20x20 (5 images), B=16x24 (4), C=30x12 (2)
SIZES = ["A", "B", "A", "C", "B", "A", "A", "B", "C", "B", "A"]
HW = {"A": (20, 20), "B": (16, 24), "C": (30, 12)}
INPUT_TYPES = {"serving_default": "image_tensor", "serving_bytes": "image_bytes"}


def mixed_golden_set(folder) -> str:
    rng = np.random.default_rng(3)
    entries = []
    for i, s in enumerate(SIZES):
        h, w = HW[s]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:02d}.png"))
        entries.append({"file": f"{i:02d}.png", "label": i % 3})
    with open(os.path.join(folder, "golden.json"), "w") as fh:
        json.dump({"schema": 1, "task": "classification", "classes": {"0": "r", "1": "g", "2": "b"},
                   "images": entries}, fh)
    return folder + "/"


def save_model(path, *, scalar_output=False):
    """A 3-class 'classifier' on the mean colour, with an image_tensor and an image_bytes signature
    (per-image decoding with map_fn, as Model Garden's serving modules do)."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[1.0, -0.5, 0.2], [0.3, 1.1, -0.7], [-0.4, 0.6, 0.9]])

        def head(self, mean):
            logits = tf.matmul(mean, self.w)
            out = {"logits": logits, "probs": tf.nn.softmax(logits)}
            if scalar_output:  # an output without a batch dimension: cannot be split per image
                out["total"] = tf.reduce_sum(logits)
            return out

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="inputs")])
        def tensors(self, inputs):
            return self.head(tf.reduce_mean(tf.cast(inputs, tf.float32), axis=[1, 2]) / 255.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def encoded(self, inputs):
            def one(b):
                return tf.reduce_mean(tf.cast(tf.io.decode_png(b, channels=3), tf.float32), axis=[0, 1])
            return self.head(tf.map_fn(one, inputs, fn_output_signature=tf.float32) / 255.0)

    m = M()
    tf.saved_model.save(m, path, signatures={"serving_default": m.tensors, "serving_bytes": m.encoded})
    return path


def model_config(**extra) -> ModelConfig:
    return ModelConfig(name=MODEL, serving=S3Uri("unused", f"{MODEL}/"), task="classification",
                       input_types=dict(INPUT_TYPES), extra=extra)


def reference(sm_dir, golden, out_dir, batch_size):
    import tensorflow as tf
    loaded = tf.saved_model.load(sm_dir)
    reference_answers({s: loaded.signatures[s] for s in INPUT_TYPES}, golden, INPUT_TYPES, out_dir,
                      batch_size=batch_size)
    return load_reference(out_dir)


@pytest.fixture
def debug_server(monkeypatch, standin_image, docker_engine):
    """start(models_dir) -> Server: the stand-in image through the docker launcher, logging every
    predict request with its input shapes (--log_level=DEBUG)."""
    monkeypatch.setattr(launchers, "SERVER_ARGS", [*launchers.SERVER_ARGS, "--log_level=DEBUG"])
    launcher = launchers.DockerLauncher(standin_image, run_id="test-batching")
    yield lambda models: launcher.start(models, MODEL)
    launcher.cleanup()


def logged_requests(server, singles: int) -> dict:
    """{"REST"/"gRPC": {signature: [input shape, ...]}} from the stand-in's DEBUG lines, once the
    stream sent last (gRPC, serving_bytes) logged ``singles`` single-image requests (the container's
    log stream lags a little), or after 20 s."""
    deadline = time.monotonic() + 20
    while True:
        out = {p: {s: [] for s in INPUT_TYPES} for p in ("REST", "gRPC")}
        for m in re.finditer(r"predict over (REST|gRPC): model \S+, signature (\S+), inputs \{'inputs': "
                             r"\[([\d, ]+)\]\}", server.logs(100000)):
            out[m.group(1)][m.group(2)].append(tuple(int(d) for d in m.group(3).split(",")))
        if sum(x[0] == 1 for x in out["gRPC"]["serving_bytes"]) >= singles or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_batched_answers_equal_single_image_answers(tmp_path, debug_server):
    golden = golden_mod.load(mixed_golden_set(str(tmp_path)), task="classification")
    sm = save_model(str(tmp_path / "models" / MODEL / "1"))
    ref = reference(sm, golden, str(tmp_path / "ref"), batch_size=4)
    single_ref = reference(sm, golden, str(tmp_path / "ref1"), batch_size=1)
    for sig in INPUT_TYPES:  # the exporter's batched answers are the one-at-a-time answers
        for g in golden.images:
            for k in ("logits", "probs"):
                assert ref[sig][g.name][k].shape == single_ref[sig][g.name][k].shape == (1, 3)
                np.testing.assert_allclose(ref[sig][g.name][k], single_ref[sig][g.name][k], atol=1e-6)

    server = debug_server(str(tmp_path / "models"))
    model = model_config(validation_batch_size=4, latency_samples=3)
    contract = contracts.Contract.for_model("classification", INPUT_TYPES)
    checks, answers, first, numbers = serve_and_check(server, model, contract, golden, ref, deadline_s=180,
                                                      tolerance=1e-5, latency_budget_ms=None)
    failed = [(c["name"], c["detail"]) for c in checks if not c["passed"]]
    assert not failed, failed
    parity = {c["name"]: c["numbers"] for c in checks if c["name"].startswith("parity:")}
    assert parity["parity: REST serving_default vs exporter"]["requests"] == 4  # A: 4+1, B: 4, C: 2
    assert parity["parity: gRPC serving_bytes vs exporter"]["requests"] == 3    # 4+4+3, sizes mixed
    got = numbers["golden_requests"]["REST serving_default"]
    assert (got["requests"], got["images"], got["batch_size"]) == (4, 11, 4)

    # what the server saw: batches of <= 4, one shape per image_tensor batch, then 3 single-image
    # latency requests (images 0, 3, 7 of the set: sizes A, C, B)
    a, b, c = ((*HW[s], 3) for s in "ABC")
    seen = logged_requests(server, 3)
    for proto in ("REST", "gRPC"):
        assert seen[proto]["serving_default"] == [(4, *a), (1, *a), (4, *b), (2, *c), (1, *a), (1, *c), (1, *b)]
        assert seen[proto]["serving_bytes"] == [(4,), (4,), (3,), (1,), (1,), (1,)]
    for key in ("REST serving_default", "gRPC serving_default", "REST serving_bytes", "gRPC serving_bytes"):
        assert numbers["latency_ms"][key]["n"] == 3 and numbers["latency_ms"][key]["p95"] > 0

    # each image's answer, split from its batch, equals the answer to that image sent alone
    assert len(answers) == 4 * len(golden.images)
    by_key = {(n, s): o for n, s, o in answers}
    rest = RestClient(server.host, server.rest_port, MODEL)
    grpc = GrpcClient(server.host, server.grpc_port, MODEL)
    try:
        for sig, typ in INPUT_TYPES.items():
            for proto, cl in (("REST", rest), ("gRPC", grpc)):
                for g in golden.images:
                    alone = cl.predict(sig, typ, model_input(typ, g))
                    batched = by_key[(g.name, f"{proto}:{sig}")]
                    assert set(batched) == set(alone) == {"logits", "probs"}
                    for k in alone:
                        assert batched[k].shape == alone[k].shape == (1, 3)
                        np.testing.assert_allclose(batched[k], alone[k], atol=1e-6)
    finally:
        grpc.close()
    assert set(first) == {g.name for g in golden.images}
    assert all(first[n] is by_key[(n, "REST:serving_default")] for n in first)


def test_answers_that_cannot_be_split_fail_with_the_way_out(tmp_path, debug_server):
    golden = golden_mod.load(mixed_golden_set(str(tmp_path)), task="classification")
    sm = save_model(str(tmp_path / "models" / MODEL / "1"), scalar_output=True)
    with pytest.raises(BatchError, match="Set validation_batch_size: 1"):  # the exporter's side
        reference(sm, golden, str(tmp_path / "ref"), batch_size=4)
    ref = reference(sm, golden, str(tmp_path / "ref1"), batch_size=1)
    server = debug_server(str(tmp_path / "models"))
    contract = contracts.Contract.for_model("classification", INPUT_TYPES)
    with pytest.raises(ServingError, match=r"REST answer of signature 'serving_default' to a batch of 4 images has "
                                           r"outputs without a leading batch dimension of 4: \{'total': \[\]\}"):
        serve_and_check(server, model_config(validation_batch_size=4), contract, golden, ref, deadline_s=180,
                        tolerance=1e-5, latency_budget_ms=None)
    # one image per request: the same model validates
    checks, *_ = serve_and_check(server, model_config(validation_batch_size=1, latency_samples=1), contract, golden,
                                 ref, deadline_s=180, tolerance=1e-5, latency_budget_ms=None)
    assert all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    seen = logged_requests(server, 12)  # per protocol and signature 11 + 1 in the second run
    # the first batch failed the first run, which stopped there; the second sent 11 single images
    # (shape by shape) and 1 for latency
    a, b, c = ((1, *HW[s], 3) for s in "ABC")
    assert seen["REST"]["serving_default"] == [(4, *HW["A"], 3)] + [a] * 5 + [b] * 4 + [c] * 2 + [a]
    assert [x[0] for x in seen["gRPC"]["serving_bytes"]] == [1] * 12


def kinds_model(path):
    """Outputs of every kind the validator reads: float32, int64, int32, uint8, an empty dimension,
    strings (image_tensor signature), and int32/string answers to a string input (bytes signature)."""
    import tensorflow as tf

    class K(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="inputs")])
        def tensors(self, inputs):
            x = tf.cast(inputs, tf.float32)
            mean = tf.reduce_mean(x, axis=[1, 2]) / 255.0
            b = tf.shape(inputs)[0]
            return {"probs": tf.nn.softmax(mean * 7.0), "classes": tf.argmax(mean, axis=-1),
                    "count": tf.fill([b], tf.shape(inputs)[1] * tf.shape(inputs)[2]), "pixels": inputs,
                    "nothing": tf.zeros([b, 0]), "names": tf.strings.as_string(tf.argmax(mean, axis=-1))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def encoded(self, inputs):
            return {"length": tf.strings.length(inputs), "echo": inputs,
                    "first": tf.cast(tf.strings.unicode_decode(tf.strings.substr(inputs, 0, 1), "ISO-8859-1")
                                     .to_tensor(default_value=-1)[:, 0], tf.int64)}

    k = K()
    tf.saved_model.save(k, path, signatures={"serving_default": k.tensors, "serving_bytes": k.encoded})
    return path


def test_the_grpc_client_needs_no_tensorflow_and_reads_as_tensorflow_does(tmp_path, debug_server):
    """The validator's gRPC client in a fresh process, against the stand-in: tensorflow is never
    imported, and status, metadata and every answer (dtype, shape, values) equal what the
    TensorFlow-based conversion reads (tensorflow_serving's stubs, tf.make_tensor_proto /
    tf.make_ndarray, as GrpcClient did before)."""
    import pickle
    import subprocess
    import sys
    import textwrap

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_service_pb2_grpc, \
        model_service_pb2_grpc

    from tests.conftest import ROOT
    from tfs_api.clients import wait_available
    kinds_model(str(tmp_path / "models" / MODEL / "1"))
    server = debug_server(str(tmp_path / "models"))
    wait_available(RestClient(server.host, server.rest_port, MODEL), deadline_s=180, alive=server.alive)
    rng = np.random.default_rng(5)
    inputs = {"serving_default": rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8),
              "serving_bytes": np.array([b"\x89PNG\x00a", b"", b"\xff"], dtype=object)}
    with open(tmp_path / "inputs.pkl", "wb") as fh:
        pickle.dump(inputs, fh)
    code = textwrap.dedent(f"""
        import pickle, sys
        from tfs_api.clients import GrpcClient
        inputs = pickle.load(open("inputs.pkl", "rb"))
        c = GrpcClient({server.host!r}, {server.grpc_port}, {MODEL!r})
        out = {{"status": c.status(), "metadata": c.metadata(),
               "answers": {{s: c.predict(s, "", x) for s, x in inputs.items()}},
               "tf": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras"))}}
        pickle.dump(out, open("out.pkl", "wb"))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr[-3000:]
    with open(tmp_path / "out.pkl", "rb") as fh:
        out = pickle.load(fh)
    assert out["tf"] == []

    channel = grpc.insecure_channel(f"{server.host}:{server.grpc_port}")
    try:  # the TensorFlow-based reading of the same server
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}), timeout=30)
        assert out["status"] == [{"version": int(v.version), "error": v.status.error_message,
                                  "state": get_model_status_pb2.ModelVersionStatus.State.Name(v.state)}
                                 for v in status.model_version_status] == \
            [{"version": 1, "state": "AVAILABLE", "error": ""}]
        for sig, x in inputs.items():
            req = predict_pb2.PredictRequest(model_spec={"name": MODEL, "signature_name": sig})
            req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(list(x), dtype=tf.string, shape=x.shape)
                                          if x.dtype == object else tf.make_tensor_proto(x))
            want = {k: tf.make_ndarray(v) for k, v in predictions.Predict(req, timeout=30).outputs.items()}
            got = out["answers"][sig]
            assert set(got) == set(want)
            for k in want:
                assert (got[k].dtype, got[k].shape) == (want[k].dtype, want[k].shape), (sig, k)
                assert got[k].tolist() == want[k].tolist(), (sig, k)
    finally:
        channel.close()
    a, b = out["answers"]["serving_default"], out["answers"]["serving_bytes"]
    assert {k: (str(v.dtype), v.shape) for k, v in a.items()} == {
        "probs": ("float32", (2, 3)), "classes": ("int64", (2,)), "count": ("int32", (2,)),
        "pixels": ("uint8", (2, 5, 4, 3)), "nothing": ("float32", (2, 0)), "names": ("object", (2,))}
    assert a["pixels"].tolist() == inputs["serving_default"].tolist() and a["count"].tolist() == [20, 20]
    assert b["echo"].tolist() == [b"\x89PNG\x00a", b"", b"\xff"] and b["length"].tolist() == [6, 0, 1]
    assert b["first"].tolist() == [0x89, -1, 0xFF]
    # metadata: the REST answer's normal form, and the SavedModel's own
    assert out["metadata"] == RestClient(server.host, server.rest_port, MODEL).metadata() == \
        signatures.signatures_from_saved_model(str(tmp_path / "models" / MODEL / "1"))
