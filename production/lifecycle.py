"""The one owner of production state: rollout records, canary labels and rollback copies.

Every path goes through here: the release DAG's confirm step and ``tfs-release confirm``
(production/rollout.py), the rollback DAG and ``tfs-release rollback``, the canary DAG and
``tfs-release promote|abort``, and publishing (a canary model's new version becomes the canary).
Nothing else writes ``_rollouts/<N>.json``, ``_labels.json`` or a rollback copy.

Every transition is one conditional write: a record is created with If-None-Match: * and changed
with If-Match on the ETag it was read with (labels likewise, registry/labels.py). The loser of a
race re-reads and decides again (production/rules.py says what may follow what), or fails saying
why. Where a change touches both a version's record and the labels, the record is written first:
it is the lock (an abort racing a confirm or a promote: one of the record writes wins).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging

import botocore.exceptions

from production import rules
from registry import labels as labels_store
from registry import layout
from registry.errors import BadInput, ReleaseError
from registry.s3 import S3Uri, error_code, http_status, translate

log = logging.getLogger(__name__)
MAX_TRIES = 8
HISTORY_KEPT = 20


class LifecycleConflict(ReleaseError):
    """The transition is not allowed from the version's current state (someone else moved it)."""
    exit_code = 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_canary(model) -> bool:
    return (model.extra or {}).get("rollout") == "canary"


# --- rollout records ---------------------------------------------------------------------------
def read_record(client, serving: S3Uri, n: int) -> tuple[dict | None, str | None]:
    """(record, etag) of version N; (None, None) when production has not been asked about it yet."""
    key = layout.rollout_key(serving, n)
    try:
        obj = client.get_object(Bucket=serving.bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None, None
        raise translate(exc, bucket=serving.bucket, key=key) from None
    try:
        return json.loads(obj["Body"].read()), obj["ETag"]
    except ValueError:
        raise ReleaseError(f"s3://{serving.bucket}/{key} is not valid JSON: fix or delete it (what production "
                           f"did with version {n})") from None


def records(client, serving: S3Uri) -> dict[int, dict]:
    """N -> rollout record, for every version production was asked about."""
    from registry.versions import load_rollouts
    return load_rollouts(client, serving)


def states(client, serving: S3Uri, committed: list[int]) -> tuple[dict[int, str], dict[int, dict]]:
    recs = records(client, serving)
    return {n: rules.state_of(recs.get(n)) for n in committed}, recs


def _put(client, serving: S3Uri, n: int, body: dict, etag: str | None) -> bool:
    key = layout.rollout_key(serving, n)
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=serving.bucket, Key=key, Body=json.dumps(body, indent=2, sort_keys=True).encode(),
                          ContentType="application/json", **cond)
        return True
    except botocore.exceptions.ClientError as exc:
        if http_status(exc) in (412, 409) or error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise translate(exc, bucket=serving.bucket, key=key) from None


def transition(client, serving: S3Uri, n: int, new: str, fields: dict | None = None, *, by: str | None = None,
               reason: str | None = None, model: str | None = None, same_ok: bool = False) -> dict:
    """Move version N to ``new`` (one conditional write); returns the record written. Raises
    LifecycleConflict when N's current state does not allow it (re-read after a lost race).
    ``same_ok``: N already in ``new`` is success (the existing record is returned, unchanged)."""
    for _ in range(MAX_TRIES):
        rec, etag = read_record(client, serving, n)
        cur = rules.state_of(rec)
        if cur == new and same_ok:
            return rec
        if not rules.can_move(cur, new):
            raise LifecycleConflict(f"{model or serving}: {rules.refusal(n, cur, new)}"
                                    + (f" (by {rec.get('by')}: {rec.get('reason')})" if rec and rec.get("reason") else ""))
        body = {**(rec or {}), **(fields or {}), "model": model or (rec or {}).get("model"), "version": n,
                "state": new, "outcome": new, "time": _now()}
        if by is not None:
            body["by"] = by
        if reason is not None:
            body["reason"] = reason
        body["history"] = ((rec or {}).get("history") or [])[-(HISTORY_KEPT - 1):] + [
            {"time": body["time"], "from": cur, "to": new, "by": by, "reason": (reason or "")[:300]}]
        if _put(client, serving, n, body, etag):
            log.info("%s version %d: %s -> %s%s", model or serving, n, cur, new, f" ({reason[:200]})" if reason else "")
            body["record"] = f"s3://{serving.bucket}/{layout.rollout_key(serving, n)}"
            return body
        log.info("the record of version %d changed while moving it to %s; re-reading", n, new)
    raise LifecycleConflict(f"the record of version {n} under {serving} kept changing: try again")


