"""The regression gate's baseline: the version production serves for ``stable`` (canary models) or
its highest AVAILABLE version (``rollout: all``), asked of the production endpoints over REST or
gRPC. When production cannot be observed the gate fails closed (``BaselineUnknown``) unless the run
says ``baseline: newest_confirmed`` (the newest version whose rollout was confirmed; a canary
model's stable label). A model without production endpoints compares with the registry: its stable
label, or its newest committed version (publishing is the end of such a release).
"""
from __future__ import annotations

import logging

from production import lifecycle, observe, rules
from registry import layout
from registry.errors import ReleaseError

log = logging.getLogger(__name__)
MODES = ("production", "newest_confirmed")


class BaselineUnknown(ReleaseError):
    """Production could not be observed, so the gate has nothing trustworthy to compare with. Exit 1."""
    exit_code = 1


def choose(client, model, *, mode: str = "production", auth=None) -> dict | None:
    """{version, source} of the baseline, or None (no version to compare with: a first release)."""
    if mode not in MODES:
        raise ValueError(f"baseline mode {mode!r}: use one of {', '.join(MODES)}")
    from tfs_api.endpoint_auth import EndpointAuth
    auth = EndpointAuth.from_env() if auth is None else auth
    endpoints = (model.extra.get("production") or {}).get("endpoints") or []
    lab = lifecycle.labels(client, model)
    state = layout.scan(client, model.serving)
    committed = sorted(set(state.manifests) - set(state.tombstones))
    if not committed:  # a first release: production can serve nothing the registry never committed
        log.info("regression gate of %s: no committed version yet, no baseline (first release)", model.name)
        return None
    seen, error = None, None
    if endpoints and mode == "production":
        seen, error = observe.serving(endpoints, model.name, label="stable" if lab is not None else None, auth=auth)
    confirmed = lifecycle.newest_confirmed(client, model) if mode == "newest_confirmed" else None
    try:
        version, source = rules.baseline_choice(
            observed_version=seen, observed_error=error, has_endpoints=bool(endpoints), newest_confirmed=confirmed,
            newest_committed=committed[-1] if committed else None, labels=lab, mode=mode)
    except ValueError as exc:
        raise BaselineUnknown(
            f"the regression gate cannot tell which version of {model.name} production serves ({exc}), so it "
            "fails closed: nothing is validated against a guess. Fix the endpoint or its credentials "
            "(production.endpoints / production.conn_id), or compare with the newest confirmed version: "
            "re-run with baseline=newest_confirmed (DAG param) / --baseline newest_confirmed (CLI).") from None
    if version is None:
        return None
    if source == "production":
        names = ", ".join(observe.name(e) for e in endpoints)
        source = f"production {names}" + (" (stable label)" if lab is not None else "")
    log.info("regression gate baseline of %s: version %s (%s)", model.name, version, source)
    return {"version": version, "source": source}
