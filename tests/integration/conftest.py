"""Shared by the integration tests: real Model Garden exports from checkpoints the demo trainer wrote (cached by demo/checkpoint_cache.py),
uploaded to SeaweedFS the way a training job would."""
from __future__ import annotations

import os
import shutil

import pytest
import yaml

from tests.conftest import ROOT

KINDS = {
    "classification": dict(name="shapes-classifier", experiment="resnet_imagenet", size=[64, 64]),
    "segmentation": dict(name="shapes-segmenter", experiment="seg_deeplabv3_pascal", size=[64, 64]),
    "detection": dict(name="shapes-detector", experiment="retinanet_resnetfpn_coco", size=[128, 128]),
}


@pytest.fixture(scope="session")
def standin_image(docker_engine):
    """The stand-in serving image, built locally (cached by its recipe hash)."""
    from standin.image import ensure_image
    return ensure_image()


def validation_containers(engine, *candidates: str) -> list:
    """The validation containers (any state) of the runs that validated ``candidates`` (their
    ``tfs-release.run`` label is the candidate's run id, its folder's name): a test asserts on its
    own containers only, since end-to-end modules may validate beside it (tests/scheduling.py)."""
    runs = {uri.rstrip("/").rsplit("/", 1)[-1][:60] for uri in candidates}
    assert all(runs), candidates
    return [c for c in engine.containers.list(all=True, ignore_removed=True,
                                              filters={"label": "tfs-release.role=validation"})
            if c.labels.get("tfs-release.run") in runs]


def upload_checkpoints(s3, bucket, prefix, folder, *, skip=()):
    from demo.checkpoint_cache import checkpoint_files
    for f in checkpoint_files(folder):
        if f in skip:
            continue
        s3.upload_file(os.path.join(folder, f), bucket, prefix + f)


@pytest.fixture
def export_env(model_env, s3, trained, tmp_path):
    """Configure one demo model in model_env's buckets; returns a function(kind, **overrides)."""
    def make(kind, *, upload=True, skip=(), **overrides):
        k = KINDS[kind]
        cfg = {"task": kind, "checkpoints": f"s3://{model_env.training}/{k['name']}/checkpoints/",
               "serving": f"s3://{model_env.serving}/{k['name']}/",
               "golden": os.path.join(ROOT, "demo", "golden", k["name"]),
               "experiment": k["experiment"],
               "params_override": os.path.join(ROOT, "config", f"{k['name']}.params.yaml"),
               "input_types": {"serving_default": "image_tensor"}, "input_size": k["size"]}
        cfg.update(overrides)
        with open(model_env.config, "w") as fh:
            yaml.safe_dump({"models": {k["name"]: cfg}}, fh)
        if upload:
            upload_checkpoints(s3, model_env.training, f"{k['name']}/checkpoints/", trained(kind), skip=skip)
        return k["name"]
    return make


def staged_keys(s3, bucket, name):
    from registry.s3 import list_objects
    return [o["Key"] for o in list_objects(s3, bucket, f"{name}/_staging/")]


def copy_golden(tmp_path, name):
    dst = tmp_path / f"golden-{name}"
    shutil.copytree(os.path.join(ROOT, "demo", "golden", name), dst)
    return dst


@pytest.fixture
def cls_env(model_env):
    """model_env configured as a classification model with the demo golden set."""
    name = "shapes-classifier"
    cfg = {"task": "classification", "serving": f"s3://{model_env.serving}/{name}/", "golden": os.path.join(ROOT, "demo", "golden", name),
           "input_types": {"serving_default": "image_tensor"}, "input_size": [64, 64]}
    with open(model_env.config, "w") as fh:
        yaml.safe_dump({"models": {name: cfg}}, fh)
    model_env.name = name
    return model_env
