"""The lifecycle of a model's versions in production, as pure rules (no I/O; unit-tested).

    published ──confirm──► confirmed ──(canary) promote──► promoted
        │  │                  │  └──(canary) abort──► aborted
        │  │                  └──rollback past it──► rolled back
        │  └──confirm: production reported a failure──► failed ──rollback──► rolled back
        └──confirm: production could not be observed──► unknown ──confirm again──► confirmed | failed
                                                            └──(on_unknown_rollout: rollback / a person)──► rolled back
    retired: retention / clean-orphans (a tombstone; registry/versions.py), from any state

A version's state is the ``state`` of its record ``_rollouts/<N>.json`` ("published" when there is
none; "canary" / "stable" are labels, ``_labels.json``, not states). Who triggers what:
``confirm`` (release DAG's confirm_rollout, ``tfs-release confirm``), ``rollback`` (rollback DAG,
``tfs-release rollback``, or confirm after a failure), ``promote`` / ``abort`` (canary DAG,
``tfs-release promote|abort``, or confirm aborting a failed canary).
"""
from __future__ import annotations

PUBLISHED, CONFIRMED, FAILED, UNKNOWN = "published", "confirmed", "failed", "unknown"
ROLLED_BACK, PROMOTED, ABORTED, RETIRED = "rolled back", "promoted", "aborted", "retired"
STATES = (PUBLISHED, CONFIRMED, FAILED, UNKNOWN, ROLLED_BACK, PROMOTED, ABORTED, RETIRED)

# from-state -> states a writer may move it to. Re-writing the same state is allowed where the
# transition is a re-observation (confirm run again) and is a no-op elsewhere.
TRANSITIONS: dict[str, set[str]] = {
    PUBLISHED: {CONFIRMED, FAILED, UNKNOWN, ROLLED_BACK, ABORTED},
    UNKNOWN: {CONFIRMED, FAILED, UNKNOWN, ROLLED_BACK, ABORTED},
    CONFIRMED: {PROMOTED, ABORTED, ROLLED_BACK},
    FAILED: {ROLLED_BACK, ABORTED},
    PROMOTED: {ROLLED_BACK},
    ROLLED_BACK: set(),
    ABORTED: set(),
    RETIRED: set(),
}
GOOD = {CONFIRMED, PROMOTED}        # production served it and it answered as in validation
BAD = {FAILED, ROLLED_BACK, ABORTED}  # never served again unless a person names it

# old records (before the lifecycle had states) kept only an ``outcome``
_LEGACY = {"confirmed": CONFIRMED, "failed": FAILED, "timed out": FAILED, "rolled back": ROLLED_BACK}


def state_of(record: dict | None) -> str:
    """The lifecycle state a rollout record says (``published`` when there is none)."""
    if not record:
        return PUBLISHED
    return record.get("state") or _LEGACY.get(record.get("outcome"), UNKNOWN)


def can_move(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, set())


def refusal(n: int, current: str, new: str) -> str:
    """Why version N cannot move from ``current`` to ``new``, said for the person who asked."""
    allowed = sorted(TRANSITIONS.get(current, set()))
    return (f"version {n} is {current}; it cannot become {new} "
            f"({'allowed next: ' + ', '.join(allowed) if allowed else 'that state is final'})")


# --- what a confirm observed -------------------------------------------------------------------
# An endpoint row: {state: AVAILABLE | LOADING | START | UNLOADING | END | NOT_FOUND | UNREACHABLE |
# ERROR, error, others: [versions the endpoint reports AVAILABLE], http: status code or None}
_OBSERVED = {"AVAILABLE", "LOADING", "START", "UNLOADING", "END", "NOT_FOUND"}


def observed(row: dict) -> bool:
    """True when the endpoint answered as TF Serving (a model status), whatever it said."""
    return row.get("state") in _OBSERVED


