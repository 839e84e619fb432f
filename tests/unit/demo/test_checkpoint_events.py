"""demo/checkpoint_events.py: which Asset a training job's event goes to, and what it says without an API."""
from __future__ import annotations

import pytest

from demo.checkpoint_events import checkpoints_asset_uri, main


@pytest.mark.parametrize("given, asset", [
    ("s3://training/m/checkpoints/ckpt-600", "s3://training/m/checkpoints"),
    ("s3://training/m/checkpoints/ckpt-600/", "s3://training/m/checkpoints"),
    ("s3://training/m/checkpoints/", "s3://training/m/checkpoints"),   # the prefix itself
    ("s3://training/m/checkpoints", "s3://training/m/checkpoints"),
    ("s3://training/m/run-3/ckpt-7", "s3://training/m/run-3"),
])
def test_the_checkpoints_asset_is_the_folder_of_the_checkpoint(given, asset):
    assert checkpoints_asset_uri(given) == asset


def test_without_an_api_or_credentials_it_says_what_to_give(monkeypatch, capsys):
    for k in ("AIRFLOW_API_URL", "AIRFLOW_API_TOKEN", "AIRFLOW_API_USER", "AIRFLOW_API_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    assert main(["s3://training/m/checkpoints/ckpt-1"]) == 2
    assert "give --api and --token" in capsys.readouterr().err


def test_an_api_that_does_not_answer_is_a_one_line_error(capsys):
    assert main(["s3://training/m/checkpoints/ckpt-1", "--api", "http://127.0.0.1:1", "--token", "t"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("checkpoint_events: GET /api/v2/assets?") and "does not answer" in err
