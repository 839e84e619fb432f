"""Staged candidates are removed after publishing and swept after N days otherwise (real SeaweedFS)."""
from __future__ import annotations

import datetime as _dt
import json

import pytest

from registry.errors import CandidateError
from registry.s3 import S3Uri


def _keys(s3, bucket, prefix):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_remove_deletes_exactly_one_candidate(model_env, s3, staged):
    from registry.staging import remove
    a, b = staged(), staged()
    n = remove(s3, a)
    assert n > 0
    prefix = f"{model_env.name}/_staging/"
    left = _keys(s3, model_env.serving, prefix)
    assert left and all(k.startswith(S3Uri.parse(b).prefix) for k in left)


@pytest.mark.parametrize("uri", ["s3://b/model/", "s3://b/model/1/", "s3://b/model/_staging/",
                                 "s3://b/model/_reports/run-1/"])
def test_remove_refuses_anything_but_a_staged_candidate(s3, uri):
    from registry.staging import remove
    with pytest.raises(CandidateError, match="not a staged candidate"):
        remove(s3, uri)


def test_sweep_removes_only_old_candidates_and_the_cli_reports_them(model_env, s3, staged):
    from registry.staging import sweep
    a, b = staged(), staged()
    serving = S3Uri.parse(f"s3://{model_env.serving}/{model_env.name}/")
    assert sweep(s3, serving, older_than_s=3600) == []  # both are fresh
    later = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=8)
    removed = sweep(s3, serving, older_than_s=7 * 86400, now=later)
    assert sorted(r["uri"] for r in removed) == sorted([a, b])
    assert all(r["age_s"] >= 7 * 86400 and r["objects_removed"] > 0 for r in removed)
    assert _keys(s3, model_env.serving, f"{model_env.name}/_staging/") == []

    c = staged()
    p = model_env.cli("clean-staging", model_env.name, "--older-than-days", "1", "--json", check=0)
    assert json.loads(p.stdout) == {"removed": []}
    p = model_env.cli("clean-staging", model_env.name, "--older-than-days", "0", check=0)
    assert f"removed {c}" in p.stdout
    p = model_env.cli("clean-staging", model_env.name, "--older-than-days", "-1", check=2)
    assert "--older-than-days must be 0 or more" in p.stderr
