"""regression: limits and production: endpoints in config/models.yaml, parsed and refused on load."""
import pytest

from registry import config
from registry.errors import ConfigError


def parse(**kw):
    return config.parse_model("m", {"serving": "s3://b/m/", **kw})


def test_regression_limits_are_kept_as_numbers():
    m = parse(regression={"max_metric_drop": 0.05, "max_flip_rate": 0, "serving_memory_limit_mb": None})
    assert m.extra["regression"] == {"max_metric_drop": 0.05, "max_flip_rate": 0.0, "serving_memory_limit_mb": None}


@pytest.mark.parametrize("value,match", [
    ({"max_flip": 0.1}, r"unknown key\(s\) max_flip; the limits are max_metric_drop"),
    ({"max_flip_rate": 1.5}, r"max_flip_rate must be a number from 0 to 1"),
    ({"max_latency_ratio": 0}, r"max_latency_ratio must be a number > 0"),
    ({"max_metric_drop": -0.1}, r"max_metric_drop must be a number >= 0"),
    ({"max_memory_ratio": "2"}, r"max_memory_ratio must be a number > 0"),
    ([0.02], r"regression must be a mapping of limits"),
])
def test_bad_regression_limits_are_refused(value, match):
    with pytest.raises(ConfigError, match=match):
        parse(regression=value)


def test_production_endpoints():
    m = parse(production={"endpoints": [{"rest": "http://tfs-a:8501/", "grpc": "tfs-a:8500"}, {"rest": "http://b:8501"}]})
    assert m.extra["production"] == {"endpoints": [{"rest": "http://tfs-a:8501", "grpc": "tfs-a:8500"},
                                                   {"rest": "http://b:8501"}], "confirm_deadline_s": 600.0}
    m = parse(production={"endpoints": [{"rest": "https://tfs.example.com/serving"}], "conn_id": "tfs_production"})
    assert m.extra["production"]["conn_id"] == "tfs_production"


@pytest.mark.parametrize("value,match", [
    ({"rest": ["http://a:8501"]}, r"production must be \{endpoints: "),
    ({"endpoints": []}, r"endpoints must be a non-empty list"),
    ({"endpoints": [{"grpc": "a"}]}, r"endpoints\[0\]\.grpc must be host:port"),
    ({"endpoints": [{"rest": "a:8501"}]}, r"production\.endpoints\[0\]\.rest"),
    ({"endpoints": [{"rest": "http://a:8501"}], "confirm_deadline_s": 0}, r"confirm_deadline_s must be"),
    ({"endpoints": [{"rest": "http://a:8501"}], "conn_id": "tfs production"}, r"conn_id must be an Airflow connection id"),
])
def test_bad_production_is_refused(value, match):
    with pytest.raises(ConfigError, match=match):
        parse(production=value)


def test_on_failed_rollout():
    assert parse(on_failed_rollout="alert").extra["on_failed_rollout"] == "alert"
    with pytest.raises(ConfigError, match=r"on_failed_rollout must be rollback .* or alert"):
        parse(on_failed_rollout="retry")


def test_on_unknown_rollout():
    assert parse(on_unknown_rollout="rollback").extra["on_unknown_rollout"] == "rollback"
    assert "on_unknown_rollout" not in parse().extra  # default: alert (production/rollout.py)
    with pytest.raises(ConfigError, match=r"on_unknown_rollout must be alert .* or rollback"):
        parse(on_unknown_rollout="revert")


def test_approval_modes():
    assert parse(approval="required", approval_timeout_s=3600).extra["approval"] == "required"
    with pytest.raises(ConfigError, match=r"approval must be required .* on_regression .* or none"):
        parse(approval="yes")
    with pytest.raises(ConfigError, match=r"approval_timeout_s must be a number of seconds > 0"):
        parse(approval="required", approval_timeout_s=0)



def test_the_default_approval_timeout_fits_in_the_run():
    """Unset: what timeouts.run leaves after publish and the other tasks (at most a day), so the
    approve task times out (and alerts) before the run's dagrun_timeout skips it."""
    m = parse(approval="required")
    assert m.extra["approval_timeout_s"] == m.approval_timeout_s == 14400 - 1800 - 600
    t = m.timeouts
    assert m.approval_timeout_s + t.publish + t.other <= t.run
    m = parse(approval="required", timeouts={"run": 7 * 86400})
    assert m.approval_timeout_s == 86400  # capped at a day
    m = parse(approval="required", timeouts={"run": 7200, "publish": 600, "other": 300})
    assert m.approval_timeout_s == 6300
    # a ModelConfig built in code (no parse) gets the same default
    assert config.ModelConfig(name="m", serving=m.serving).approval_timeout_s == 12000
    with pytest.raises(ConfigError, match=r"models\.m\.timeouts leave no time for approval: run \(3600s\) minus "
                                          r"publish \(3000s\) and other \(600s\) is 0s"):
        parse(approval="required", timeouts={"run": 3600, "publish": 3000, "other": 600})
    # without approval nothing waits: such timeouts are not refused for it
    assert parse(timeouts={"run": 3600, "publish": 3000, "other": 600}).timeouts.run == 3600


