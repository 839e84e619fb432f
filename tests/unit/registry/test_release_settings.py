"""registry/config.py: release timeouts, the serving pool, keys nothing reads, and a tolerant load
where one invalid model entry does not hide the others (hand-written configs)."""
from __future__ import annotations

import pytest
import yaml

from registry import config as c
from registry.errors import ConfigError

BASE = {"serving": "s3://serving/m/", "checkpoints": "s3://training/m/checkpoints/"}


def load(tmp_path, data, **kw):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return c.load(str(path), **kw)


def test_defaults(tmp_path):
    cfg = load(tmp_path, {"models": {"m": BASE}})
    t = cfg.models["m"].timeouts
    assert (t.export, t.validate, t.publish, t.other, t.run) == (3600, 3600, 1800, 600, 14400)
    assert cfg.serving_pool == c.ServingPool("tfs_release_serving", 4) and cfg.errors == {}


def test_timeouts_and_pool_are_read(tmp_path):
    cfg = load(tmp_path, {"models": {"m": {**BASE, "timeouts": {"validate": 90, "run": 3600}}},
                          "serving_pool": {"name": "gpu_serving", "slots": 2}})
    t = cfg.models["m"].timeouts
    assert (t.validate, t.export, t.run) == (90, 3600, 3600)
    assert cfg.serving_pool == c.ServingPool("gpu_serving", 2)


@pytest.mark.parametrize("raw, message", [
    ({"models": {"m": {**BASE, "timeouts": {"validate": 0}}}}, "models.m.timeouts.validate must be a number of seconds > 0"),
    ({"models": {"m": {**BASE, "timeouts": {"valdate": 60}}}}, "models.m.timeouts has unknown key(s) ['valdate']"),
    ({"models": {"m": {**BASE, "timeouts": 60}}}, "models.m.timeouts must map export, validate"),
    ({"models": {"m": {**BASE, "timeouts": {"run": 600}}}}, "models.m.timeouts.run (600s) is shorter than timeouts.export"),
    ({"models": {"m": {**BASE, "validation_deadline_s": "3m"}}}, "models.m.validation_deadline_s must be"),
    ({"models": {"m": {**BASE, "keep": 3}}}, "models.m.keep is not supported (nothing would read it): retention"),
    ({"models": {"m": {**BASE, "labels": {"1": "cat"}}}}, "models.m.labels is not supported"),
    ({"models": {"m": BASE}, "serving_pool": {"slots": 0}}, "serving_pool.slots must be an integer from 1 to 1000"),
    ({"models": {"m": BASE}, "serving_pool": {"name": "a b"}}, "serving_pool.name must be an Airflow pool name"),
    ({"models": {"m": BASE}, "serving_pool": {"size": 3}}, "serving_pool must be a mapping with name and/or slots"),
    ({"models": {"m": BASE}, "default": {}}, "unknown top-level key(s) ['default']"),
    ({"models": {"m": BASE}, "defaults": {"checkpoint_pol_s": 0}}, "defaults has unknown key(s) ['checkpoint_pol_s']"),
    ({"models": {"m": BASE}, "defaults": {"serving": "s3://s/x/"}}, "defaults.serving would give every model the same"),
    ({"models": {"m": BASE}, "defaults": [1]}, "defaults must be a mapping of model keys"),
    ({"models": {"m": BASE}, "defaults": {"checkpoint_poll_s": -1}}, "models.m.checkpoint_poll_s must be"),
])
def test_invalid_settings_name_the_key(tmp_path, raw, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, raw)
    assert message in str(err.value)


def test_the_keep_message_says_what_to_use_instead(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"models": {"m": {**BASE, "keep": 3}}})
    assert "tfs-release retention MODEL --keep K" in str(err.value) and "--keep K" in str(err.value)


def test_non_strict_load_keeps_the_good_models_and_names_the_bad(tmp_path):
    raw = {"models": {"good": BASE, "bad": {**BASE, "task": "detect"}, "Worse!": BASE}}
    with pytest.raises(ConfigError, match="'Worse!' is not valid"):
        load(tmp_path, raw)  # strict (the CLI): the first bad entry stops (safe_dump sorted the keys)
    cfg = load(tmp_path, raw, strict=False)
    assert sorted(cfg.models) == ["good"]
    assert "models.bad.task is 'detect'" in cfg.errors["bad"]
    assert "model name 'Worse!' is not valid" in cfg.errors["Worse!"]
    assert cfg.model("good").name == "good"
    with pytest.raises(ConfigError, match="models.bad.task is 'detect'"):
        cfg.model("bad")  # asking for a broken model gives its own error


def test_a_broken_file_still_raises_without_strict(tmp_path):
    with pytest.raises(ConfigError, match="top-level 'models:' mapping"):
        load(tmp_path, {"models": ["m"]}, strict=False)
    with pytest.raises(ConfigError, match="serving_pool.slots"):
        load(tmp_path, {"models": {"m": BASE}, "serving_pool": {"slots": -1}}, strict=False)


def test_defaults_apply_to_every_model_unless_it_sets_the_key(tmp_path):
    cfg = load(tmp_path, {"defaults": {"checkpoint_poll_s": 0, "conn_id": "training", "timeouts": {"export": 60}},
                          "models": {"a": BASE, "b": {**BASE, "checkpoint_poll_s": 30, "timeouts": {"validate": 90}},
                                     "c": {**BASE, "trigger": "schedule", "schedule": "@daily"}}})
    a, b, c_ = cfg.model("a"), cfg.model("b"), cfg.model("c")
    assert (a.checkpoint_poll_s, b.checkpoint_poll_s) == (0, 30)
    assert a.extra["conn_id"] == b.extra["conn_id"] == c_.extra["conn_id"] == "training"
    # a block is replaced whole, not merged: b's timeouts are its own (export back at its default)
    assert a.timeouts.export == 60 and b.timeouts.export == 3600 and b.timeouts.validate == 90
    # a scheduled model does not inherit a watcher setting it would be refused for
    assert c_.trigger == "schedule"
