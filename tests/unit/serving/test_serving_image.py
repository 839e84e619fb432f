"""serving/image.py: the default TF Serving image follows the exporter's TensorFlow, and
the verdict's check names a mismatch (hand-written cases)."""
from __future__ import annotations

import pytest

from serving import image as si


@pytest.mark.parametrize("tf, image", [
    ("2.20.0", "tensorflow/serving:2.20.0"),
    ("2.20.1", "tensorflow/serving:2.20.0"),   # patch releases share the serving release
    ("2.21.0rc1", "tensorflow/serving:2.21.0"),
    (None, "tensorflow/serving:2.20.0"),        # nothing recorded: the worker env's TensorFlow
    ("garbage", "tensorflow/serving:2.20.0"),
])
def test_default_image_follows_the_exporters_tensorflow(tf, image):
    assert si.default_image(tf) == image


def test_exporter_tf_reads_candidate_json():
    assert si.exporter_tf({"exporter": {"name": "tfs-release", "tensorflow": "2.20.0"}}) == "2.20.0"
    assert si.exporter_tf({"exporter": {"tensorflow": None}}) is None
    assert si.exporter_tf({}) is None


@pytest.mark.parametrize("image, version", [
    ("tensorflow/serving:2.19.0", (2, 19)),
    ("tensorflow/serving:2.19.1-gpu", (2, 19)),
    ("registry.internal:5000/tensorflow/serving:2.20.0", (2, 20)),
    ("registry.internal:5000/tensorflow/serving", None),
    ("tensorflow/serving:latest", None),
    ("tfs-release/standin:e9bb6df9718e", None),
    ("tensorflow/serving", None),
])
def test_image_tf_from_the_tag(image, version):
    assert si.image_tf(image) == version


def test_an_older_serving_image_fails_the_check_and_names_both_versions():
    c = si.version_check("tensorflow/serving:2.19.0", "2.20.0")
    assert c["passed"] is False
    assert "TF Serving 2.19" in c["detail"] and "TensorFlow 2.20.0" in c["detail"]
    assert "use tensorflow/serving:2.20.0" in c["detail"]


@pytest.mark.parametrize("image, tf, words", [
    ("tensorflow/serving:2.20.0", "2.20.0", "as the exporter's"),
    ("tensorflow/serving:2.21.0", "2.20.0", "newer than"),
    ("tfs-release/standin:e9bb6df9718e", "2.20.0", "names no TF Serving version"),
    ("tensorflow/serving:2.19.0", None, "records no TensorFlow version"),
])
def test_other_cases_pass_and_say_why(image, tf, words):
    c = si.version_check(image, tf)
    assert c["passed"] is True and words in c["detail"], c
