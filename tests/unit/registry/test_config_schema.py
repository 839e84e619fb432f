"""registry/config_schema.py: the configuration's schema (pydantic) is the one source of its keys,
their checks and their reference tables in docs/configuration.md."""
from __future__ import annotations

import os

import pytest

from registry import config, config_schema as schema
from registry.errors import ConfigError
from tests.conftest import ROOT

BLOCKS = (schema.Model, schema.Timeouts, schema.Alerts, schema.Production, schema.Endpoint, schema.Regression,
          schema.ServingPool)


def test_the_configuration_page_holds_the_generated_reference():
    text = open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8").read()
    assert schema.BEGIN in text and schema.END in text
    region = text.split(schema.BEGIN, 1)[1].split(schema.END, 1)[0].strip()
    assert region == schema.reference().strip(), \
        "docs/configuration.md's reference is stale: run `python -m registry.config_schema --write`"


def test_every_key_is_described_and_says_what_a_valid_value_is():
    for block in BLOCKS:
        for key, info in schema.keys(block).items():
            extra = info.json_schema_extra or {}
            assert info.description, f"{block.__name__}.{key} has no description"
            assert schema._block_of(info.annotation) or extra.get("must") or extra.get("tail"), \
                f"{block.__name__}.{key}: no 'must'/'tail': its error would not say what a valid value is"
    sections = {s for s, *_ in schema.SECTIONS}
    for key, info in schema.keys(schema.Model).items():
        assert (info.json_schema_extra or {}).get("section") in sections, f"models.<m>.{key} is in no docs section"


def test_the_loader_knows_exactly_the_schemas_keys():
    assert config.KNOWN_KEYS == set(schema.keys(schema.Model))
    assert config.TIMEOUT_KEYS == ("export", "validate", "publish", "other", "run")  # 'validate' is an alias


@pytest.mark.parametrize("raw,message", [
    ({"tolerance": -1}, "models.m.tolerance must be a number >= 0, got -1"),
    ({"launcher": "kubernetes"}, "models.m.launcher must be docker or process, got 'kubernetes'"),
    ({"tags": "team-a"}, "models.m.tags must be a list of strings, got 'team-a'"),
    ({"class_dtype": "int64"}, "models.m.class_dtype must be int32 or float32, got 'int64'"),
    ({"input_size": [64, 0]}, "models.m.input_size must be [height, width] positive integers, got [64, 0]"),
    ({"production": {"endpoints": [{"rest": "http://a:1"}, {"grpc": "a"}]}},
     "models.m.production.endpoints[1].grpc must be host:port (e.g. tf-serving:8500), got 'a'"),
    ({"timeouts": {"validate": 0}}, "models.m.timeouts.validate must be a number of seconds > 0, got 0"),
    ({"regression": {"max_flip_rate": 1.5}}, "models.m.regression.max_flip_rate must be a number from 0 to 1"),
])
def test_errors_name_the_key_and_say_what_is_valid(raw, message):
    with pytest.raises(ConfigError) as err:
        config.parse_model("m", {"serving": "s3://s/m/", **raw})
    assert str(err.value).startswith(message), str(err.value)


def test_the_schema_exports_a_json_schema_for_editors():
    js = schema.Model.model_json_schema(by_alias=True)
    assert js["required"] == ["serving"] and js["additionalProperties"] is False
    assert "validate" in js["$defs"]["Timeouts"]["properties"]
