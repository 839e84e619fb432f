"""Model Garden experiment params for an export: experiment + config override, checked against
the ``params.yaml`` training wrote (when it wrote one). A mismatch is an error, not a guess."""
from __future__ import annotations

import hashlib
import json
import os

import yaml

from registry.errors import ConfigError

def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def model_differences(a: dict, b: dict) -> list[str]:
    fa, fb = _flatten(a), _flatten(b)
    diffs = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, "<absent>"), fb.get(k, "<absent>")
        if _norm(va) != _norm(vb):
            diffs.append(f"task.model.{k}: config says {va!r}, training's params.yaml says {vb!r}")
    return diffs


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def experiment_params(experiment: str, override_file: str | None):
    """exp_factory config for ``experiment`` with the YAML override applied (strict)."""
    import official.vision  # noqa: F401  (registers the vision experiments)
    from official.core import exp_factory
    from official.modeling import hyperparams

    try:
        params = exp_factory.get_exp_config(experiment)
    except (LookupError, AssertionError, ValueError):
        registered = getattr(exp_factory, "_REGISTERED_CONFIGS", {})
        known = sorted(k for k in registered if isinstance(k, str) and any(
            w in k for w in ("retinanet", "seg_", "resnet", "maskrcnn")))[:30]
        raise ConfigError(f"unknown Model Garden experiment {experiment!r}: use a registered one, e.g. "
                          f"{', '.join(known)}.") from None
    if override_file:
        if not os.path.exists(override_file):
            raise ConfigError(f"params_override file {override_file} does not exist: fix the path in "
                              "config/models.yaml.")
        try:
            params = hyperparams.override_params_dict(params, override_file, is_strict=True)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"params_override {override_file} does not fit experiment {experiment!r}: "
                              f"{exc}") from None
    params.override({"task": {"init_checkpoint": ""}}, is_strict=False)
    return params


def resolve(experiment: str | None, override_file: str | None, trained_params_file: str | None):
    """The params to export with, and where they came from.

    - training wrote params.yaml: those params, after checking that ``task.model`` agrees with
      the config's experiment+override (when the config names an experiment);
    - otherwise: the config's experiment + override.
    """
    if not experiment:
        raise ConfigError("the model has no 'experiment' in config/models.yaml: Model Garden needs it "
                          "to rebuild the network (e.g. retinanet_resnetfpn_coco).")
    configured = experiment_params(experiment, override_file)
    if not trained_params_file:
        configured.validate()
        return configured, "config"
    from official.modeling import hyperparams

    trained = experiment_params(experiment, None)
    try:
        trained = hyperparams.override_params_dict(trained, trained_params_file, is_strict=True)
    except yaml.YAMLError as exc:
        raise ConfigError(f"training's params.yaml is not valid YAML: {str(exc)[:300]}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"training's params.yaml does not fit experiment {experiment!r} ({exc}): the "
                          "checkpoint was trained with another experiment. Fix 'experiment' in the "
                          "config.") from None
    if override_file:
        diffs = model_differences(configured.task.model.as_dict(), trained.task.model.as_dict())
        if diffs:
            raise ConfigError("training's params.yaml contradicts config/models.yaml for the model "
                              f"architecture ({len(diffs)} difference(s)): " + "; ".join(diffs[:6]) +
                              ". Make params_override match what was trained, or retrain.")
    trained.override({"task": {"init_checkpoint": ""}}, is_strict=False)
    trained.validate()
    return trained, "params.yaml"


def digest(params) -> str:
    """sha256 of the canonical JSON of the params: equal params, equal digest."""
    canon = json.dumps(params.as_dict(), sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def apply_output_options(params, *, normalized_boxes: bool, class_dtype: str) -> None:
    """Detection output options from config/models.yaml onto Model Garden's export_config:
    ``output_normalized_coordinates`` (boxes in [0, 1] instead of pixels) and ``class_dtype``
    (int32, or float32 for clients written against the TF Object Detection API)."""
    if class_dtype not in ("int32", "float32"):
        raise ConfigError(f"class_dtype must be int32 or float32, got {class_dtype!r}")
    export_config = getattr(params.task, "export_config", None)
    if export_config is None or not hasattr(export_config, "output_normalized_coordinates"):
        if normalized_boxes or class_dtype != "int32":
            raise ConfigError("output_normalized_coordinates / class_dtype apply to detection models only")
        return
    params.override({"task": {"export_config": {
        "output_normalized_coordinates": normalized_boxes,
        "cast_detection_classes_to_float": class_dtype == "float32"}}}, is_strict=True)
