from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT

GOLDEN_CLS = os.path.join(ROOT, "demo", "golden", "shapes-classifier")


@pytest.fixture(scope="session")
def standin_image(docker_engine):
    """The stand-in serving image, built locally (cached by its recipe hash)."""
    from standin.image import ensure_image
    return ensure_image()


