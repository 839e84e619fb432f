"""One production TF Serving for several models: the sync sidecar fills ``<root>/<model>/<N>`` for
each and maintains TF Serving's ``--model_config_file`` listing all of them.

- ``rollout: all`` (default): ``model_version_policy { latest { num_versions: 1 } }``: the highest
  version serves, as with ``--model_base_path``.
- ``rollout: canary``: ``specific { versions: [stable, canary] }`` plus ``version_labels`` from the
  registry's label state (registry/labels.py). TF Serving's label rules decide the order of the
  steps: a label may only move to a version that is already loaded. So a new canary is first loaded
  next to the stable version with the labels unchanged, and the ``canary`` label moves to it only
  once TF Serving reports it AVAILABLE (asked at ``--serving-url``: the ``available`` callable); a promote moves ``stable`` to
  the (loaded) canary and drops the old version in one step; an abort drops the canary. A label
  only ever names a version that is synced and listed, so a TF Serving restarted on any of these
  files starts, given ``--allow_version_labels_for_unavailable_models`` (on a fresh start every
  label is new, which that flag allows; without it TF Serving refuses any label at startup).

The file is written atomically (temp file + rename), only after the versions it names are fully
synced, and only when it changes. Every replica's sidecar derives the same file from the same
registry state (what TF Serving has loaded decides only *when* a label moves, not where to).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

log = logging.getLogger(__name__)
ROUND_WORKERS = 8   # models synced side by side in one round (each within S3's connection pool)
STATE_FILE = ".tfs-release-serving-config.json"   # the labels this sidecar last wrote, per model


def canary_entry(state: dict, local: set[int], available: set[int], previous: dict | None) -> dict:
    """{versions: [...], labels: {name: version}} for a canary model (pure; unit-tested).

    state: the registry's {stable, canary}; local: versions synced here; available: versions TF
    Serving reports AVAILABLE; previous: what this sidecar wrote last ({versions, labels}) or None."""
    previous = previous or {"versions": [], "labels": {}}
    prev_labels = {k: v for k, v in (previous.get("labels") or {}).items() if v in local}
    want = {k: v for k, v in (("stable", state.get("stable")), ("canary", state.get("canary"))) if v is not None}
    labels = {}
    for name, v in want.items():
        cur = prev_labels.get(name)
        if v not in local:
            if cur is not None:
                labels[name] = cur          # not synced yet: the label stays where it is
        elif cur is None or cur == v or v in available:
            labels[name] = v                # a new label (the flag allows it), unchanged, or a move to a loaded version
        else:
            labels[name] = cur              # moving to a version not loaded yet: load it first, move next round
    # load what the labels want next to what they point at now; keep nothing else
    versions = set(labels.values()) | {v for v in want.values() if v in local}
    if not versions and local:  # no label state yet: serve the newest synced version
        versions = {max(local)}
    return {"versions": sorted(versions), "labels": dict(sorted(labels.items()))}


def render(models: list[dict]) -> str:
    """TF Serving's ModelServerConfig (text format) for [{name, base_path, rollout, versions, labels}]."""
    out = ["model_config_list {"]
    for m in models:
        out += ["  config {", f'    name: "{m["name"]}"', f'    base_path: "{m["base_path"]}"',
                '    model_platform: "tensorflow"']
        if m.get("rollout") == "canary" and m.get("versions"):
            out += ["    model_version_policy {", "      specific {"]
            out += [f"        versions: {v}" for v in m["versions"]]
            out += ["      }", "    }"]
            for name, v in (m.get("labels") or {}).items():
                out += ["    version_labels {", f'      key: "{name}"', f"      value: {v}", "    }"]
        else:
            out += ["    model_version_policy {", "      latest {", "        num_versions: 1", "      }", "    }"]
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def write_if_changed(path: str, text: str) -> bool:
    try:
        with open(path) as fh:
            if fh.read() == text:
                return False
    except FileNotFoundError:
        pass
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".models.config.", dir=folder)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def read_state(root: str) -> dict:
    try:
        with open(os.path.join(root, STATE_FILE)) as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return {}


def write_state(root: str, state: dict) -> None:
    tmp = os.path.join(root, STATE_FILE + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(root, STATE_FILE))


