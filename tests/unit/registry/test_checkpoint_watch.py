"""registry/checkpoint_watch.py: what the checkpoint watcher decides (hand-built checkpoints; the
same decisions against a real SeaweedFS are in tests/integration/registry/test_checkpoint_watch.py)."""
from __future__ import annotations

import pytest

from registry.checkpoint_watch import FIRE, RECORD, WAIT, backoff, decide, fingerprint, listing_digest
from registry.checkpoints import Checkpoint


def ck(step: int, *, etag: str = "e", complete: bool = True, reason: str | None = None, shards: int = 1) -> Checkpoint:
    name = f"ckpt-{step}"
    files = [{"key": f"m/checkpoints/{name}.index", "size": 64, "etag": f"{etag}-i"}]
    files += [{"key": f"m/checkpoints/{name}.data-{i:05d}-of-{shards:05d}", "size": 1000, "etag": f"{etag}-{i}"}
              for i in range(shards)]
    return Checkpoint(name=name, uri=f"s3://training/m/checkpoints/{name}", step=step, complete=complete,
                      reason=reason, files=files)


def never_asked():
    raise AssertionError("published() must not be asked for a checkpoint already reported")


def test_no_complete_checkpoint_waits_and_says_why():
    half = ck(7, complete=False, reason="missing data shard(s) [1] of 2")
    d = decide(None, None, never_asked, [half])
    assert d.action == WAIT and d.reason == "no complete checkpoint (ckpt-7: missing data shard(s) [1] of 2)"
    assert decide(None, None, never_asked).reason == "no complete checkpoint (the prefix holds no checkpoint)"


def test_a_new_unpublished_checkpoint_fires_once():
    c = ck(5)
    d = decide(c, None, lambda: None)
    assert (d.action, d.checkpoint, d.step, d.fingerprint) == (FIRE, c.uri, 5, fingerprint(c))
    assert d.reason == "new complete checkpoint ckpt-5"
    again = decide(c, d.fingerprint, never_asked)  # the same checkpoint on the next poll
    assert again.action == WAIT and again.reason == "ckpt-5 was already reported"


def test_an_already_published_checkpoint_is_recorded_not_fired():
    """e.g. a triggerer restarted without its state, or a release made by hand."""
    d = decide(ck(5), None, lambda: 3)
    assert d.action == RECORD and d.published_as == 3
    assert d.reason == "ckpt-5 is already published as version 3: nothing to release"


def test_a_newer_checkpoint_after_a_reported_one_fires_and_notes_one_still_being_written():
    reported = fingerprint(ck(5))
    d = decide(ck(6), reported, lambda: None, [ck(7, complete=False, reason="no data shards")])
    assert d.action == FIRE and d.reason == "new complete checkpoint ckpt-6 (ckpt-7 still being written)"


def test_fingerprint_sees_rewritten_files_but_not_their_order():
    a, b = ck(5, etag="x"), ck(5, etag="x")
    b.files.reverse()
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(ck(5, etag="y"))      # same name, new content
    assert fingerprint(a) != fingerprint(ck(5, etag="x", shards=2))
    assert decide(ck(5, etag="y"), fingerprint(a), lambda: None).action == FIRE


def test_listing_digest_changes_with_any_key_size_or_etag():
    base = [{"Key": "p/ckpt-1.index", "Size": 10, "ETag": '"a"'}, {"Key": "p/checkpoint", "Size": 30, "ETag": '"b"'}]
    assert listing_digest(base) == listing_digest(list(reversed(base)))
    for change in ({"Size": 11}, {"ETag": '"c"'}, {"Key": "p/ckpt-2.index"}):
        assert listing_digest([{**base[0], **change}, base[1]]) != listing_digest(base), change


@pytest.mark.parametrize("poll_s, errors, wait", [(30, 1, 30), (30, 2, 60), (30, 3, 120), (30, 6, 600),
                                                  (30, 40, 600), (0.2, 1, 1), (5, 4, 40)])
def test_backoff_doubles_from_the_poll_interval_up_to_ten_minutes(poll_s, errors, wait):
    assert backoff(poll_s, errors) == wait
