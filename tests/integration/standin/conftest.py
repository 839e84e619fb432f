"""Fixtures for the TF-Serving stand-in tests: tiny real SavedModels (built once per session) and
their in-process answers (``tf.saved_model.load``), the reference the served answers must match."""
from __future__ import annotations

import numpy as np
import pytest

from .support import save_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{'v1': path, 'v2': path}: the same model with scale 1.0 and 2.0 (answers differ)."""
    root = tmp_path_factory.mktemp("standin-src")
    return {"v1": save_model(str(root / "v1"), 1.0), "v2": save_model(str(root / "v2"), 2.0)}


@pytest.fixture(scope="session")
def images():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def reference(tiny_models):
    """reference(version_key, signature, **inputs) -> {output: ndarray} from tf.saved_model.load."""
    import tensorflow as tf
    loaded = {}

    def answer(key, signature, **inputs):
        if key not in loaded:
            loaded[key] = tf.saved_model.load(tiny_models[key])
        fn = loaded[key].signatures[signature]
        return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    return answer
