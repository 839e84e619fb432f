"""Against SeaweedFS: the checkpoint watcher's polls (registry/checkpoint_watch.py) as training writes
checkpoints: a checkpoint being written never fires, a complete one fires once, two landing between
polls fire once for the newest, a restart with its state or with the checkpoint published fires
nothing, a checkpoint re-written under the same name fires again."""
from __future__ import annotations

from registry.checkpoint_watch import FIRE, RECORD, UNCHANGED, WAIT, Watch
from registry.s3 import S3Uri

from .conftest import make_saved_model, put_checkpoint, put_state


def watch(s3, model_env, reported=None) -> Watch:
    name = model_env.name
    return Watch(s3, S3Uri(model_env.training, f"{name}/checkpoints/"), S3Uri(model_env.serving, f"{name}/"),
                 reported)


def test_a_checkpoint_being_written_never_fires_and_a_complete_one_fires_once(s3, model_env):
    p, b = f"{model_env.name}/checkpoints/", model_env.training
    w = watch(s3, model_env)
    assert w.poll().reason == "no complete checkpoint (the prefix holds no checkpoint)"
    put_checkpoint(s3, b, p, 100, shards=2, skip_shards={0, 1})  # the index first...
    d = w.poll()
    assert d.action == WAIT and d.reason == "no complete checkpoint (ckpt-100: no data shards (.data-XXXXX-of-YYYYY) next to the index)"
    put_checkpoint(s3, b, p, 100, shards=2, skip_shards={1}, index=False)  # ...one shard of two
    d = w.poll()
    assert d.action == WAIT and "ckpt-100: missing data shard(s) [1] of 2" in d.reason
    put_checkpoint(s3, b, p, 100, shards=2, index=False)  # the last shard: complete
    d = w.poll()
    assert d.action == FIRE and d.checkpoint == f"s3://{b}/{p}ckpt-100" and d.step == 100
    assert w.poll().reason == UNCHANGED  # one LIST, nothing new
    put_state(s3, b, p, "ckpt-100")  # the state file changes the listing, not the newest checkpoint
    d = w.poll()
    assert d.action == WAIT and d.reason == "ckpt-100 was already reported"


def test_two_checkpoints_landing_between_polls_fire_once_for_the_newest(s3, model_env):
    p, b = f"{model_env.name}/checkpoints/", model_env.training
    put_checkpoint(s3, b, p, 100)
    put_state(s3, b, p, "ckpt-100")
    w = watch(s3, model_env)
    assert w.poll().action == FIRE
    put_checkpoint(s3, b, p, 200)
    put_checkpoint(s3, b, p, 300)
    put_state(s3, b, p, "ckpt-300", ["ckpt-200", "ckpt-300"])
    d = w.poll()
    assert (d.action, d.step) == (FIRE, 300)
    assert w.poll().action == WAIT
    # the state file names ckpt-400 before its shards are all there: the watcher stays on ckpt-300
    put_checkpoint(s3, b, p, 400, shards=2, skip_shards={1})
    put_state(s3, b, p, "ckpt-400")
    d = w.poll()
    assert d.action == WAIT and d.reason == "ckpt-300 was already reported"


def test_a_restart_reports_nothing_twice(s3, model_env, tmp_path):
    from registry.publish import publish
    from registry.staging import stage
    p, b = f"{model_env.name}/checkpoints/", model_env.training
    put_checkpoint(s3, b, p, 100)
    first = watch(s3, model_env).poll()
    assert first.action == FIRE
    # restarted with its state (the asset state store): nothing
    assert watch(s3, model_env, reported=first.fingerprint).poll().action == WAIT
    # restarted without state while the release runs: the checkpoint is not published yet -> fires again
    # (one more queued run, which the DAG's is_new skips once the first has published)
    assert watch(s3, model_env).poll().action == FIRE
    # released: a watcher without state records it, fires nothing
    from registry.checkpoints import newest_complete
    ck = newest_complete(s3, S3Uri(b, p))
    serving = S3Uri(model_env.serving, f"{model_env.name}/")
    cand = stage(s3, serving, make_saved_model(tmp_path / "sm"),
                 fields={"source_checkpoint": {"uri": ck.uri, "step": ck.step, "files": ck.files}})
    version = publish(s3, serving, model_env.name, cand, allow_unvalidated=True).version
    d = watch(s3, model_env).poll()
    assert (d.action, d.published_as) == (RECORD, version)
    # the same name re-written with other bytes is another checkpoint: it fires
    put_checkpoint(s3, b, p, 100, size=1001)
    d = watch(s3, model_env, reported=first.fingerprint).poll()
    assert d.action == FIRE and d.fingerprint != first.fingerprint
