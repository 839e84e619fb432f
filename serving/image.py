"""Which TF Serving image validates a candidate, and whether it matches the TensorFlow that exported it.

The default image follows the candidate: ``tensorflow/serving:<major>.<minor>.0`` of the TensorFlow
version the exporter recorded (``candidate.json`` -> ``exporter.tensorflow``), so a SavedModel is
served by the release that matches the ops it was built with. An explicit image (``--image``,
config ``serving_image``, ``TFS_RELEASE_SERVING_IMAGE``) wins; ``version_check`` then says in the
verdict whether its tag names an older TF Serving than the exporter's TensorFlow (a failed check:
ops the model needs may be missing, and production would run the same mismatch), a newer one
(passes, named), or cannot be told from the tag (passes, named: e.g. the stand-in's hash tag).
"""
from __future__ import annotations

import re

REPOSITORY = "tensorflow/serving"
FALLBACK_TF = "2.20.0"  # the worker env's TensorFlow: for candidates that recorded none
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def exporter_tf(candidate: dict) -> str | None:
    """The TensorFlow version the candidate was exported with, as recorded in candidate.json."""
    v = (candidate.get("exporter") or {}).get("tensorflow")
    return v if isinstance(v, str) and _VERSION.match(v) else None


def major_minor(version: str | None) -> tuple[int, int] | None:
    m = _VERSION.match(version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def default_image(tf_version: str | None) -> str:
    """``tensorflow/serving:<major>.<minor>.0`` for the exporter's TensorFlow."""
    major, minor = major_minor(tf_version) or major_minor(FALLBACK_TF)
    return f"{REPOSITORY}:{major}.{minor}.0"


def image_tf(image: str) -> tuple[int, int] | None:
    """The TF Serving version an image's tag names (``tensorflow/serving:2.19.0``, ``...:2.19.1-gpu``,
    ``registry.example/tensorflow/serving:2.20.0``); None when the tag names none (``latest``, a hash)."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag, or a registry port: "host:5000/img"
        return None
    return major_minor(tag.split("-", 1)[0])


def version_check(image: str, tf_version: str | None) -> dict:
    """The verdict check: does the serving image's TF Serving match the exporter's TensorFlow?"""
    name = "serving image: TF Serving version matches the exporter's TensorFlow"
    served, built = image_tf(image), major_minor(tf_version)
    numbers = {"image": image, "exporter_tensorflow": tf_version}
    if built is None:
        return {"name": name, "passed": True, "numbers": numbers,
                "detail": f"the candidate records no TensorFlow version; serving with {image}"}
    if served is None:
        return {"name": name, "passed": True, "numbers": numbers,
                "detail": f"the tag of {image} names no TF Serving version: cannot compare with TensorFlow "
                          f"{tf_version} (the exporter's); production should run {default_image(tf_version)}"}
    s, b = ".".join(map(str, served)), ".".join(map(str, built))
    if served < built:
        return {"name": name, "passed": False, "numbers": numbers,
                "detail": f"{image} is TF Serving {s}, older than TensorFlow {tf_version} that exported the "
                          f"candidate: ops it needs may be missing, and production would run the same "
                          f"mismatch; use {default_image(tf_version)} (config serving_image)"}
    if served > built:
        return {"name": name, "passed": True, "numbers": numbers,
                "detail": f"{image} is TF Serving {s}, newer than the exporter's TensorFlow {tf_version} "
                          f"(newer servers load older SavedModels)"}
    return {"name": name, "passed": True, "numbers": numbers,
            "detail": f"{image} is TF Serving {s}, as the exporter's TensorFlow {tf_version}"}
