"""validation_batch_size and latency_samples: defaults, and bad values refused on load."""
import pytest

from registry import config
from registry.errors import ConfigError


def parse(**kw):
    return config.parse_model("m", {"serving": "s3://b/m/", **kw})


def test_defaults():
    m = parse()
    assert (m.validation_batch_size, m.latency_samples) == (32, 20)


def test_set_values_are_used():
    m = parse(validation_batch_size=1, latency_samples=50)
    assert (m.validation_batch_size, m.latency_samples) == (1, 50)


@pytest.mark.parametrize("key", ["validation_batch_size", "latency_samples"])
@pytest.mark.parametrize("value", [0, -3, 1001, 2.5, "8", True])
def test_bad_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"models\.m\.{key} must be an integer from 1 to 1000"):
        parse(**{key: value})
