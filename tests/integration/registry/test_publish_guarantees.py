"""Against SeaweedFS (and a fault-injecting proxy in front of it): publishing is idempotent, bound
to its verdict, refused on stores without conditional writes, never commits a retired number, and
lineage survives retention."""
import json
import threading

import pytest

from registry import layout
from registry.s3 import S3Uri, make_client
from registry.staging import remove, stage
from registry.versions import clean_orphans, published_from, verify

from .conftest import make_saved_model, put_checkpoint, write_verdict


def serving(model_env):
    return S3Uri(model_env.serving, model_env.serving_prefix)


def publish_json(model_env, cand, *extra, check=0, env=None):
    p = model_env.cli("publish", model_env.name, "--candidate", cand, "--json", *extra, check=check, env=env)
    return json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}, p


# -- idempotent ---------------------------------------------------------------------------------

def test_publishing_a_published_candidate_returns_its_version(model_env, s3, staged):
    cand = staged()
    write_verdict(s3, model_env, cand)
    first, _ = publish_json(model_env, cand)
    again, _ = publish_json(model_env, cand)                     # a retried / re-run publish
    assert first["version"] == again["version"] == 1
    assert not first["already_published"] and again["already_published"]
    state = layout.scan(s3, serving(model_env))
    assert sorted(state.manifests) == [1] and sorted(state.claims) == [1]  # no claim for a 2
    # a cleared publish task after clean_staging removed the candidate: still version 1
    remove(s3, cand)
    gone, _ = publish_json(model_env, cand)
    assert gone["version"] == 1 and gone["already_published"]
    # another candidate is another version
    other = staged(seed=7)
    write_verdict(s3, model_env, other)
    assert publish_json(model_env, other)[0]["version"] == 2


@pytest.mark.parametrize("what,pattern", [("manifest", r"/_manifests/\d+\.json$"), ("claim", r"/_claims/\d+$")])
def test_lost_response_on_conditional_put_is_recognised_as_ours(model_env, s3, staged, s3_proxy, what, pattern):
    """The PUT takes effect, its answer is lost, the client's retry gets 412: the publish reads the
    object back, sees its own bytes and goes on (old code: 'manifest already exists' exit 1, or a
    claim skipped and version 2)."""
    cand = staged()
    write_verdict(s3, model_env, cand)
    rule = s3_proxy.lose_response("PUT", pattern)
    out, p = publish_json(model_env, cand, env={"AWS_ENDPOINT_URL": s3_proxy.endpoint})
    assert rule.hits == 1 and s3_proxy.count("PUT", pattern) == 2, "the PUT was not retried after the lost answer"
    assert out["version"] == 1, p.stderr
    assert f"{what} 1 is ours" in p.stderr
    state = layout.scan(s3, serving(model_env))
    assert sorted(state.manifests) == [1] and sorted(state.claims) == [1]
    assert verify(s3, serving(model_env), deep=True, grace_seconds=0).to_json() == {
        "ok": True, "versions": [1], "problems": [], "orphans": [], "in_progress": [],
        "signatures": {1: {"key_id": None, "signed": False, "verified": False}}}


# -- bound to its verdict -----------------------------------------------------------------------

def test_verdict_must_name_this_model_and_this_candidates_digest(model_env, s3, staged, tmp_path):
    cand = staged()
    cases = [
        ({"model": "shapes-classifier"}, "is for model 'shapes-classifier', not 'shapes-detector'"),
        ({"candidate_digest": "sha256:" + "0" * 64}, "other candidate contents"),
        ({"candidate_digest": None}, "names no candidate digest"),
    ]
    for override, message in cases:
        write_verdict(s3, model_env, cand, **override)
        for extra in ((), ("--unvalidated",)):
            p = model_env.cli("publish", model_env.name, "--candidate", cand, *extra)
            assert p.returncode == 2 and message in p.stderr, p.stderr
    assert layout.scan(s3, serving(model_env)).highest_number == 0
    # the candidate changed after validation (same run id, other files): refused too
    write_verdict(s3, model_env, cand)
    run = cand.rstrip("/").rsplit("/", 1)[-1]
    s3.delete_object(Bucket=model_env.serving, Key=f"{model_env.name}/_staging/{run}/candidate.json")
    stage(s3, serving(model_env), make_saved_model(tmp_path / "other", seed=99), run_id=run)
    p = model_env.cli("publish", model_env.name, "--candidate", cand)
    assert p.returncode == 2 and "other candidate contents" in p.stderr, p.stderr
    # validated again: published
    write_verdict(s3, model_env, cand)
    assert publish_json(model_env, cand)[0]["version"] == 1


def test_failed_verdict_of_this_candidate_is_refused(model_env, s3, staged):
    cand = staged()
    write_verdict(s3, model_env, cand, passed=False, reason="golden expectations missed")
    for extra in ((), ("--unvalidated",)):
        p = model_env.cli("publish", model_env.name, "--candidate", cand, *extra)
        assert p.returncode == 2 and "failed validation (golden expectations missed)" in p.stderr
    assert layout.scan(s3, serving(model_env)).highest_number == 0


# -- conditional writes -------------------------------------------------------------------------