def test_an_approval_timeout_longer_than_the_run_allows_is_refused():
    with pytest.raises(ConfigError) as exc:
        parse(approval="required", approval_timeout_s=86400)
    assert str(exc.value) == (
        "models.m.approval_timeout_s (86400s) does not fit in timeouts.run (14400s): after the decision publish "
        "(1800s) and the other tasks (600s) still need time, so the run would time out before the approval does "
        "(approve skipped, not failed with its reason). Lower approval_timeout_s to at most 12000, or raise "
        "timeouts.run to at least 88800.")
    with pytest.raises(ConfigError, match=r"approval_timeout_s \(12001s\) does not fit in timeouts\.run \(14400s\)"):
        parse(approval="on_regression", approval_timeout_s=12001)
    with pytest.raises(ConfigError, match=r"approval_timeout_s \(3600s\) does not fit in timeouts\.run \(3600s\).*"
                                          r"Lower approval_timeout_s to at most 600, or raise timeouts\.run to at "
                                          r"least 6600\."):
        parse(approval="required", approval_timeout_s=3600, timeouts={"run": 3600, "publish": 1800, "other": 1200})


def test_an_approval_timeout_that_fits_is_kept():
    assert parse(approval="required", approval_timeout_s=12000).approval_timeout_s == 12000.0  # exactly fits
    m = parse(approval="required", approval_timeout_s=86400, timeouts={"run": 2 * 86400})
    assert m.extra["approval_timeout_s"] == 86400.0

def test_config_overlay_adds_a_deployments_settings(tmp_path, monkeypatch):
    base = tmp_path / "config" / "models.yaml"
    base.parent.mkdir()
    base.write_text("models:\n  m:\n    serving: s3://b/m/\n    on_failed_rollout: alert\n")
    over = tmp_path / "overlay.yaml"
    over.write_text("models:\n  m:\n    on_failed_rollout: rollback\n"
                    "    production: {endpoints: [{rest: 'http://serving:8501'}]}\n")
    assert "production" not in config.load(str(base)).model("m").extra
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY", str(over))
    m = config.load(str(base)).model("m")
    assert m.extra["on_failed_rollout"] == "rollback"
    assert m.extra["production"]["endpoints"] == [{"rest": "http://serving:8501"}]
    over.write_text("models:\n  other:\n    tags: [x]\n")
    with pytest.raises(ConfigError, match=r"names model 'other', which the models config does not have \(models: m\)"):
        config.load(str(base))
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such file"):
        config.load(str(base))
    # a step container gets the text the Airflow side read (its path need not exist there): it wins
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY_YAML", "models:\n  m:\n    on_failed_rollout: rollback\n")
    assert config.load(str(base)).model("m").extra["on_failed_rollout"] == "rollback"
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY_YAML", "models: [")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        config.load(str(base))


def test_a_step_gets_the_overlay_text_the_airflow_side_reads(tmp_path, monkeypatch):
    from registry.config import overlay_env
    monkeypatch.delenv("TFS_RELEASE_CONFIG_OVERLAY", raising=False)
    assert overlay_env() == {}
    over = tmp_path / "overlay.yaml"
    over.write_text("models:\n  m:\n    approval: required\n")
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY", str(over))
    assert overlay_env() == {"TFS_RELEASE_CONFIG_OVERLAY": str(over),
                             "TFS_RELEASE_CONFIG_OVERLAY_YAML": "models:\n  m:\n    approval: required\n"}
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"gone\.yaml: cannot read it"):
        overlay_env()


def test_the_compose_overlay_is_valid_for_the_shipped_config(monkeypatch):
    import os
    from tests.conftest import ROOT
    monkeypatch.setenv("TFS_RELEASE_CONFIG_OVERLAY", os.path.join(ROOT, "config", "compose.overlay.yaml"))
    m = config.load(os.path.join(ROOT, "config", "models.yaml")).model("shapes-classifier")
    assert m.extra["production"]["endpoints"] == [{"rest": "http://serving:8501", "grpc": "serving:8500"}]