def try_transition(client, serving: S3Uri, n: int, new: str, **kw) -> dict | None:
    """``transition``, or None when N's state does not allow it (logged)."""
    try:
        return transition(client, serving, n, new, **kw)
    except LifecycleConflict as exc:
        log.info("%s", exc)
        return None


# --- canary labels -----------------------------------------------------------------------------
def labels(client, model) -> dict | None:
    """The canary label state of a ``rollout: canary`` model (None for other models)."""
    return labels_store.read(client, model.serving)[0] if is_canary(model) else None


def on_publish(client, model, version: int) -> dict | None:
    """A newly published version of a canary model: the first is stable, later ones the canary (a
    canary still waiting is replaced and recorded as superseded). None for other models."""
    if not is_canary(model):
        return None

    def change(s):
        if s["stable"] is None:
            s["stable"] = version
        elif version not in (s["stable"], s["canary"]):
            if s["canary"] is not None:
                s["superseded"] = sorted(set(s.get("superseded") or []) | {s["canary"]})
            s["canary"] = version
        return version
    return labels_store.update(client, model.serving, change, action="publish")


def _the_canary(s: dict, model, expect: int | None, action: str) -> int:
    c = s["canary"]
    if c is None:
        raise BadInput(f"nothing to {action}: {model.name} has no canary (stable is {s['stable']})")
    if expect is not None and c != expect:
        raise BadInput(f"the canary of {model.name} is version {c}, not {expect}: nothing done ({action})")
    return c


def promote(client, model, *, reason: str, by: str | None = None, expect: int | None = None) -> dict:
    """The canary becomes stable. Its rollout must be confirmed (as the canary, on every
    production endpoint); the record moves confirmed -> promoted first, then the labels."""
    _require_canary_model(model, "promote")
    s, _ = labels_store.read(client, model.serving)
    c = _the_canary(s, model, expect, "promote")
    rec, _ = read_record(client, model.serving, c)
    state = rules.state_of(rec)
    if state != rules.CONFIRMED:
        why = {rules.PUBLISHED: "its rollout has not been confirmed yet (the release's confirm_rollout, or "
                                f"`tfs-release confirm {model.name} --version {c}`)",
               rules.UNKNOWN: "production could not be observed when its rollout was checked: confirm it again"
               }.get(state, f"its rollout is {state}")
        raise BadInput(f"the canary version {c} of {model.name} cannot be promoted: {why}")
    transition(client, model.serving, c, rules.PROMOTED, by=by, reason=reason, model=model.name)

    def change(s):
        c2 = _the_canary(s, model, c, "promote")
        s["stable"], s["canary"] = c2, None
        return c2
    try:
        return labels_store.update(client, model.serving, change, action="promote", reason=reason, by=by)
    except Exception:  # the canary changed between the two writes (a newer publish): undo the record
        annotate(client, model.serving, c, {"state": rules.CONFIRMED, "outcome": rules.CONFIRMED})
        raise


def abort(client, model, *, reason: str, by: str | None = None, expect: int | None = None,
          from_failure: bool = False) -> dict:
    """The canary is removed (TF Serving unloads it) and never becomes stable. Allowed whatever its
    rollout's state (stopping a bad canary never waits); a confirm still running for it then finds
    the record aborted and stops."""
    _require_canary_model(model, "abort")
    s, _ = labels_store.read(client, model.serving)
    c = _the_canary(s, model, expect, "abort")
    transition(client, model.serving, c, rules.ABORTED, by=by, reason=reason, model=model.name, same_ok=True)

    def change(s):
        if s["canary"] == c:
            s["canary"] = None
        s["aborted"] = sorted(set(s["aborted"]) | {c})
        return c
    return labels_store.update(client, model.serving, change, action="abort", reason=reason, by=by)


