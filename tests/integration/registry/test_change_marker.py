"""Against SeaweedFS: the serving bucket's change marker (registry/index.py) makes an idle sync round
one conditional GET, and never makes a replica skip a committed version: the marker is a hint, the
manifests and tombstones stay the truth (a lost, stale or restored marker, a write during a round,
a failed round, a restarted replica)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from registry import index
from registry.index import ChangeGate
from registry.s3 import S3Uri
from registry.sync import gated, read_health, sync_once

from .test_sync_guarantees import ROOT, local, publish_n


class Requests:
    """Every S3 call the client makes, by operation (botocore's own event hooks)."""

    def __init__(self, client):
        self.calls: list[tuple[str, str]] = []
        client.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, params, model, **_):
        self.calls.append((model.name, params.get("Key") or params.get("Prefix") or ""))

    def since(self, n: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for op, _ in self.calls[n:]:
            out[op] = out.get(op, 0) + 1
        return out


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _serving(model_env) -> S3Uri:
    return S3Uri(model_env.serving, model_env.serving_prefix)


def _sidecar(s3, model_env, dest, *, reconcile_s=3600.0):
    clock = Clock()
    gate = ChangeGate(s3, [model_env.serving], reconcile_s=reconcile_s, clock=clock)
    results = []

    def one_round() -> bool:
        r = sync_once(s3, _serving(model_env), str(dest))
        results.append(r)
        return r.ok
    return gated(one_round, gate), gate, clock, results


def test_idle_rounds_cost_one_get_and_a_publish_is_served_next_round(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 2)
    counted = Requests(s3)
    round_, gate, clock, results = _sidecar(s3, model_env, tmp_path / "m")
    round_()
    assert local(tmp_path / "m") == [1, 2] and len(results) == 1
    n = len(counted.calls)
    for _ in range(5):
        round_()
    assert counted.since(n) == {"GetObject": 5}, counted.since(n)   # 304s: no listing, whatever the versions
    assert len(results) == 1
    publish_n(model_env, staged, 1, seed0=10)                        # another process: touches the marker
    round_()
    assert len(results) == 2 and local(tmp_path / "m") == [1, 2, 3]
    n = len(counted.calls)
    round_()
    assert counted.since(n) == {"GetObject": 1}


def test_the_publisher_touches_the_marker_after_the_commit(model_env, s3, staged):
    from registry.publish import publish
    counted = Requests(s3)
    publish(s3, _serving(model_env), model_env.name, staged(seed=3), allow_unvalidated=True)
    puts = [key for op, key in counted.calls if op == "PutObject"]
    manifest = f"{model_env.name}/_manifests/1.json"
    assert index.KEY in puts and puts.index(index.KEY) > puts.index(manifest), puts


def test_a_stale_or_restored_marker_is_caught_by_the_reconciliation(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 1)
    round_, gate, clock, results = _sidecar(s3, model_env, tmp_path / "m", reconcile_s=600)
    round_()
    before = s3.get_object(Bucket=model_env.serving, Key=index.KEY)["Body"].read()
    publish_n(model_env, staged, 1, seed0=5)
    # the marker put back as it was (a backup restored, a writer that never touches): same ETag
    s3.put_object(Bucket=model_env.serving, Key=index.KEY, Body=before)
    round_()
    assert local(tmp_path / "m") == [1] and len(results) == 1       # skipped: the hint says nothing changed
    clock.t += 601                                                  # the reconciliation is due
    round_()
    assert local(tmp_path / "m") == [1, 2] and len(results) == 2


def test_a_lost_marker_means_full_rounds(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 1)
    round_, gate, clock, results = _sidecar(s3, model_env, tmp_path / "m")
    round_()
    s3.delete_object(Bucket=model_env.serving, Key=index.KEY)
    counted = Requests(s3)
    round_()
    round_()
    assert len(results) == 3 and counted.since(0).get("ListObjectsV2", 0) >= 2, counted.since(0)


def test_a_write_during_a_round_and_a_failed_round_keep_the_next_round_full(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 1)
    dest = tmp_path / "m"
    _, gate, clock, _ = _sidecar(s3, model_env, dest)
    full, seen = gate.check()                         # the marker is read before the round lists ...
    assert full
    r = sync_once(s3, _serving(model_env), str(dest))
    publish_n(model_env, staged, 1, seed0=7)          # ... so a commit after the listing changes it again
    gate.done(seen, r.ok)
    assert gate.check()[0] and local(dest) == [1]
    r = sync_once(s3, _serving(model_env), str(dest))
    assert local(dest) == [1, 2]
    # a version that cannot be fetched: the round fails, and the next one lists again though the marker
    # did not change (the failed version is retried every round, not at the next reconciliation)
    publish_n(model_env, staged, 1, seed0=9)
    s3.delete_object(Bucket=model_env.serving, Key=f"{model_env.name}/3/saved_model.pb")
    full, seen = gate.check()
    r = sync_once(s3, _serving(model_env), str(dest))
    assert full and not r.ok
    gate.done(seen, r.ok)
    assert gate.check()[0]


def test_a_restarted_replica_starts_with_a_full_round(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 1)
    round_, *_ = _sidecar(s3, model_env, tmp_path / "m")
    round_()
    round_, _, _, results = _sidecar(s3, model_env, tmp_path / "m")   # no state: a new process
    round_()
    assert len(results) == 1 and local(tmp_path / "m") == [1]


def test_the_sidecar_command_skips_idle_rounds_and_serves_a_new_version(model_env, s3, staged, tmp_path):
    """`tfs-release sync` as a sidecar runs it: idle rounds are skipped (and healthy), a publish is served."""
    publish_n(model_env, staged, 1)
    dest = tmp_path / "m"
    env = {**os.environ, **model_env.env, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "sync", model_env.name, "--dest", str(dest),
                             "--interval", "0.3", "--config", model_env.config], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = os.path.join(dest, ".tfs-release-sync.json")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (read_health(health) or {}).get("rounds_skipped", 0) < 3:
            time.sleep(0.2)
        h = read_health(health)
        assert h and h["rounds_skipped"] >= 3 and h["ok"] and local(dest) == [1], h
        publish_n(model_env, staged, 1, seed0=4)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and local(dest) != [1, 2]:
            time.sleep(0.2)
        assert local(dest) == [1, 2]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out[-2000:]
    assert json.loads(open(health).read())["ok"] is True


def test_two_publishers_racing_never_make_a_replica_skip_a_version(model_env, s3, staged, tmp_path):
    """Two publishers (CLI processes) commit and touch the marker at the same time, while a replica
    runs gated rounds back to back: whatever order their marker writes land in, once both are done
    the replica's next rounds hold every committed version, without a reconciliation."""
    import threading

    from registry.versions import load_manifests
    cands = [staged(seed=100 + i) for i in range(6)]   # staged up front: the race is the publishes
    dest = tmp_path / "m"
    round_, gate, clock, results = _sidecar(s3, model_env, dest, reconcile_s=86400.0)
    round_()
    stop = threading.Event()

    def replica():
        while not stop.is_set():
            round_()
            time.sleep(0.05)
    side = threading.Thread(target=replica, daemon=True)
    side.start()

    def publisher(mine):
        for c in mine:
            model_env.cli("publish", model_env.name, "--candidate", c, "--unvalidated", check=0)
    pubs = [threading.Thread(target=publisher, args=(cands[i::2],)) for i in range(2)]
    for t in pubs:
        t.start()
    for t in pubs:
        t.join(300)
    committed = sorted(load_manifests(s3, _serving(model_env)))
    assert committed == [1, 2, 3, 4, 5, 6], committed   # distinct numbers (the claims), all committed
    deadline = time.monotonic() + 30
    while local(dest) != committed and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    side.join(30)
    assert local(dest) == committed, (local(dest), committed)
    assert clock() == 0.0   # the clock never moved: no reconciliation was due, the marker alone did it
