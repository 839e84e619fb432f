"""production/rules.py: the lifecycle's pure rules (next state, unknown vs failed, rollback target,
the gate's baseline)."""
import pytest

from production import rules
from production.rules import ABORTED, CONFIRMED, FAILED, PROMOTED, PUBLISHED, ROLLED_BACK, UNKNOWN


def test_state_of_records_old_and_new():
    assert rules.state_of(None) == PUBLISHED
    assert rules.state_of({"state": "unknown", "outcome": "unknown"}) == UNKNOWN
    # records written before the lifecycle had states
    assert rules.state_of({"outcome": "timed out"}) == FAILED
    assert rules.state_of({"outcome": "rolled back"}) == ROLLED_BACK
    assert rules.state_of({"outcome": "confirmed"}) == CONFIRMED


@pytest.mark.parametrize("cur,new,ok", [
    (PUBLISHED, CONFIRMED, True), (PUBLISHED, UNKNOWN, True), (UNKNOWN, CONFIRMED, True), (UNKNOWN, FAILED, True),
    (CONFIRMED, PROMOTED, True), (CONFIRMED, ROLLED_BACK, True), (FAILED, ROLLED_BACK, True),
    (PUBLISHED, PROMOTED, False),   # a canary is promoted only once confirmed
    (UNKNOWN, PROMOTED, False), (FAILED, CONFIRMED, False), (CONFIRMED, FAILED, False),
    (ROLLED_BACK, CONFIRMED, False), (ABORTED, PROMOTED, False), (ABORTED, CONFIRMED, False),
])
def test_transitions(cur, new, ok):
    assert rules.can_move(cur, new) is ok
    if not ok:
        assert f"cannot become {new}" in rules.refusal(3, cur, new)


def row(state, error="", others=(), endpoint="http://p:8501"):
    return {"endpoint": endpoint, "state": state, "error": error, "others": list(others)}


def test_unknown_is_not_failed():
    # refused / 401 / TLS: could not observe -> unknown, never failed
    for r in (row("UNREACHABLE", "ConnectionRefusedError"), row("ERROR", "HTTP 401: no token")):
        assert rules.classify([r], waited_out=True)[0] == UNKNOWN
        assert rules.classify([r], waited_out=False)[0] == "waiting"
    # reachable but serving nothing of the model at all: its sidecar may be down -> unknown
    out, why = rules.classify([row("NOT_FOUND")], waited_out=True)
    assert out == UNKNOWN and "sync sidecar" in why
    # reachable, serving another version, N never AVAILABLE by the deadline -> failed
    out, why = rules.classify([row("NOT_FOUND", others=[1])], waited_out=True)
    assert out == FAILED and "version N NOT_FOUND by the deadline (it still serves [1])" in why
    # production reported the load failed -> failed at once, even with another endpoint blind
    out, why = rules.classify([row("END", "Op type not registered 'EagerPyFunc'"),
                               row("UNREACHABLE", endpoint="http://q:8501")], waited_out=False)
    assert out == FAILED and "EagerPyFunc" in why
    # one endpoint blind, the other reports N missing: unknown (not enough seen to fail N)
    assert rules.classify([row("NOT_FOUND", others=[1]), row("UNREACHABLE", endpoint="http://q")],
                          waited_out=True)[0] == UNKNOWN
    assert rules.classify([row("AVAILABLE"), row("AVAILABLE", endpoint="x")], waited_out=False)[0] == "served"


def test_rollback_target_is_the_newest_confirmed_below():
    committed = [1, 2, 3, 4]
    states = {1: CONFIRMED, 2: CONFIRMED, 3: UNKNOWN, 4: FAILED}
    assert rules.rollback_target(committed, states, {}, below=4) == 2
    # never-confirmed versions (published from the CLI, no record) do not count as good
    assert rules.rollback_target(committed, {1: CONFIRMED, 2: PUBLISHED, 3: ROLLED_BACK}, {}, below=4) == 1
    assert rules.rollback_target(committed, {1: FAILED}, {}, below=2) is None
    # canary models: stable material only (confirmed as stable, or promoted); a confirmed canary is not
    recs = {1: {"label": "stable"}, 2: {"label": "canary"}, 3: {"label": "canary"}}
    st = {1: CONFIRMED, 2: CONFIRMED, 3: PROMOTED}
    assert rules.rollback_target([1, 2, 3, 4], st, recs, below=4, canary=True) == 3
    assert rules.rollback_target([1, 2, 3, 4], st, recs, below=3, canary=True) == 1


def test_auto_rollback_never_reverts_a_newer_release():
    assert rules.auto_rollback_decision(3, [1, 2, 3], None) is None
    why = rules.auto_rollback_decision(3, [1, 2, 3, 4], None)
    assert "version 4 was published after 3" in why
    assert rules.auto_rollback_decision(3, [1, 2, 3], {"stable": 2, "canary": 3}) is None
    assert "neither stable" in rules.auto_rollback_decision(3, [1, 2, 3], {"stable": 3 - 1, "canary": None})


def test_baseline_choice():
    kw = dict(newest_confirmed=2, newest_committed=4, labels=None)
    assert rules.baseline_choice(observed_version=3, observed_error=None, has_endpoints=True, **kw) == (3, "production")
    with pytest.raises(ValueError, match="HTTP 401"):  # fails closed
        rules.baseline_choice(observed_version=None, observed_error="HTTP 401", has_endpoints=True, **kw)
    assert rules.baseline_choice(observed_version=None, observed_error="HTTP 401", has_endpoints=True,
                                 mode="newest_confirmed", **kw)[0] == 2
    assert rules.baseline_choice(observed_version=None, observed_error=None, has_endpoints=False, **kw)[0] == 4
    canary = dict(newest_confirmed=None, newest_committed=5, labels={"stable": 3, "canary": 5})
    assert rules.baseline_choice(observed_version=None, observed_error=None, has_endpoints=False, **canary)[0] == 3
    assert rules.baseline_choice(observed_version=None, observed_error="refused", has_endpoints=True,
                                 mode="newest_confirmed", **canary)[0] == 3
