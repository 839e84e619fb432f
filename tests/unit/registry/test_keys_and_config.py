import os

import pytest

from registry import config
from registry.checkpoints import parse_state_file
from registry.errors import BadInput, ConfigError
from registry.s3 import S3Uri, check_key, local_path_for


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs/key", "a//b", "a/./b", "a\\b", "a\x00b", ".."])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(BadInput) as e:
        check_key(key)
    assert repr(key) in str(e.value)


@pytest.mark.parametrize("key", ["ckpt-1.index", "a/b/c.data-00000-of-00001", "_staging/run-1/"])
def test_plain_keys_pass(key):
    assert check_key(key) == key


def test_local_path_never_escapes(tmp_path):
    assert local_path_for(str(tmp_path), "a/b.txt") == os.path.join(str(tmp_path), "a", "b.txt")
    os.symlink("/etc", tmp_path / "link")
    with pytest.raises(BadInput, match="outside"):
        local_path_for(str(tmp_path), "link/passwd")


@pytest.mark.parametrize("uri,bucket,prefix", [
    ("s3://b/m", "b", "m/"), ("s3://b/m/", "b", "m/"), ("s3://b", "b", ""), ("s3://b/a/b/", "b", "a/b/")])
def test_s3uri_parse(uri, bucket, prefix):
    u = S3Uri.parse(uri)
    assert (u.bucket, u.prefix) == (bucket, prefix)


@pytest.mark.parametrize("uri", ["http://b/x", "s3:///x", "s3://b/../x", "b/x"])
def test_s3uri_rejects(uri):
    with pytest.raises(BadInput):
        S3Uri.parse(uri)


def test_state_file_paths_are_reduced_to_names():
    text = 'model_checkpoint_path: "/train/run/ckpt-30"\nall_model_checkpoint_paths: "/train/run/ckpt-20"\n' \
           'all_model_checkpoint_paths: "ckpt-30"\n'
    assert parse_state_file(text) == ("ckpt-30", ["ckpt-20", "ckpt-30"])


def _write(tmp_path, text):
    p = tmp_path / "models.yaml"
    p.write_text(text)
    return str(p)


def test_config_only_serving_is_required(tmp_path):
    cfg = config.load(_write(tmp_path, "models:\n  m1:\n    serving: s3://serving/m1/\n"))
    m = cfg.model("m1")
    assert m.serving == S3Uri("serving", "m1/") and m.checkpoints is None
    with pytest.raises(ConfigError, match="no checkpoints"):
        m.require("checkpoints")


@pytest.mark.parametrize("text,match", [
    ("models:\n  Bad_Name:\n    serving: s3://s/x/\n", "not valid"),
    ("models:\n  m:\n    task: detection\n", "no 'serving'"),
    ("models:\n  m:\n    serving: s3://s/m/\n    task: regression\n", "task is 'regression'"),
    ("models:\n  m:\n    serving: s3://s/m/\n    input_types: {serving_default: jpeg}\n", "jpeg"),
    ("models:\n  m:\n    serving: s3://s/m/\n    input_size: [0, 3]\n", "input_size"),
    ("models:\n  m:\n    serving: s3://s/m/\n    srving: 1\n", "unknown key"),
    ("models:\n  m:\n    serving: /local/path\n", "s3://"),
    ("models:\n  m:\n    serving: s3://s/m/\n    staging_keep_days: -1\n", "staging_keep_days must be"),
    ("models:\n  m:\n    serving: s3://s/m/\n    staging_keep_days: soon\n", "staging_keep_days must be"),
    ("models: [1, 2]\n", "models:"),
    ("models: {m: {serving: s3://s/m/}\n", "not valid YAML"),
])
def test_config_errors_are_specific(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        config.load(_write(tmp_path, text))


def test_unknown_model_lists_configured(tmp_path):
    cfg = config.load(_write(tmp_path, "models:\n  a:\n    serving: s3://s/a/\n"))
    with pytest.raises(ConfigError, match=r"configured: a"):
        cfg.model("b")


def test_repo_config_loads():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cfg = config.load(os.path.join(root, "config", "models.yaml"))
    assert {"shapes-detector", "shapes-segmenter", "shapes-classifier"} <= set(cfg.models)
    for m in cfg.models.values():
        m.require("task", "checkpoints", "experiment", "input_size")
