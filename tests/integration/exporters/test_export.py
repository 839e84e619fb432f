"""Real exports of all three kinds (SeaweedFS over HTTP, Model Garden, TensorFlow), checked in a
fresh process that imports only core TensorFlow; and every kind of bad input: exit 2, nothing staged."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

from tests.integration.conftest import copy_golden, staged_keys, upload_checkpoints

TOLERANCE = 1e-4  # same machine: answers are bit-identical or differ ~1e-7 (oneDNN); boxes in pixels

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind,input_types", [
    ("classification", {"serving_default": "image_tensor"}),
    ("segmentation", {"serving_default": "image_tensor", "serving_bytes": "image_bytes",
                      "serving_example": "tf_example"}),
    ("detection", {"serving_default": "image_tensor", "serving_bytes": "image_bytes"}),
])
def test_export_stages_a_serving_ready_candidate(export_env, model_env, s3, tmp_path, kind, input_types):
    name = export_env(kind, input_types=input_types)
    keep = tmp_path / "keep"
    p = model_env.cli("export", name, "--json", "--keep-dir", str(keep), timeout=900)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["candidate"].startswith(f"s3://{model_env.serving}/{name}/_staging/")
    assert set(out["signatures"]) == set(input_types) and out["params_source"] == "params.yaml"
    n_golden = len(json.load(open(os.path.join(ROOT, "demo", "golden", name, "golden.json")))["images"])
    # warmup: single images for every signature, 32 records at most whatever the golden set's size
    assert out["warmup_records"] == min(n_golden, 32 // len(input_types)) * len(input_types) <= 32
    # candidate.json carries the exporter's manifest fields
    run = out["candidate"].rstrip("/").rsplit("/", 1)[-1]
    cand = json.loads(s3.get_object(Bucket=model_env.serving, Key=f"{name}/_staging/{run}/candidate.json")["Body"].read())
    assert cand["source_checkpoint"]["uri"] == out["checkpoint"] and cand["params_digest"].startswith("sha256:")
    assert cand["exporter"]["tensorflow"] == "2.20.0" and cand["exporter"]["tf_models_official"] == "2.20.0"
    paths = {f["path"] for f in cand["files"]}
    assert {"saved_model.pb", "variables/variables.index",
            "assets.extra/tf_serving_warmup_requests"} <= paths
    sig = cand["signatures"]["serving_default"]
    assert sig["inputs"]["inputs"]["dtype"] == "uint8"
    # a fresh process with core TensorFlow only answers like the exporter did
    check = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "check_saved_model.py"),
                            str(keep / "saved_model"), str(keep / "reference"),
                            os.path.join(ROOT, "demo", "golden", name)],
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert check.returncode == 0, check.stderr[-3000:]
    res = json.loads(check.stdout.strip().splitlines()[-1])
    assert not [m for m in res["non_core_modules"] if m.startswith("official")]
    assert set(k.split("/")[0] for k in res["max_abs_diff"]) == set(input_types)
    assert max(res["max_abs_diff"].values()) <= TOLERANCE, res["max_abs_diff"]


def _bad(model_env, s3, name, *args):
    p = model_env.cli("export", name, *args, timeout=600)
    assert p.returncode == 2, f"expected exit 2, got {p.returncode}\n{p.stderr[-3000:]}"
    assert staged_keys(s3, model_env.serving, name) == []
    return p.stderr


def test_truncated_data_shard(export_env, model_env, s3, trained):
    name = export_env("classification")
    prefix = f"{name}/checkpoints/"
    newest = sorted((o["Key"] for o in s3.list_objects_v2(Bucket=model_env.training, Prefix=prefix)["Contents"]
                     if ".data-" in o["Key"]), key=lambda k: int(k.split("ckpt-")[1].split(".")[0]))[-1]
    body = s3.get_object(Bucket=model_env.training, Key=newest)["Body"].read()
    s3.put_object(Bucket=model_env.training, Key=newest, Body=body[: len(body) // 2])
    err = _bad(model_env, s3, name)
    assert "truncated or corrupt" in err


def test_missing_index(export_env, model_env, s3, trained):
    name = export_env("classification")
    prefix = f"{name}/checkpoints/"
    first = min(int(f[len("ckpt-"):-len(".index")]) for f in os.listdir(trained("classification")) if f.endswith(".index"))
    s3.delete_object(Bucket=model_env.training, Key=f"{prefix}ckpt-{first}.index")
    err = _bad(model_env, s3, name, "--checkpoint", f"s3://{model_env.training}/{prefix}ckpt-{first}")
    assert "incomplete: no .index file" in err


def test_checkpoint_of_another_architecture(export_env, model_env, s3, trained):
    # the segmenter's checkpoints where the classifier's should be (training wrote no params.yaml)
    name = export_env("classification", upload=False)
    upload_checkpoints(s3, model_env.training, f"{name}/checkpoints/", trained("segmentation"), skip=("params.yaml",))
    err = _bad(model_env, s3, name)
    assert "does not restore every model variable" in err or "does not fit experiment" in err


def _classifier_override(tmp_path, num_classes: int) -> str:
    """The demo classifier's params override with another num_classes."""
    override = yaml.safe_load(open(os.path.join(ROOT, "config", "shapes-classifier.params.yaml")))
    override["task"]["model"]["num_classes"] = num_classes
    path = tmp_path / f"classes-{num_classes}.yaml"
    path.write_text(yaml.safe_dump(override))
    return str(path)


def test_checkpoint_with_other_num_classes(export_env, model_env, s3, tmp_path):
    name = export_env("classification", skip=("params.yaml",), params_override=_classifier_override(tmp_path, 5))
    err = _bad(model_env, s3, name)
    assert "does not fit experiment" in err and "shape" in err


def test_params_yaml_contradicting_config(export_env, model_env, s3, tmp_path):
    name = export_env("classification", params_override=_classifier_override(tmp_path, 7))
    err = _bad(model_env, s3, name)
    assert "contradicts config/models.yaml" in err and "task.model.num_classes" in err


def test_unknown_experiment(export_env, model_env, s3):
    name = export_env("classification", experiment="resnet_imagenet_typo")
    assert "unknown Model Garden experiment 'resnet_imagenet_typo'" in _bad(model_env, s3, name)


def test_golden_image_that_is_not_an_image(export_env, model_env, s3, tmp_path):
    golden = copy_golden(tmp_path, "shapes-classifier")
    first = json.load(open(golden / "golden.json"))["images"][0]["file"]
    (golden / first).write_bytes(b"this is not a PNG")
    name = export_env("classification", golden=str(golden))
    assert f"golden image {first}" in _bad(model_env, s3, name)


def test_nan_weights(export_env, model_env, s3, trained, tmp_path):
    name = export_env("classification", upload=False)
    src = trained("classification")
    script = f"""
import sys, tensorflow as tf
sys.path.insert(0, {ROOT!r})
from demo import experiments
params = experiments.load_params("classification")
from official.core import task_factory
model = task_factory.get_task(params.task).build_model()
ckpt = tf.train.Checkpoint(model=model)
ckpt.read(tf.train.latest_checkpoint({src!r})).expect_partial()
v = model.trainable_variables[-1]
v.assign(tf.fill(v.shape, float("nan")))
ckpt.write({str(tmp_path / 'nan' / 'ckpt-1')!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600)
    for f in os.listdir(tmp_path / "nan"):
        if f.startswith("ckpt-1"):
            s3.upload_file(str(tmp_path / "nan" / f), model_env.training, f"{name}/checkpoints/{f}")
    err = _bad(model_env, s3, name)
    assert "non-finite (NaN/Inf) weights" in err
