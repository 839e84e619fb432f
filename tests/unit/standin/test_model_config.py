"""The stand-in's model config file (TF Serving's ModelServerConfig text format): parsing, the
checks ServerCore::ReloadConfig makes, version policies and the version-label rules, without a server."""
from __future__ import annotations

import pytest

from standin import config as cfg
from standin.errors import ServingError

TWO_MODELS = """
model_config_list {
  config {
    name: "det"
    base_path: "/models/det"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 5 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 5 }
  }
  config {
    name: "cls"
    base_path: "/models/cls"
    model_platform: "tensorflow"
  }
}
"""


def entry(name="m", base_path="/models/m", platform="tensorflow", extra=""):
    return (f'config {{ name: "{name}" base_path: "{base_path}"'
            + (f' model_platform: "{platform}"' if platform is not None else "") + f" {extra} }}")


def config_text(*entries):
    return "model_config_list { " + " ".join(entries) + " }"


def check(text, old=cfg.EMPTY):
    return cfg.check(cfg.parse_text(text), old)


def refused(text, old=cfg.EMPTY) -> ServingError:
    with pytest.raises(ServingError) as info:
        check(text, old)
    return info.value


# ------------------------------------------------------------------------------------ parsing
def test_two_models_with_policies_and_labels():
    c = check(TWO_MODELS)
    assert c.kind == cfg.MODEL_CONFIG_LIST and c.names == ["det", "cls"]
    det, clf = c.models
    assert det == cfg.ModelConfig("det", "/models/det", "tensorflow", cfg.VersionPolicy("specific", versions=(3, 5)),
                                  (("canary", 5), ("stable", 3)))
    assert det.label_map == {"stable": 3, "canary": 5}
    assert clf.policy == cfg.VersionPolicy("latest", 1) and clf.labels == ()


def test_file_errors_like_parse_proto_text_file(tmp_path):
    missing = tmp_path / "nope.config"
    with pytest.raises(ServingError) as info:
        cfg.read_config_file(str(missing))
    assert info.value.code == 5 and info.value.message == f"{missing}; No such file or directory"
    bad = tmp_path / "bad.config"
    bad.write_text('model_config_list { config { nmae: "x" } }')
    with pytest.raises(ServingError) as info:
        cfg.read_config_file(str(bad))
    assert info.value.code == 3 and info.value.message == f"Invalid protobuf file: '{bad}'"
    assert 'has no field named "nmae"' in info.value.detail and "1:" in info.value.detail
    good = tmp_path / "good.config"
    good.write_text(TWO_MODELS)
    assert check(good.read_text()).names == ["det", "cls"]
    assert cfg.read_config_file(str(good)) == cfg.parse_text(TWO_MODELS)


def test_single_model_config_is_what_model_name_and_base_path_mean():
    c = cfg.check(cfg.single_model_proto("det", "/srv/det"))
    assert c.models == (cfg.ModelConfig("det", "/srv/det", "tensorflow", cfg.VersionPolicy("latest", 1), ()),)


# ---------------------------------------------------------------------------- version policy
@pytest.mark.parametrize("policy,on_disk,aspired,missing", [
    ("", [1, 2, 7], {7}, []),                                          # default: latest 1
    ("model_version_policy { latest { } }", [1, 2, 7], {7}, []),        # num_versions 0 -> 1
    ("model_version_policy { latest { num_versions: 2 } }", [1, 2, 7], {2, 7}, []),
    ("model_version_policy { latest { num_versions: 5 } }", [1, 2], {1, 2}, []),
    ("model_version_policy { all { } }", [1, 2, 7], {1, 2, 7}, []),
    ("model_version_policy { specific { versions: 2 versions: 9 } }", [1, 2, 7], {2}, [9]),
    ("model_version_policy { specific { versions: 9 } }", [1, 2], set(), [9]),
    ("", [], set(), []),
])
def test_version_policies(policy, on_disk, aspired, missing):
    (model,) = check(config_text(entry(extra=policy))).models
    assert model.policy.aspired(on_disk) == (aspired, missing)


