"""Against SeaweedFS: newest complete checkpoint, incomplete ones skipped with a reason."""
import json

import pytest

from registry.checkpoints import list_checkpoints, newest_complete, resolve
from registry.errors import CheckpointError
from registry.s3 import S3Uri

from .conftest import put_checkpoint, put_state


def loc(model_env):
    return S3Uri(model_env.training, model_env.checkpoints_prefix)


def test_state_file_entry_wins_when_complete(s3, model_env):
    p = model_env.checkpoints_prefix
    for step in (100, 200, 300):
        put_checkpoint(s3, model_env.training, p, step, shards=2)
    put_state(s3, model_env.training, p, "/train/job-7/ckpt-200", ["ckpt-100", "ckpt-200"])
    assert newest_complete(s3, loc(model_env)).name == "ckpt-200"


def test_incomplete_state_entry_falls_back_to_highest_complete(s3, model_env):
    p = model_env.checkpoints_prefix
    put_checkpoint(s3, model_env.training, p, 100, shards=2)
    put_checkpoint(s3, model_env.training, p, 200, shards=2)
    put_checkpoint(s3, model_env.training, p, 300, shards=3, skip_shards={1})   # shard missing
    put_checkpoint(s3, model_env.training, p, 400, shards=1, index=False)       # shards w/o index
    put_state(s3, model_env.training, p, "ckpt-300")
    listing = list_checkpoints(s3, loc(model_env))
    assert listing.newest.name == "ckpt-200" and listing.newest.step == 200
    reasons = {c.name: c.reason for c in listing.checkpoints}
    assert reasons["ckpt-300"] == "missing data shard(s) [1] of 3"
    assert "no .index" in reasons["ckpt-400"]
    assert reasons["ckpt-100"] is None


def test_without_state_file_highest_complete_step_wins_numerically(s3, model_env):
    p = model_env.checkpoints_prefix
    for step in (9, 10, 100):
        put_checkpoint(s3, model_env.training, p, step)
    assert newest_complete(s3, loc(model_env)).step == 100


def test_empty_shard_is_incomplete(s3, model_env):
    p = model_env.checkpoints_prefix
    put_checkpoint(s3, model_env.training, p, 1)
    put_checkpoint(s3, model_env.training, p, 2, size=0)
    listing = list_checkpoints(s3, loc(model_env))
    assert listing.newest.step == 1
    assert "empty data shard" in {c.name: c.reason for c in listing.checkpoints}["ckpt-2"]


def test_explicit_checkpoint_must_be_complete(s3, model_env):
    p = model_env.checkpoints_prefix
    put_checkpoint(s3, model_env.training, p, 1)
    put_checkpoint(s3, model_env.training, p, 2, shards=2, skip_shards={0})
    base = f"s3://{model_env.training}/{p}"
    assert resolve(s3, loc(model_env), base + "ckpt-1")[0].step == 1
    with pytest.raises(CheckpointError, match="incomplete"):
        resolve(s3, loc(model_env), base + "ckpt-2")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve(s3, loc(model_env), base + "ckpt-3")


def test_cli_lists_and_marks_newest(model_env, s3):
    p = model_env.checkpoints_prefix
    put_checkpoint(s3, model_env.training, p, 5)
    put_checkpoint(s3, model_env.training, p, 6, shards=2, skip_shards={1})
    out = json.loads(model_env.cli("checkpoints", model_env.name, "--json", check=0).stdout)
    assert out["newest"]["step"] == 5
    bad = [c for c in out["checkpoints"] if not c["complete"]]
    assert [c["name"] for c in bad] == ["ckpt-6"] and "missing data shard" in bad[0]["reason"]
    # --json before the subcommand works too
    p2 = model_env.cli("--json", "checkpoints", model_env.name, check=0)
    assert json.loads(p2.stdout)["newest"]["step"] == 5


def test_cli_no_checkpoints_exit_2(model_env):
    p = model_env.cli("checkpoints", model_env.name, "--json")
    assert p.returncode == 2
    out = json.loads(p.stdout)
    assert out["newest"] is None and out["checkpoints"] == [] and "no checkpoints under" in out["error"]


def test_only_incomplete_checkpoints_error_names_each_reason(s3, model_env):
    p = model_env.checkpoints_prefix
    put_checkpoint(s3, model_env.training, p, 1, shards=2, skip_shards={0})
    put_checkpoint(s3, model_env.training, p, 2, index=False)
    with pytest.raises(CheckpointError) as e:
        newest_complete(s3, loc(model_env))
    assert "ckpt-1: missing data shard(s) [0] of 2" in str(e.value) and "ckpt-2: no .index" in str(e.value)


def test_explicit_checkpoint_outside_the_models_prefix_is_refused(s3, model_env):
    """Another model's complete checkpoint (same bucket) and one in another bucket: both exist and
    are complete, and both are refused, by resolve (the DAG's newest_checkpoint task) and the CLI."""
    put_checkpoint(s3, model_env.training, model_env.checkpoints_prefix, 1)
    put_checkpoint(s3, model_env.training, "other-model/checkpoints/", 7)
    other_bucket = f"{model_env.training}-x"
    s3.create_bucket(Bucket=other_bucket)
    put_checkpoint(s3, other_bucket, model_env.checkpoints_prefix, 9)
    for uri in (f"s3://{model_env.training}/other-model/checkpoints/ckpt-7",
                f"s3://{other_bucket}/{model_env.checkpoints_prefix}ckpt-9"):
        with pytest.raises(CheckpointError, match="is not inside this model's checkpoints prefix"):
            resolve(s3, loc(model_env), uri)
        p = model_env.cli("release", model_env.name, "--checkpoint", uri, "--json", check=2)
        assert f"checkpoint {uri} is not inside this model's checkpoints prefix " \
               f"s3://{model_env.training}/{model_env.checkpoints_prefix}" in p.stderr, p.stderr
    # inside (a sub-folder too) is still accepted
    put_checkpoint(s3, model_env.training, model_env.checkpoints_prefix + "run-2/", 3)
    base = f"s3://{model_env.training}/{model_env.checkpoints_prefix}"
    assert resolve(s3, loc(model_env), base + "ckpt-1")[0].step == 1
    assert resolve(s3, loc(model_env), base + "run-2/ckpt-3")[0].uri == base + "run-2/ckpt-3"