def sync_root(client, models: list, root: str, *, config_file: str | None,
              available: Callable[[str], set[int]] | None = None, keep: int | None = None,
              trusted=None) -> dict:
    """One round for several models: each synced into ``<root>/<model>`` (registry/sync.py, labelled
    versions always kept), then the model config file written for all of them.

    models: ModelConfig objects (``serving``, ``extra['rollout']``). available: model name -> the
    versions this replica's TF Serving reports AVAILABLE (``tfs_api.status.available_versions``;
    a canary label moves only to one of them). trusted: serve only versions signed by these keys
    (registry/signing.py ``TrustedKeys``; a label never moves to a version that is refused). Returns {model: SyncResult,
    '_config': {changed, models: [...]}}; a model whose round failed keeps its previous entry."""
    from registry import labels as labels_mod
    from registry.sync import local_versions, sync_once
    os.makedirs(root, exist_ok=True)
    previous = read_state(root)
    results, entries, new_state, pending = {}, [], {}, []

    def one(m):
        """A model's labels and its versions (independent of the others: run side by side)."""
        canary = m.extra.get("rollout") == "canary"
        state = labels_mod.read(client, m.serving)[0] if canary else None  # an error here fails the round
        try:
            return state, sync_once(client, m.serving, os.path.join(root, m.name), keep=keep,
                                    pinned=labels_mod.pinned(state) if state else None, trusted=trusted, model=m.name)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not take the others' config down
            log.error("sync of %s failed this round: %s", m.name, exc)
            return state, exc
    # a full round of many models is many small requests: in parallel, so that a fleet's round (after
    # any change the marker announces) takes seconds, not a request latency times the fleet
    with ThreadPoolExecutor(max(1, min(ROUND_WORKERS, len(models)))) as pool:
        done = list(pool.map(one, models))
    for m, (state, result) in zip(models, done):
        canary = m.extra.get("rollout") == "canary"
        dest = os.path.join(root, m.name)
        results[m.name] = result
        entry = {"name": m.name, "base_path": dest, "rollout": "canary" if canary else "all"}
        if canary:
            local = set(local_versions(dest)) if os.path.isdir(dest) else set()
            entry.update(canary_entry(state, local, available(m.name) if available else set(), previous.get(m.name)))
            new_state[m.name] = {"versions": entry["versions"], "labels": entry["labels"]}
            want = {k: v for k, v in (("stable", state.get("stable")), ("canary", state.get("canary"))) if v is not None}
            if entry["labels"] != want:  # a label waits for TF Serving to load its version: not settled
                pending.append(m.name)
        if canary and not entry["versions"]:
            continue  # nothing synced yet: TF Serving would wait for it; list it once it is there
        if not canary and not (os.path.isdir(dest) and local_versions(dest)):
            # nothing synced yet: a TF Serving (re)started on a file listing it would wait for it
            # before opening its ports, and so serve none of the others either
            continue
        entries.append(entry)
    text = render(entries)
    changed = bool(config_file) and write_if_changed(config_file, text)
    write_state(root, {**previous, **new_state})
    if changed:
        log.info("wrote %s: %s", config_file, "; ".join(
            f"{e['name']} " + (f"versions {e['versions']} labels {e['labels']}" if e["rollout"] == "canary" else "latest")
            for e in entries))
    results["_config"] = {"changed": changed, "models": entries, "pending": pending}
    return results


def sync_root_round(client, models: list, root: str, *, config_file: str | None,
                    available: Callable[[str], set[int]] | None = None, keep: int | None = None, health=None,
                    trusted=None) -> dict:
    """``sync_root`` as one sidecar round with its health file (registry/sync.py ``Health``):
    {models: {name: versions or None}, config_file, config, problems: {name: why}}. Raises what
    the round raised (recorded in the health file first)."""
    from registry.sync import SyncResult
    if health is not None:
        health.round_started()
    try:
        res = sync_root(client, models, root, config_file=config_file, available=available, keep=keep,
                        trusted=trusted)
    except Exception as exc:
        if health is not None:
            health.round_failed(exc)
        raise
    bad = {n: (str(r) if isinstance(r, Exception) else "; ".join(r.problems))
           for n, r in res.items() if n != "_config" and (isinstance(r, Exception) or r.problems)}
    summary = {n: (r.present if not isinstance(r, Exception) else None) for n, r in res.items() if n != "_config"}
    if health is not None:
        health.round_done(SyncResult(present=[f"{n}/{v}" for n, vs in summary.items() for v in (vs or [])],
                                     problems=[f"{n}: {why}" for n, why in bad.items()]))
    return {"models": summary, "config_file": config_file, "config": res["_config"], "problems": bad,
            "pending": res["_config"]["pending"]}