def test_store_that_ignores_if_none_match_is_refused(model_env, s3, staged, s3_proxy):
    cand = staged()
    write_verdict(s3, model_env, cand)
    s3_proxy.drop_if_none_match = True
    p = model_env.cli("publish", model_env.name, "--candidate", cand, env={"AWS_ENDPOINT_URL": s3_proxy.endpoint})
    assert p.returncode == 2, p.stderr
    assert "ignores conditional writes (If-None-Match: *)" in p.stderr and "publishing refuses" in p.stderr
    state = layout.scan(s3, serving(model_env))
    assert state.highest_number == 0 and not state.folders
    assert [o for o in s3.list_objects_v2(Bucket=model_env.serving, Prefix=f"{model_env.name}/_claims/")
            .get("Contents", [])] == []                           # the probe cleaned up after itself
    # the same proxy passing the header through: the store is fine, the publish goes through
    s3_proxy.drop_if_none_match = False
    out, _ = publish_json(model_env, cand, env={"AWS_ENDPOINT_URL": s3_proxy.endpoint})
    assert out["version"] == 1


# -- a retired number never commits -------------------------------------------------------------

def _publish_in_thread(proxy_client, model_env, cand):
    from registry.publish import publish
    box = {}

    def run():
        try:
            box["result"] = publish(proxy_client, serving(model_env), model_env.name, cand)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            box["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_publish_whose_number_was_retired_by_clean_orphans_does_not_commit(model_env, s3, staged, s3_proxy):
    """A slow publish (held at its manifest write) and clean-orphans with a short grace: the
    clean-up retires the number and deletes the files; the publish must not commit."""
    cand = staged()
    write_verdict(s3, model_env, cand)
    hold = s3_proxy.hold("PUT", r"/_manifests/\d+\.json$")
    t, box = _publish_in_thread(make_client(endpoint_url=s3_proxy.endpoint), model_env, cand)
    assert hold.arrived.wait(60), "the publish never reached its manifest write"
    cleaned = clean_orphans(s3, serving(model_env), grace_seconds=0)
    assert [(o["version"], o["kind"]) for o in cleaned] == [(1, "version without manifest")]
    hold.release.set()
    t.join(60)
    state = layout.scan(s3, serving(model_env))
    assert not state.manifests and 1 in state.tombstones, box     # never committed (withdrawn)
    from registry.publish import RetiredError
    assert isinstance(box.get("error"), RetiredError), box
    assert "version 1 was retired while this publish ran" in str(box["error"])
    assert verify(s3, serving(model_env), grace_seconds=0).ok
    # publishing again takes a new number and commits
    out, _ = publish_json(model_env, cand)
    assert out["version"] == 2 and not out["already_published"]


def test_clean_orphans_leaves_a_version_a_slow_publish_committed_first(model_env, s3, staged, s3_proxy):
    """The other order: the publish commits while clean-orphans (which saw an orphan) is about to
    retire it. The committed version keeps its files and gets no tombstone."""
    cand = staged()
    write_verdict(s3, model_env, cand)
    hold_manifest = s3_proxy.hold("PUT", r"/_manifests/\d+\.json$")
    hold_tomb = s3_proxy.hold("PUT", r"/_tombstones/\d+\.json$")
    t, box = _publish_in_thread(make_client(endpoint_url=s3_proxy.endpoint), model_env, cand)
    assert hold_manifest.arrived.wait(60)
    cleaner = {}
    c = threading.Thread(target=lambda: cleaner.update(
        cleaned=clean_orphans(make_client(endpoint_url=s3_proxy.endpoint), serving(model_env), grace_seconds=0)))
    c.start()
    assert hold_tomb.arrived.wait(60), "clean-orphans did not find the orphan"
    hold_manifest.release.set()
    t.join(60)
    assert box.get("result") is not None and box["result"].version == 1, box
    hold_tomb.release.set()
    c.join(60)
    assert cleaner["cleaned"] == []
    state = layout.scan(s3, serving(model_env))
    assert sorted(state.manifests) == [1] and not state.tombstones
    assert verify(s3, serving(model_env), deep=True, grace_seconds=0).ok


# -- lineage survives retention -----------------------------------------------------------------

def test_rolled_back_checkpoint_is_not_released_again_after_retention(model_env, s3, tmp_path):
    """ckpt-1 -> v1, ckpt-2 -> v2; production rolls back to 1 (v3); retention keeps 1 version
    (v2 retired). The newest checkpoint is still ckpt-2: a scheduled run must not release it."""
    ckpts = S3Uri(model_env.training, model_env.checkpoints_prefix)
    from registry.checkpoints import resolve
    for step in (1, 2):
        put_checkpoint(s3, model_env.training, model_env.checkpoints_prefix, step)
        ck, _ = resolve(s3, ckpts, f"s3://{model_env.training}/{model_env.checkpoints_prefix}ckpt-{step}")
        cand = stage(s3, serving(model_env), make_saved_model(tmp_path / f"sm{step}", seed=step),
                     fields={"model": model_env.name,
                             "source_checkpoint": {"uri": ck.uri, "step": step, "files": ck.files}})
        write_verdict(s3, model_env, cand)
        assert publish_json(model_env, cand)[0]["version"] == step
        if step == 2:
            rolled_back_from = cand
    model_env.cli("rollback", model_env.name, "--to", "1", check=0)
    removed = json.loads(model_env.cli("retention", model_env.name, "--keep", "1", "--json", check=0).stdout)
    assert removed["removed"] == [2]
    newest, _ = resolve(s3, ckpts, None)
    assert newest.step == 2
    assert published_from(s3, serving(model_env), newest.uri, newest.files) == 2
    # the command-line release (same "is new" logic as the DAG's newest_checkpoint/is_new) skips it
    out = json.loads(model_env.cli("release", model_env.name, "--json", check=0).stdout)
    assert out["skipped"] and out["version"] == 2
    # and publishing that candidate again is refused, not a new version
    p = model_env.cli("publish", model_env.name, "--candidate", rolled_back_from)
    assert p.returncode == 2 and "published as version 2" in p.stderr and "retired" in p.stderr
    assert sorted(layout.scan(s3, serving(model_env)).manifests) == [1, 3]
