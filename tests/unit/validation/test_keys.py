"""The keys this area adds, validated on load: the golden set's max_false_positives and the per-model
metric floors in config/models.yaml."""
import json

import numpy as np
import pytest
from PIL import Image

from exporters import golden
from registry import config
from registry.errors import ConfigError


def det_set(tmp_path, **kw):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.png")
    doc = {"schema": 1, "task": "detection", "classes": {"1": "a"},
           "images": [{"file": "a.png", "boxes": [[0, 0, 4, 4]], "classes": [1]},
                      {"file": "b.png", "boxes": [], "classes": [], "max_false_positives": 2}], **kw}
    (tmp_path / "golden.json").write_text(json.dumps(doc))
    return str(tmp_path) + "/"


def test_max_false_positives_default_and_override(tmp_path):
    gs = golden.load(det_set(tmp_path))
    assert [g.expect["max_false_positives"] for g in gs.images] == [0, 2]
    gs = golden.load(det_set(tmp_path, defaults={"max_false_positives": 1}))
    assert [g.expect["max_false_positives"] for g in gs.images] == [1, 2]


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_max_false_positives_must_be_a_count(tmp_path, bad):
    with pytest.raises(golden.GoldenError, match=r"a.png: max_false_positives must be an integer >= 0"):
        golden.load(det_set(tmp_path, defaults={"max_false_positives": bad}))


def parse(task, **kw):
    return config.parse_model("m", {"serving": "s3://serving/m/", "task": task, **kw})


@pytest.mark.parametrize("task,key", [("detection", "min_map"), ("detection", "min_ap50"),
                                      ("classification", "min_accuracy"), ("segmentation", "min_miou_set")])
def test_floors_are_read(task, key):
    assert parse(task, **{key: 0.5}).extra[key] == 0.5
    assert parse(task, **{key: 1}).extra[key] == 1.0
    assert key not in parse(task).extra


@pytest.mark.parametrize("value", [1.2, -0.1, "0.5", True, [0.5]])
def test_floor_must_be_a_fraction(value):
    with pytest.raises(ConfigError, match=r"models.m.min_map must be a number from 0 to 1"):
        parse("detection", min_map=value)


def test_floor_of_another_task_is_rejected():
    with pytest.raises(ConfigError, match=r"min_accuracy is a classification metric floor but the model's task "
                                          r"is detection: remove it \(floors for detection: min_map, min_ap50\)"):
        parse("detection", min_accuracy=0.9)
    with pytest.raises(ConfigError, match="min_miou_set is a segmentation metric floor"):
        parse("classification", min_miou_set=0.5)
