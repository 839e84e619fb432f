"""production/lifecycle.py against the real SeaweedFS: each transition is one conditional write
(two writers never both win), promote needs a confirmed canary, an abort racing a confirm wins
cleanly, rollback goes to the newest confirmed version and never reverts a newer release, running
it again changes nothing, retention keeps what production serves or returns to."""
from __future__ import annotations

import threading
import uuid

import pytest

from production import lifecycle, rules
from production.lifecycle import LifecycleConflict
from registry.config import ModelConfig
from registry.errors import BadInput
from registry.publish import publish
from registry.s3 import S3Uri
from registry.staging import stage
from tests.integration.registry.conftest import make_saved_model


@pytest.fixture
def model(s3, tmp_path):
    def make(rollout="all"):
        bucket = f"lifecycle-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        return ModelConfig(name="m", serving=S3Uri(bucket, "m/"), task="classification",
                           extra={"rollout": rollout})
    return make


def _publish(s3, m, tmp_path, n_files=1) -> int:
    tag = uuid.uuid4().hex[:6]
    d = make_saved_model(tmp_path / f"sm-{tag}", files=n_files, seed=hash(tag) % 1000)
    cand = stage(s3, m.serving, d, run_id=f"run-{tag}")
    v = publish(s3, m.serving, m.name, cand, allow_unvalidated=True).version
    lifecycle.on_publish(s3, m, v)
    return v


def _confirm(s3, m, v, label=None):
    return lifecycle.transition(s3, m.serving, v, rules.CONFIRMED, {"label": label} if label else {}, by="test")


def test_two_writers_on_one_version_never_both_win(s3, model, tmp_path):
    m = model()
    v = _publish(s3, m, tmp_path)
    outcomes, barrier = {}, threading.Barrier(2)

    def write(state):
        barrier.wait()
        try:
            lifecycle.transition(s3, m.serving, v, state, by=state)
            outcomes[state] = "won"
        except LifecycleConflict as exc:
            outcomes[state] = str(exc)
    threads = [threading.Thread(target=write, args=(s,)) for s in (rules.CONFIRMED, rules.FAILED)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(outcomes.values()).count("won") == 1, outcomes
    rec, _ = lifecycle.read_record(s3, m.serving, v)
    winner = next(s for s, o in outcomes.items() if o == "won")
    loser = next(o for o in outcomes.values() if o != "won")
    assert rec["state"] == winner and f"version {v} is {winner}; it cannot become" in loser, (rec, loser)
    assert [h["to"] for h in rec["history"]] == [winner]


def test_promote_needs_a_confirmed_canary_and_an_abort_beats_a_late_confirm(s3, model, tmp_path):
    m = model("canary")
    v1 = _publish(s3, m, tmp_path)
    _confirm(s3, m, v1, "stable")
    v2 = _publish(s3, m, tmp_path)
    with pytest.raises(BadInput, match=rf"canary version {v2} of m cannot be promoted: its rollout has not been "
                                       "confirmed yet"):
        lifecycle.promote(s3, m, reason="looks fine")
    lifecycle.transition(s3, m.serving, v2, rules.UNKNOWN, by="confirm")
    with pytest.raises(BadInput, match="production could not be observed"):
        lifecycle.promote(s3, m, reason="looks fine")
    # an abort while the confirm still runs: the confirm's write then loses, saying why
    lifecycle.abort(s3, m, reason="error rate up", by="alice")
    with pytest.raises(LifecycleConflict, match=rf"version {v2} is aborted; it cannot become confirmed .*by alice"):
        _confirm(s3, m, v2, "canary")
    lab = lifecycle.labels(s3, m)
    assert (lab["stable"], lab["canary"], lab["aborted"]) == (v1, None, [v2])
    v3 = _publish(s3, m, tmp_path)
    _confirm(s3, m, v3, "canary")
    lab = lifecycle.promote(s3, m, reason="canary healthy", by="bob", expect=v3)
    assert (lab["stable"], lab["canary"]) == (v3, None)
    assert lifecycle.version_states(s3, m) == {v1: rules.CONFIRMED, v2: rules.ABORTED, v3: rules.PROMOTED}


def test_rollback_all_goes_to_the_newest_confirmed_and_is_idempotent(s3, model, tmp_path):
    m = model("all")
    v1, v2 = _publish(s3, m, tmp_path), _publish(s3, m, tmp_path)
    _confirm(s3, m, v1)
    v3 = _publish(s3, m, tmp_path)  # never confirmed (published from the CLI): not a rollback target
    v4 = _publish(s3, m, tmp_path)
    lifecycle.transition(s3, m.serving, v4, rules.FAILED, by="confirm")
    back = lifecycle.rollback(s3, m, after_failure_of=v4, reason="v4 failed", by="confirm")
    assert back["rollback_of"] == v1 and back["copy"] == 5 and back["rolled_back"] == [v2, v3, v4], back
    st = lifecycle.version_states(s3, m)
    assert st == {v1: rules.CONFIRMED, v2: rules.ROLLED_BACK, v3: rules.ROLLED_BACK, v4: rules.ROLLED_BACK,
                  5: rules.PUBLISHED}
    rec, _ = lifecycle.read_record(s3, m.serving, v4)
    assert rec["rollback_version"] == 5 and rec["rollback_to"] == v1
    again = lifecycle.rollback(s3, m, by="person")  # production already back on v1: nothing new
    assert again["already"] and again["served"] == 5
    # a failed rollout of v4 can no longer roll anything back: v5 came after it
    with pytest.raises(LifecycleConflict, match="version 5 was published after 4"):
        lifecycle.rollback(s3, m, after_failure_of=v4)
    # a person may name any published version, confirmed or not
    named = lifecycle.rollback(s3, m, to=v3, reason="I know v3 is fine", by="carol")
    assert named["rollback_of"] == v3 and named["copy"] == 6
    with pytest.raises(BadInput, match=r"not a published version \(published: 1, 2, 3, 4, 5, 6\)"):
        lifecycle.rollback(s3, m, to=9)


def test_rollback_canary_moves_stable_and_retention_keeps_what_production_needs(s3, model, tmp_path):
    m = model("canary")
    v1 = _publish(s3, m, tmp_path)
    _confirm(s3, m, v1, "stable")
    v2 = _publish(s3, m, tmp_path)
    _confirm(s3, m, v2, "canary")
    lifecycle.promote(s3, m, reason="ok")
    v3 = _publish(s3, m, tmp_path)  # the new canary
    back = lifecycle.rollback(s3, m, reason="v2 bad after promote", by="dave")
    assert back["labels"] == {"stable": v1, "canary": None} and back["rolled_back"] == [v2, v3], back
    assert "copy" not in back  # a canary model's rollback moves the label: no copy
    assert lifecycle.rollback(s3, m, by="dave")["already"]
    lab = lifecycle.labels(s3, m)
    assert lab["history"][-1]["action"] == "rollback" and lab["history"][-1]["reason"] == "v2 bad after promote"
    # nothing confirmed below stable: said, nothing changed
    with pytest.raises(BadInput, match="nothing known good to roll back to"):
        lifecycle.rollback(s3, m, to=None, after_failure_of=v1)
    # retention: stable (v1, the oldest) is never retired, whatever keep says
    v4 = _publish(s3, m, tmp_path)
    removed = lifecycle.retention(s3, m, 1)
    assert v1 not in removed and v4 not in removed and set(removed) == {v2, v3}, removed
