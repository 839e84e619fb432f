"""``no-tensorflow``: the validation step as release runs it with the TensorFlow-free clients vs the
TensorFlow-importing client code they replaced, and each path's bare import cost."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench.validate_parts import ROOT
from bench.validate_parts.common import export_classifier, serving_store


# The client code as it was before tfs_api/protos.py, installed into a fresh process before the
# CLI runs (the baseline of the no-tensorflow part): tensorflow_serving's stubs and TensorFlow's tensor
# conversion in GrpcClient, tensorflow.core.protobuf for the static signature read.
TF_PATH = r"""
import tfs_api.clients as _clients, tfs_api.signatures as _signatures

class _TfGrpcClient(_clients.GrpcClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _tf_rpc(self, fn, req):
        import grpc
        try:
            return fn(req, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _clients.ServingError(f"gRPC {exc.code().name}: {exc.details()}") from None

    def status(self):
        from tensorflow_serving.apis import get_model_status_pb2
        req = get_model_status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec)
        resp = self._tf_rpc(self.models.GetModelStatus, req)
        return [{"version": int(v.version), "state": get_model_status_pb2.ModelVersionStatus.State.Name(v.state),
                 "error": v.status.error_message} for v in resp.model_version_status]

    def metadata(self):
        from tensorflow_serving.apis import get_model_metadata_pb2
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(req.model_spec)
        return _signatures.signatures_from_grpc_metadata(self._tf_rpc(self.predictions.GetModelMetadata, req))

    def predict(self, signature, input_type, x):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec)
        req.model_spec.signature_name = signature
        if x.dtype == object:
            req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(list(x), dtype=tf.string, shape=x.shape))
        else:
            req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
        resp = self._tf_rpc(self.predictions.Predict, req)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}

_clients.GrpcClient = _TfGrpcClient
_tf_free_static = _signatures.signatures_from_saved_model

