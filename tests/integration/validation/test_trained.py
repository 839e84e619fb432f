"""Trained demo candidates of every kind pass validation through the docker launcher (stand-in
image) and through the process launcher; an under-trained checkpoint of the same training run and a
random-weight candidate fail the golden set (per image and the set-metric floor)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import validation_containers

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.mark.parametrize("kind", ["classification", "segmentation", "detection"])
def test_trained_candidate_passes_docker_and_process(export_env, model_env, kind, standin_image, docker_engine):
    name = export_env(kind)
    cand = json.loads(model_env.cli("export", name, "--json", check=0, timeout=900).stdout)["candidate"]
    for launcher in ("docker", "process"):
        p = model_env.cli("validate", name, "--candidate", cand, "--launcher", launcher, "--image", standin_image,
                          "--json", timeout=900)
        v = json.loads(p.stdout)
        failed = [(c["name"], c["detail"]) for c in v["checks"] if not c["passed"]]
        assert p.returncode == 0 and v["passed"], f"{launcher}: {failed}\n{p.stderr[-2000:]}"
        names = {c["name"] for c in v["checks"]}
        assert any(n.startswith("golden: ") for n in names) and any(n.startswith("gx:") for n in names)
        assert v["latency_ms"]["gRPC serving_default"]["n"] > 0
    assert validation_containers(docker_engine, cand) == []
    # a validated candidate can be published; the manifest records the verdict and report
    out = json.loads(model_env.cli("publish", name, "--candidate", cand, "--json", check=0).stdout)
    vs = json.loads(model_env.cli("versions", name, "--json", check=0).stdout)["versions"]
    assert vs[-1]["version"] == out["version"] and vs[-1]["verdict"] == "passed" and vs[-1]["report"].endswith("index.html")


def test_random_weight_candidate_fails_golden_expectations(export_env, model_env, s3, tmp_path, standin_image):
    name = export_env("classification", upload=False)
    script = f"""
import sys, tensorflow as tf
sys.path.insert(0, {ROOT!r})
from demo import experiments
from official.core import task_factory
params = experiments.load_params("classification")
model = task_factory.get_task(params.task).build_model()
tf.train.Checkpoint(model=model).write({str(tmp_path / 'random' / 'ckpt-1')!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"})
    for f in os.listdir(tmp_path / "random"):
        s3.upload_file(str(tmp_path / "random" / f), model_env.training, f"{name}/checkpoints/{f}")
    cand = json.loads(model_env.cli("export", name, "--json", check=0, timeout=900).stdout)["candidate"]
    p = model_env.cli("validate", name, "--candidate", cand, "--image", standin_image, "--json", timeout=900)
    assert p.returncode == 1
    v = json.loads(p.stdout)
    golden = [c for c in v["checks"] if c["name"].startswith("golden: ")]
    assert golden and sum(not c["passed"] for c in golden) >= len(golden) // 3, golden
    assert all(c["passed"] for c in v["checks"] if c["name"].startswith("parity:"))  # it serves faithfully...
    assert "golden: " in v["reason"]                                                # ...but answers wrongly
    p = model_env.cli("publish", name, "--candidate", cand)
    assert p.returncode == 2 and "failed validation" in p.stderr


def test_undertrained_checkpoint_fails_the_gate(export_env, model_env, trained, standin_image):
    """The classifier's first saved checkpoint (early in training) must not pass: the golden set and
    the config's accuracy floor tell it from the final one (which passes, test above)."""
    name = export_env("classification", min_accuracy=0.95)
    first = min(int(f[len("ckpt-"):-len(".index")]) for f in os.listdir(trained("classification")) if f.endswith(".index"))
    ck = f"s3://{model_env.training}/{name}/checkpoints/ckpt-{first}"
    cand = json.loads(model_env.cli("export", name, "--checkpoint", ck, "--json", check=0, timeout=900).stdout)["candidate"]
    p = model_env.cli("validate", name, "--candidate", cand, "--image", standin_image, "--json", timeout=900)
    v = json.loads(p.stdout)
    assert p.returncode == 1 and not v["passed"]
    floor = next(c for c in v["checks"] if c["name"].startswith("metrics: accuracy"))
    assert not floor["passed"] and v["metrics"]["accuracy"] < 0.95, floor
    assert v["metrics"]["images_failed"] >= 3, v["metrics"]


def test_detection_output_options(export_env, model_env):
    """output_normalized_coordinates and class_dtype float32 reach the export, the contract and the
    golden checks (boxes are compared in pixels whatever the export's unit)."""
    name = export_env("detection", output_normalized_coordinates=True, class_dtype="float32")
    out = json.loads(model_env.cli("export", name, "--json", check=0, timeout=900).stdout)
    outputs = out["signatures"]["serving_default"]["outputs"]
    assert outputs["detection_classes"]["dtype"] == "float32"
    p = model_env.cli("validate", name, "--candidate", out["candidate"], "--launcher", "process", "--json", timeout=900)
    v = json.loads(p.stdout)
    assert p.returncode == 0 and v["passed"], [(c["name"], c["detail"]) for c in v["checks"] if not c["passed"]]