# ------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize("text,code,message", [
    (config_text(entry("a"), entry("a")), 3, "Illegal to list model a multiple times in config list"),
    (config_text(entry(base_path="models/m")), 3,
     "Expected model m to have an absolute path or URI; got base_path()=models/m"),
    (config_text(entry(base_path="")), 3, "Expected model m to have an absolute path or URI; got base_path()="),
    (config_text(entry(platform=None)), 3, "Illegal setting neither ModelServerConfig::model_type (deprecated) "
                                           "nor ModelServerConfig::model_platform, model name is m"),
    (config_text(entry(platform="pytorch")), 3, "Model m requests unsupported platform pytorch"),
    (config_text(entry(extra="model_type: TENSORFLOW")), 3,
     "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform, "
     "model name is m"),
    ('custom_model_config { type_url: "x" }', 12, "ModelServer does not yet support custom model config."),
])
def test_refused_configs(text, code, message):
    err = refused(text)
    assert (err.code, err.message) == (code, message)


def test_uris_and_deprecated_model_type_are_accepted():
    c = check(config_text(entry("a", base_path="s3://bucket/a"),
                          entry("b", platform=None, extra="model_type: TENSORFLOW")))
    assert [(m.base_path, m.platform) for m in c.models] == [("s3://bucket/a", "tensorflow"),
                                                             ("/models/m", "tensorflow")]


def test_transitions():
    running = check(TWO_MODELS)
    # list -> list: any change is fine, including removing every model
    assert check(config_text(entry("det", "/models/det")), running).names == ["det"]
    assert check("model_config_list { }", running).models == ()
    # an empty file (no config at all) is refused once a list runs; accepted as the first config
    err = refused("", running)
    assert err.code == 9 and err.message.startswith("Cannot transition to requested config. It is only legal")
    assert check("").kind == cfg.NOT_SET
    assert refused('custom_model_config { type_url: "x" }', running).code == 9


def test_platform_cannot_change():
    running = check(config_text(entry("m")))
    assert refused(config_text(entry("m", platform="other")), running).message == (
        "Illegal to change a model's platform. For model m platform was tensorflow and new platform requested "
        "is other")


# ------------------------------------------------------------------------------------ labels
def states(table):
    return lambda name, version: table.get((name, version))


DET = check(TWO_MODELS).models[0]     # stable -> 3, canary -> 5


def test_labels_need_available_versions():
    both = states({("det", 3): "AVAILABLE", ("det", 5): "AVAILABLE"})
    assert cfg.label_map([DET], both, {}) == {"det": {"stable": 3, "canary": 5}}
    for table in ({("det", 3): "AVAILABLE", ("det", 5): "LOADING"}, {("det", 3): "AVAILABLE"},
                  {("det", 3): "AVAILABLE", ("det", 5): "END"}):
        with pytest.raises(ServingError) as info:
            cfg.label_map([DET], states(table), {})
        assert info.value.code == 9 and info.value.message == (
            "Request to assign label to version 5 of model det, which is not currently available for inference")


def test_allow_unavailable_applies_to_new_labels_only():
    nothing = states({})
    # at startup nothing is loaded: only the flag lets labels in
    with pytest.raises(ServingError):
        cfg.label_map([DET], nothing, {}, allow_unavailable=False)
    assert cfg.label_map([DET], nothing, {}, allow_unavailable=True) == {"det": {"stable": 3, "canary": 5}}
    # a label that keeps its version is fine; one moving to a version not AVAILABLE is refused
    assert cfg.label_map([DET], nothing, {"det": {"stable": 3, "canary": 5}}, True) == \
        {"det": {"stable": 3, "canary": 5}}
    with pytest.raises(ServingError) as info:
        cfg.label_map([DET], nothing, {"det": {"stable": 2}}, allow_unavailable=True)
    assert "version 3 of model det" in info.value.message
    # ... and moving it to an AVAILABLE version is fine
    assert cfg.label_map([DET], states({("det", 3): "AVAILABLE"}), {"det": {"stable": 2}}, True)["det"]["stable"] == 3


def test_config_flags_are_tf_serving_flags():
    from standin import server
    args, unknown = server.build_parser().parse_known_args(
        ["--model_config_file=/m/models.config", "--allow_version_labels_for_unavailable_models"])
    assert unknown == [] and args.model_config_file == "/m/models.config"
    assert args.model_config_file_poll_wait_seconds == 0  # TF Serving: read once
    assert args.allow_version_labels_for_unavailable_models is True
    args, _ = server.build_parser().parse_known_args(["--model_config_file_poll_wait_seconds=1",
                                                      "--allow_version_labels_for_unavailable_models=false"])
    assert args.model_config_file_poll_wait_seconds == 1 and args.allow_version_labels_for_unavailable_models is False
