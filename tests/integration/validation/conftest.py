from __future__ import annotations

import os

import pytest
import yaml

from tests.conftest import ROOT

GOLDEN_CLS = os.path.join(ROOT, "demo", "golden", "shapes-classifier")


@pytest.fixture(scope="session")
def standin_image(docker_engine):
    """The stand-in serving image, built locally (cached by its recipe hash)."""
    from standin.image import ensure_image
    return ensure_image()


@pytest.fixture
def cls_env(model_env):
    """model_env configured as a classification model with the demo golden set."""
    name = "shapes-classifier"
    cfg = {"task": "classification", "serving": f"s3://{model_env.serving}/{name}/", "golden": GOLDEN_CLS,
           "input_types": {"serving_default": "image_tensor"}, "input_size": [64, 64]}
    with open(model_env.config, "w") as fh:
        yaml.safe_dump({"models": {name: cfg}}, fh)
    model_env.name = name
    return model_env