def classify(rows: list[dict], *, waited_out: bool, version: int | str = "N") -> tuple[str, str | None]:
    """(served | failed | unknown | waiting, why) from the last status of every endpoint.

    failed: an endpoint reported N's load failed (END with an error); or the deadline passed while
    every endpoint answered and serves another version of the model but never N. unknown: the
    deadline passed and an endpoint could not be observed (refused, timeout, 401/403, TLS) or
    serves no version of the model at all (its sidecar may not run): not a failure of N."""
    for r in rows:
        if r.get("state") == "END" and r.get("error"):
            return FAILED, f"{r['endpoint']}: version {version} END: TF Serving failed to load it ({r['error']})"
    if rows and all(r.get("state") == "AVAILABLE" for r in rows):
        return "served", None
    if not waited_out:
        return "waiting", None
    blind = [r for r in rows if not observed(r)]
    if blind:
        return UNKNOWN, "; ".join(f"{r['endpoint']}: could not be observed ({r.get('error') or r.get('state')}), "
                                  f"so whether it serves version {version} is unknown" for r in blind)
    idle = [r for r in rows if r.get("state") != "AVAILABLE" and not r.get("others")]
    if idle:
        return UNKNOWN, "; ".join(f"{r['endpoint']}: version {version} {r.get('state')} and no other version of "
                                  "the model served: is its sync sidecar running?" for r in idle)
    return FAILED, "; ".join(f"{r['endpoint']}: version {version} {r['state']} by the deadline (it still serves "
                             f"{r['others']})" for r in rows if r.get("state") != "AVAILABLE")


# --- rollback ----------------------------------------------------------------------------------
def served_version(committed: list[int], labels: dict | None) -> int | None:
    """What production serves: ``stable`` for a canary model, else the highest committed version."""
    if labels is not None:
        return labels.get("stable")
    return max(committed, default=None)


def good_for_stable(state: str, record: dict | None, canary: bool) -> bool:
    """A confirmed good version a rollback may return to: confirmed (for a canary model: confirmed
    as stable, or promoted)."""
    if state not in GOOD:
        return False
    return not canary or state == PROMOTED or (record or {}).get("label") == "stable"


def rollback_target(committed: list[int], states: dict[int, str], records: dict[int, dict], *, below: int,
                    canary: bool = False) -> int | None:
    """The newest committed version below ``below`` that production confirmed good (a rollback
    copy only when it was itself confirmed)."""
    for v in sorted((v for v in committed if v < below), reverse=True):
        if good_for_stable(states.get(v, PUBLISHED), records.get(v), canary):
            return v
    return None


def auto_rollback_decision(n: int, committed: list[int], labels: dict | None) -> str | None:
    """None when a failed rollout of N may be rolled back now; else why not (N is no longer what
    production serves: a newer release, a manual rollback, a promote or abort changed it)."""
    if labels is not None:
        if labels.get("canary") == n or labels.get("stable") == n:
            return None
        return (f"version {n} is neither stable ({labels.get('stable')}) nor the canary "
                f"({labels.get('canary')}) any more: nothing to roll back")
    newer = [v for v in committed if v > n]
    if newer:
        return (f"version {max(newer)} was published after {n} (a newer release or a rollback): production "
                f"no longer serves {n}, and rolling back would revert {max(newer)}")
    return None


# --- the regression gate's baseline -----------------------------------------------------------
def baseline_choice(*, observed_version: int | None, observed_error: str | None, has_endpoints: bool,
                    newest_confirmed: int | None, newest_committed: int | None, labels: dict | None,
                    mode: str = "production") -> tuple[int | None, str]:
    """(version, source) of the gate's baseline, or raises ValueError (fail closed) with the reason.

    mode production (default): what production serves for ``stable`` (canary models) or its highest
    AVAILABLE version, read from the endpoints; without endpoints, the registry's stable label or the
    newest committed version (publishing is the end of such a release). mode newest_confirmed: the
    newest confirmed good version (a canary model's stable label), without asking production."""
    if mode == "newest_confirmed":
        if labels is not None:
            return labels.get("stable"), "registry: the stable label"
        return newest_confirmed, "registry: the newest confirmed version"
    if not has_endpoints:
        if labels is not None:
            return labels.get("stable"), "registry: the stable label (no production endpoints configured)"
        return newest_committed, "registry: the newest committed version (no production endpoints configured)"
    if observed_error:
        raise ValueError(observed_error)
    return observed_version, "production"
