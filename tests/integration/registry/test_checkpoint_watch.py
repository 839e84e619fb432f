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


def test_idle_polls_cost_one_conditional_get_and_the_listing_still_catches_everything(s3, model_env):
    """With a state file, a poll that finds it unchanged (304) lists nothing; the prefix is listed
    when it changes, while a newer checkpoint is still being written, and at the reconciliation (a
    checkpoint re-written without changing the state file). Requests counted on the real SeaweedFS."""
    p, b = f"{model_env.name}/checkpoints/", model_env.training
    calls = []

    def count(event_name, **_):
        calls.append(event_name.rsplit(".", 1)[-1])
    s3.meta.events.register("before-call.s3.*", count)
    now = [0.0]
    try:
        w = Watch(s3, S3Uri(b, p), S3Uri(model_env.serving, f"{model_env.name}/"), reconcile_s=600,
                  clock=lambda: now[0])
        put_checkpoint(s3, b, p, 100)
        put_state(s3, b, p, "ckpt-100")
        assert w.poll().action == FIRE
        calls.clear()
        for _ in range(5):
            now[0] += 5
            assert w.poll().reason == UNCHANGED
        assert calls == ["GetObject"] * 5, calls  # idle: one conditional GET a poll, no LIST
        # the state file names ckpt-200 before its last shard: listed (and not fired) until complete
        put_checkpoint(s3, b, p, 200, shards=2, skip_shards={1})
        put_state(s3, b, p, "ckpt-200")
        now[0] += 5
        assert w.poll().action == WAIT
        calls.clear()
        put_checkpoint(s3, b, p, 200, shards=2, index=False)  # the last shard: the state file is unchanged
        now[0] += 5
        d = fired = w.poll()
        assert (d.action, d.step) == (FIRE, 200) and "ListObjectsV2" in calls
        calls.clear()
        now[0] += 5
        assert w.poll().reason == UNCHANGED and calls == ["GetObject"]
        # ckpt-200 re-written with other bytes and the state file re-written as it was (same ETag): the
        # reconciliation listing finds it
        put_checkpoint(s3, b, p, 200, shards=2, size=1001)
        put_state(s3, b, p, "ckpt-200")
        now[0] += 5
        assert w.poll().reason == UNCHANGED        # not yet: the state file answers 304
        now[0] += 600
        d = w.poll()
        assert (d.action, d.step) == (FIRE, 200) and d.fingerprint != fired.fingerprint, d
    finally:
        s3.meta.events.unregister("before-call.s3.*", count)


def test_without_a_state_file_every_poll_lists(s3, model_env):
    p, b = f"{model_env.name}/checkpoints/", model_env.training
    put_checkpoint(s3, b, p, 100)
    w = watch(s3, model_env)
    assert w.poll().action == FIRE
    put_checkpoint(s3, b, p, 200)   # a trainer that writes no state file: seen at the next poll
    assert (w.poll().step) == 200
