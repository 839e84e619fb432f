"""Each broken candidate fails validation with its own clear reason and a report (real Docker
engine, stand-in image, real SeaweedFS); bad serving setups are exit 2."""
import json

import pytest

from registry.s3 import S3Uri
from tests.integration.conftest import validation_containers

from . import candidates
from .conftest import GOLDEN_CLS

pytestmark = pytest.mark.docker


def _stage(cls_env, s3, tmp_path, module=None, *, sm=None, signature="serving_default", **kw):
    sm = sm or candidates.save(module, str(tmp_path / "sm"), signature_name=signature)
    return candidates.stage_candidate(s3, S3Uri(cls_env.serving, f"{cls_env.name}/"), sm, GOLDEN_CLS,
                                      str(tmp_path), **kw)


def _validate(cls_env, cand, image, *extra, expect=1):
    p = cls_env.cli("validate", cls_env.name, "--candidate", cand, "--image", image, "--json", *extra, timeout=600)
    assert p.returncode == expect, f"exit {p.returncode}\n{p.stderr[-4000:]}"
    return p


def _verdict(cls_env, s3, p):
    out = json.loads(p.stdout)
    run = out["run_id"]
    v = json.loads(s3.get_object(Bucket=cls_env.serving, Key=f"{cls_env.name}/_reports/{run}/verdict.json")["Body"].read())
    html = s3.get_object(Bucket=cls_env.serving, Key=f"{cls_env.name}/_reports/{run}/index.html")
    assert html["ContentType"].startswith("text/html") and b"FAILED" in html["Body"].read()
    assert v["passed"] is False
    return v, {c["name"]: c for c in v["checks"] if not c["passed"]}


def test_tiny_model_passes_contract_and_serving(cls_env, s3, tmp_path, standin_image, docker_engine):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module())
    p = cls_env.cli("validate", cls_env.name, "--candidate", cand, "--image", standin_image, "--json", timeout=600)
    v = json.loads(p.stdout)
    passed = {c["name"] for c in v["checks"] if c["passed"]}
    assert {"contract: SavedModel signatures", "served: version AVAILABLE", "contract: served metadata over REST",
            "contract: served metadata over gRPC", "parity: REST serving_default vs exporter",
            "parity: gRPC serving_default vs exporter"} <= passed
    assert validation_containers(docker_engine, cand) == []


def test_wrong_signature_name(cls_env, s3, tmp_path, standin_image):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module(), signature="predict", reference=False)
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image))
    assert "signature 'serving_default' is missing (has ['predict'])" in failed["contract: SavedModel signatures"]["detail"]


def test_uint8_input_exported_as_float(cls_env, s3, tmp_path, standin_image):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module(input_dtype="float32"), reference=False)
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image))
    assert "input 'inputs' is float32, the contract for image_tensor requires uint8" in \
        failed["contract: SavedModel signatures"]["detail"]


def test_output_dtype_the_contract_forbids(cls_env, s3, tmp_path, standin_image):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module(probs_dtype="float64"), reference=False)
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image))
    assert "output 'probs' is float64, the contract allows float32" in failed["contract: SavedModel signatures"]["detail"]


def test_model_that_does_not_load(cls_env, s3, tmp_path, standin_image):
    sm = candidates.save(candidates.classifier_module(), str(tmp_path / "sm"))
    cand = _stage(cls_env, s3, tmp_path, sm=candidates.corrupt_variables(sm), reference=False)
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image))
    detail = failed["served: model loads and answers"]["detail"]
    assert "exited" in detail and "Read less bytes than requested" in detail


def test_model_using_an_op_outside_core_tensorflow(cls_env, s3, tmp_path, standin_image):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module(py_op=True))
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image))
    detail = failed["served: model loads and answers"]["detail"]
    assert "Op type not registered 'EagerPyFunc'" in detail


def test_nan_outputs(cls_env, s3, tmp_path, standin_image):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module(nan=True))
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image))
    assert "non-finite values served" in failed["parity: REST serving_default vs exporter"]["detail"]
    assert any(n.startswith("gx:probabilities:expect_column_values_to_not_be_null") for n in failed)


def test_load_that_exceeds_the_deadline(cls_env, s3, tmp_path, standin_image, docker_engine):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module())
    v, failed = _verdict(cls_env, s3, _validate(cls_env, cand, standin_image, "--deadline", "0.5"))
    assert "not AVAILABLE within 0s" in failed["served: version AVAILABLE"]["detail"] or \
        "not AVAILABLE within 1s" in failed["served: version AVAILABLE"]["detail"]
    assert validation_containers(docker_engine, cand) == []


def test_missing_image(cls_env, s3, tmp_path, docker_engine):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module())
    p = _validate(cls_env, cand, "tfs-release/no-such-image:missing", expect=2)
    assert "is not on this Docker engine" in p.stderr


def test_engine_not_reachable(cls_env, s3, tmp_path):
    cand = _stage(cls_env, s3, tmp_path, candidates.classifier_module())
    p = cls_env.cli("validate", cls_env.name, "--candidate", cand, "--image", "any:tag",
                    env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}, timeout=300)
    assert p.returncode == 2 and "Docker engine is not reachable" in p.stderr