def _require_canary_model(model, action: str) -> None:
    if not is_canary(model):
        raise BadInput(f"{model.name} is not a canary model (config rollout: canary): nothing to {action}")


# --- rollback ----------------------------------------------------------------------------------
def rollback(client, model, *, to: int | None = None, reason: str | None = None, by: str | None = None,
             run_id: str | None = None, after_failure_of: int | None = None, signer=None, trusted=None) -> dict:
    """Production serves a good version again: for ``rollout: all`` a copy of it is published as the
    new highest version (TF Serving serves the highest); for a canary model ``stable`` moves to it
    and the canary is cleared. The target is ``to`` when a person names it (any committed version),
    else the newest version whose rollout was confirmed. Idempotent: a second call that finds
    production already back on the target does nothing. ``after_failure_of``: the automatic
    rollback of N's failed rollout: refused when N is no longer what production serves. ``signer``
    (registry/signing.py): a copy is signed with it, and the target, copy or label, must carry a
    valid signature by it or a ``trusted`` key, checked before anything changes.

    Returns {served, rollback_of, copy (rollout: all) or labels, rolled_back: [versions], already}."""
    from registry.publish import rollback as publish_copy
    from registry.versions import load_manifests
    serving = model.serving
    state = layout.scan(client, serving)
    committed = sorted(set(state.manifests) - set(state.tombstones))
    if not committed:
        raise BadInput(f"{model.name} has no committed version: nothing to roll back")
    lab = labels(client, model)
    served = rules.served_version(committed, lab)
    if after_failure_of is not None:
        why = rules.auto_rollback_decision(after_failure_of, committed, lab)
        if why:
            raise LifecycleConflict(f"{model.name}: not rolled back: {why}")
    st, recs = states(client, serving, committed)
    if to is None and lab is not None and after_failure_of is None and lab.get("canary") is None and any(
            st.get(v) == rules.ROLLED_BACK and (recs.get(v) or {}).get("rollback_to") == served
            for v in committed if v > served):
        to = served  # a rollback already moved stable here: running it again changes nothing
    if to is None:
        below = after_failure_of if after_failure_of is not None else served
        to = rules.rollback_target(committed, st, recs, below=below, canary=lab is not None)
        if to is None:
            raise BadInput(f"{model.name}: no version below {below} was confirmed in production, so there is "
                           f"nothing known good to roll back to (states: "
                           f"{', '.join(f'{v} {s}' for v, s in sorted(st.items())) or 'none'}). Name one with "
                           "--to N (the rollback DAG's version) if you know it is good.")
    elif to not in committed:
        raise BadInput(f"cannot roll back {model.name} to version {to}: it is not a published version "
                       f"(published: {', '.join(map(str, committed))}"
                       f"{'; it was retired' if to in state.tombstones else ''}). `tfs-release versions "
                       f"{model.name}` lists them with their rollout state.")
    why = reason or (f"rollout of version {after_failure_of} failed" if after_failure_of else None)
    from registry.publish import check_signed
    check_signed(client, serving, model.name, to, signer, trusted, action="rolling back to")
    if lab is not None:
        return _rollback_labels(client, model, lab, to, reason=why, by=by, after_failure_of=after_failure_of)
    # rollout: all -> a copy of ``to`` as the new highest version
    manifests = load_manifests(client, serving, state)
    top = max(committed)
    if manifests[top].get("rollback_of") == to or (top == to and after_failure_of is None):
        log.info("%s: production already serves version %s (%s): nothing to do", model.name, top,
                 f"a copy of {to}" if top != to else "the target itself")
        return {"served": top, "rollback_of": to, "copy": top if top != to else None, "rolled_back": [],
                "already": True}
    run = run_id or (f"rollback-of-{after_failure_of}" if after_failure_of else None)
    if run is None:
        from registry.staging import new_run_id
        run = f"rollback-{new_run_id()}"
    # the versions production stops serving are rolled back first: no later rollback returns to them
    rolled = [v for v in committed if v > to
              and try_transition(client, serving, v, rules.ROLLED_BACK, by=by, reason=why, model=model.name,
                                 fields={"rollback_to": to}) is not None]
    pub = publish_copy(client, serving, model.name, to, run_id=run, reason=(why or "")[:1000] or None,
                       signer=signer, source_checked=True)
    for v in rolled:
        try_transition(client, serving, v, rules.ROLLED_BACK, by=by, model=model.name, same_ok=True)
        annotate(client, serving, v, {"rollback_version": pub.version, "rollback_to": to})
    log.info("%s rolled back to version %d: published as version %d (rolled back: %s)", model.name, to,
             pub.version, rolled or "none")
    return {"served": pub.version, "rollback_of": to, "copy": pub.version, "rolled_back": rolled,
            "already": False, "manifest": pub.manifest_uri}


