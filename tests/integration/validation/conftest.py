from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT

GOLDEN_CLS = os.path.join(ROOT, "demo", "golden", "shapes-classifier")


@pytest.fixture
def gate_env(cls_env, tmp_path):
    """cls_env with a golden set the baseline module answers perfectly (labels = its answers)."""
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN_CLS, golden)
    meta = json.loads((golden / "golden.json").read_text())
    from PIL import Image
    for entry in meta["images"]:
        x = np.asarray(Image.open(golden / entry["file"]).convert("RGB"), dtype=np.float64)
        entry["label"] = int(np.argmax(x.mean(axis=(0, 1))))
        entry.pop("label_name", None)
    (golden / "golden.json").write_text(json.dumps(meta))
    cfg = yaml.safe_load(open(cls_env.config))
    cfg["models"][cls_env.name]["golden"] = str(golden)
    with open(cls_env.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    cls_env.golden = str(golden)
    return cls_env