def _static(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: F401  (the import the check made)
    return _tf_free_static(saved_model_dir)

_signatures.signatures_from_saved_model = _static
"""

# one validation step in a fresh process: the CLI as release runs it; writes what it imported
STEP = r"""
import json, sys
sys.path.insert(0, {root!r})
{patch}
import cli
code = cli.main({argv!r})
with open({probe!r}, "w") as fh:
    json.dump({{"exit": code, "tensorflow": "tensorflow" in sys.modules,
               "tensorflow_serving": "tensorflow_serving" in sys.modules}}, fh)
sys.exit(code)
"""

# the bare import cost: the validator's clients imported and a gRPC request built and read back
IMPORT = r"""
import json, sys, time
t = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np
from tfs_api.clients import GrpcClient
c = GrpcClient("127.0.0.1", 9, "m")
x = np.zeros((1, 64, 64, 3), np.uint8)
if {tf_path!r}:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from tensorflow.core.protobuf import saved_model_pb2
    r = predict_pb2.PredictRequest()
    r.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
    back = tf.make_ndarray(r.inputs["inputs"])
else:
    from tfs_api import protos as tfs_protos
    r = tfs_protos.message("tensorflow.serving.PredictRequest")()
    tfs_protos.tensor_proto(x, into=r.inputs["inputs"])
    back = tfs_protos.to_ndarray(r.inputs["inputs"])
    tfs_protos.message("tensorflow.SavedModel")
print(json.dumps({{"seconds": time.perf_counter() - t, "tensorflow": "tensorflow" in sys.modules}}))
"""


def stage_demo_classifier(s3, serving, work: str) -> str:
    """The demo classifier as the exporter stages it: SavedModel, warmup file, reference answers to
    its golden set (demo/golden/shapes-classifier)."""
    import tensorflow as tf
    from exporters import golden as golden_mod
    from exporters.reference import reference_answers, write_warmup
    from registry.staging import stage
    sm = os.path.join(export_classifier(os.path.join(work, "models")), "shapes-classifier", "1")
    g = golden_mod.load(os.path.join(ROOT, "demo", "golden", "shapes-classifier") + "/", task="classification")
    types = {"serving_default": "image_tensor"}
    write_warmup(sm, "shapes-classifier", g, types)
    ref = os.path.join(work, "ref")
    reference_answers({"serving_default": tf.saved_model.load(sm).signatures["serving_default"]}, g, types, ref)
    return stage(s3, serving, sm, extra_dirs={"reference": ref},
                 fields={"input_types": types, "task": "classification", "model": "shapes-classifier",
                         "exporter": {"tensorflow": tf.__version__}})


def no_tensorflow(rounds: int, image: str) -> dict:
    import subprocess

    import yaml
    from registry.s3 import S3Uri
    work = tempfile.mkdtemp(prefix="bench-validate-notf-")
    sw, s3 = serving_store(work)
    try:
        uri = stage_demo_classifier(s3, S3Uri("serving", "shapes-classifier/"), work)
        demo = yaml.safe_load(open(os.path.join(ROOT, "config", "models.yaml")))["models"]["shapes-classifier"]
        config = os.path.join(work, "models.yaml")
        with open(config, "w") as fh:
            yaml.safe_dump({"models": {"shapes-classifier": {
                **{k: demo[k] for k in ("task", "input_types", "min_accuracy")},
                "serving": "s3://serving/shapes-classifier/",
                "golden": os.path.join(ROOT, "demo", "golden", "shapes-classifier") + "/"}}}, fh)
        env = {**os.environ, "AWS_ENDPOINT_URL": sw.endpoint, "AWS_ACCESS_KEY_ID": sw.access_key,
               "AWS_SECRET_ACCESS_KEY": sw.secret_key, "AWS_REGION": "us-east-1", "PYTHONPATH": ROOT,
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        modes = {"tf-free": "", "tensorflow": TF_PATH}

        def step(mode: str) -> dict:
            probe = os.path.join(work, f"probe-{mode}.json")
            argv = ["validate", "shapes-classifier", "--candidate", uri, "--config", config, "--image", image,
                    "--json"]
            t = time.monotonic()
            p = subprocess.run([sys.executable, "-c", STEP.format(root=ROOT, patch=modes[mode], argv=argv,
                                                                  probe=probe)],
                               cwd=work, env=env, capture_output=True, text=True, timeout=900)
            wall = time.monotonic() - t
            if p.returncode != 0:
                raise SystemExit(f"the {mode} validation failed (exit {p.returncode}): {p.stderr[-2000:]}")
            with open(probe) as fh:
                seen = json.load(fh)
            v = json.loads(p.stdout.strip().splitlines()[-1])
            return {"wall_s": wall, "available_s": v.get("seconds_to_available"), **seen}

        def imports(mode: str) -> dict:
            code = IMPORT.format(root=ROOT, tf_path=mode == "tensorflow")
            t = time.monotonic()
            p = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                               timeout=300)
            if p.returncode != 0:
                raise SystemExit(f"the {mode} import probe failed: {p.stderr[-2000:]}")
            return {**json.loads(p.stdout.strip().splitlines()[-1]), "process_s": time.monotonic() - t}

        res = {m: [] for m in modes}
        imp = {m: [] for m in modes}
        for r in range(rounds):
            for mode in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                i = imports(mode)
                imp[mode].append(i)
                m = step(mode)
                res[mode].append(m)
                print(f"  round {r} {mode:10}: validation {m['wall_s']:5.1f}s (AVAILABLE after {m['available_s']:.1f}s, "
                      f"tensorflow imported: {m['tensorflow']}); clients import + one request "
                      f"{i['seconds']:.2f}s ({i['process_s']:.2f}s with the interpreter)", flush=True)
        med = {m: statistics.median(x["wall_s"] for x in res[m]) for m in modes}
        med_imp = {m: statistics.median(x["seconds"] for x in imp[m]) for m in modes}
        ratio = med["tf-free"] / med["tensorflow"]
        pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(res["tf-free"], res["tensorflow"])]
        print(f"clients import + one request: {med_imp['tf-free']:.2f}s without TensorFlow vs "
              f"{med_imp['tensorflow']:.2f}s importing it")
        print(f"validation of the demo classifier (150 golden images, fresh process): {med['tf-free']:.1f}s without "
              f"TensorFlow vs {med['tensorflow']:.1f}s importing it = {ratio:.2f}x "
              f"(target <= 0.6x: {'PASS' if ratio <= 0.6 else 'FAIL'}); per round "
              + ", ".join(f"{x:.2f}x" for x in pairs))
        # the serving side's own start (the stand-in imports TensorFlow in its container, ~3 s; the real
        # tensorflow/serving binary starts in well under a second) is the same on both sides
        own = {m: statistics.median(x["wall_s"] - (x["available_s"] or 0) for x in res[m]) for m in modes}
        own_ratio = own["tf-free"] / own["tensorflow"]
        print(f"without the serving container's start -> AVAILABLE (the same server on both sides): "
              f"{own['tf-free']:.1f}s vs {own['tensorflow']:.1f}s = {own_ratio:.2f}x")
        if any(x["tensorflow"] for x in res["tf-free"]):
            print("WARNING: the tf-free validation imported tensorflow after all")
        return {"validation_s": {m: [x["wall_s"] for x in res[m]] for m in modes}, "median_s": med,
                "import_s": med_imp, "ratio": ratio, "ratio_per_round": pairs,
                "without_server_start_s": own, "ratio_without_server_start": own_ratio,
                "tensorflow_imported": {m: [x["tensorflow"] for x in res[m]] for m in modes}, "rounds": rounds}
    finally:
        sw.stop()
        shutil.rmtree(work, ignore_errors=True)
