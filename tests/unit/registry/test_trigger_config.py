"""registry/config.py: ``trigger`` (checkpoint-event | schedule) and ``checkpoint_poll_s``."""
from __future__ import annotations

import pytest
import yaml

from registry import config as c
from registry.errors import ConfigError

BASE = {"serving": "s3://serving/m/", "checkpoints": "s3://training/m/checkpoints/"}


def model(tmp_path, **raw) -> c.ModelConfig:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {**BASE, **raw}}}))
    return c.load(str(path)).models["m"]


def test_default_is_checkpoint_event_with_a_5s_watcher(tmp_path):
    m = model(tmp_path)
    assert (m.trigger, m.checkpoint_poll_s, m.schedule) == ("checkpoint-event", 5.0, None)
    assert "trigger" not in m.extra and "checkpoint_poll_s" not in m.extra


@pytest.mark.parametrize("raw, want", [
    ({"schedule": "@daily"}, ("checkpoint-event", 5.0, "@daily")),                 # safety net beside events
    ({"checkpoint_poll_s": 0}, ("checkpoint-event", 0.0, None)),                     # REST events only
    ({"checkpoint_poll_s": 5, "schedule": "*/30 * * * *"}, ("checkpoint-event", 5.0, "*/30 * * * *")),
    ({"trigger": "schedule", "schedule": "@hourly"}, ("schedule", 5.0, "@hourly")),  # as before
])
def test_trigger_settings_are_read(tmp_path, raw, want):
    m = model(tmp_path, **raw)
    assert (m.trigger, m.checkpoint_poll_s, m.schedule) == want


@pytest.mark.parametrize("raw, message", [
    ({"trigger": "cron"}, "models.m.trigger must be checkpoint-event (a release starts when a new complete checkpoint"),
    ({"trigger": ["schedule", "checkpoint-event"]}, "models.m.trigger must be checkpoint-event"),
    ({"trigger": "schedule"}, "models.m.trigger is schedule but the model has no 'schedule': add one"),
    ({"trigger": "schedule", "schedule": "@daily", "checkpoint_poll_s": 10},
     "models.m.checkpoint_poll_s is set but trigger is schedule: nothing watches the checkpoints"),
    ({"checkpoint_poll_s": 0.5}, "models.m.checkpoint_poll_s must be a number of seconds from 1 to 86400"),
    ({"checkpoint_poll_s": "30s"}, "models.m.checkpoint_poll_s must be a number of seconds"),
    ({"checkpoint_poll_s": True}, "models.m.checkpoint_poll_s must be a number of seconds"),
    ({"checkpoint_poll_s": -1}, "models.m.checkpoint_poll_s must be a number of seconds"),
    ({"schedule": "@once"}, "models.m.schedule '@once' cannot be a safety net beside trigger: checkpoint-event"),
])
def test_bad_trigger_settings_name_the_key(tmp_path, raw, message):
    with pytest.raises(ConfigError) as err:
        model(tmp_path, **raw)
    assert message in str(err.value), str(err.value)


def test_a_bad_trigger_breaks_only_its_own_model(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"good": {**BASE, "serving": "s3://serving/good/"},
                                               "bad": {**BASE, "serving": "s3://serving/bad/", "trigger": "x"}}}))
    cfg = c.load(str(path), strict=False)
    assert list(cfg.models) == ["good"] and "models.bad.trigger" in cfg.errors["bad"]