def annotate(client, serving: S3Uri, n: int, fields: dict) -> None:
    """Add facts to N's record without changing its state (conditional; best effort on a race)."""
    for _ in range(MAX_TRIES):
        rec, etag = read_record(client, serving, n)
        if rec is None or all(rec.get(k) == v for k, v in fields.items()):
            return
        if _put(client, serving, n, {**rec, **fields}, etag):
            return


def _rollback_labels(client, model, lab: dict, to: int, *, reason, by, after_failure_of) -> dict:
    serving = model.serving
    if lab.get("stable") == to and lab.get("canary") is None:
        return {"served": to, "rollback_of": to, "labels": lab, "rolled_back": [], "already": True}
    leaving = [v for v in (lab.get("stable"), lab.get("canary")) if v is not None and v != to]
    rolled = [v for v in leaving if try_transition(client, serving, v, rules.ROLLED_BACK, by=by, reason=reason,
                                                   model=model.name, fields={"rollback_to": to}) is not None]

    def change(s):
        if after_failure_of is not None and after_failure_of not in (s["stable"], s["canary"]):
            raise LifecycleConflict(f"{model.name}: not rolled back: version {after_failure_of} is neither stable "
                                    f"({s['stable']}) nor the canary ({s['canary']}) any more")
        if s["canary"] is not None and s["canary"] != to:
            s["aborted"] = sorted(set(s["aborted"]) | {s["canary"]})
        s["stable"], s["canary"] = to, None
        return to
    new = labels_store.update(client, serving, change, action="rollback", reason=reason, by=by)
    log.info("%s rolled back: stable -> %d (rolled back: %s)", model.name, to, rolled or "none")
    return {"served": to, "rollback_of": to, "labels": {"stable": new["stable"], "canary": new["canary"]},
            "rolled_back": rolled, "already": False}


# --- what production should serve -----------------------------------------------------------
def newest_confirmed(client, model) -> int | None:
    """The newest committed version production confirmed good (a canary model: its stable label)."""
    lab = labels(client, model)
    if lab is not None:
        return lab.get("stable")
    state = layout.scan(client, model.serving)
    committed = sorted(set(state.manifests) - set(state.tombstones))
    st, recs = states(client, model.serving, committed)
    return rules.rollback_target(committed, st, recs, below=max(committed, default=0) + 1)


def protected(client, model) -> set[int]:
    """Versions retention must keep: the labelled ones (a canary model's stable and canary) and the
    newest confirmed one (what a rollback returns to)."""
    keep = set(labels_store.pinned(labels(client, model) or {}))
    good = newest_confirmed(client, model)
    return keep | ({good} if good is not None else set())


def retention(client, model, keep: int) -> list[int]:
    """registry retention, never retiring what production serves or would roll back to."""
    from registry.versions import retention as retire
    return retire(client, model.serving, keep, protected=protected(client, model))


def version_states(client, model) -> dict[int, str]:
    """N -> lifecycle state, for every committed version (retired ones are gone from the listing)."""
    state = layout.scan(client, model.serving)
    committed = sorted(set(state.manifests) - set(state.tombstones))
    return states(client, model.serving, committed)[0]
