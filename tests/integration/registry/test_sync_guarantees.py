"""Against SeaweedFS: the sync sidecar never takes production down. No deletes on an empty or
shrunken listing without tombstones, the newest local version stays until a newer one is in place,
newest first, one bad version never blocks the others, and a health signal a health check reads."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from registry.s3 import S3Uri
from registry.sync import HEALTH_FILE, read_health, sync_once
from registry.versions import retention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def serving(model_env):
    return S3Uri(model_env.serving, model_env.serving_prefix)


def publish_n(model_env, staged, n, seed0=0):
    return [json.loads(model_env.cli("publish", model_env.name, "--candidate", staged(seed=seed0 + i),
                                     "--unvalidated", "--json", check=0).stdout)["version"] for i in range(n)]


def local(dest):
    return sorted(int(n) for n in os.listdir(dest) if n.isdigit())


def sync_cli(model_env, dest, *extra, config=None):
    p = model_env.cli("sync", model_env.name, "--dest", dest, "--once", "--json", *extra,
                      *(("--config", config) if config else ()))
    return p.returncode, json.loads(p.stdout), p.stderr


def delete_manifests(s3, model_env, versions):
    for n in versions:
        s3.delete_object(Bucket=model_env.serving, Key=f"{model_env.name}/_manifests/{n}.json")


def test_empty_listing_deletes_nothing_and_says_why(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 2)
    dest = str(tmp_path / "mbp")
    assert sync_cli(model_env, dest)[0] == 0 and local(dest) == [1, 2]
    delete_manifests(s3, model_env, [1, 2])                       # deleted by mistake
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 1 and local(dest) == [1, 2] and out["removed"] == []
    assert "shows no committed version" in err and "deleting nothing" in err
    assert {h["version"] for h in out["held"]} == {1, 2}
    health = read_health(os.path.join(dest, HEALTH_FILE))
    assert health["ok"] is False and "shows no committed version" in health["problems"][0]
    # a wrong serving prefix in a config change looks the same
    cfg = yaml.safe_load(open(model_env.config))
    cfg["models"][model_env.name]["serving"] = f"s3://{model_env.serving}/typo-{model_env.name}/"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(cfg))
    rc, out, err = sync_cli(model_env, dest, config=str(wrong))
    assert rc == 1 and local(dest) == [1, 2] and "deleting nothing" in err


def test_shrunken_listing_deletes_only_what_has_a_tombstone(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 3)
    dest = str(tmp_path / "mbp")
    sync_once(s3, serving(model_env), dest)
    delete_manifests(s3, model_env, [1])                          # gone without a tombstone
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 1 and local(dest) == [1, 2, 3]
    assert "local versions [1]" in err and "neither committed nor retired" in err
    # retention retires 2 (tombstone): 2 may go, 1 still may not, so nothing goes this round
    retention(s3, serving(model_env), 1)
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 1 and local(dest) == [1, 2, 3]
    # once 1 has its tombstone too (as retention or clean-up would have left), both go
    s3.put_object(Bucket=model_env.serving, Key=f"{model_env.name}/_tombstones/1.json",
                  Body=b'{"version": 1, "reason": "removed by hand, recorded"}')
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 0, err
    assert out["removed"] == [1, 2] and local(dest) == [3]


def test_newest_local_version_stays_until_a_newer_one_is_in_place(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 2)
    dest = str(tmp_path / "mbp")
    sync_once(s3, serving(model_env), dest)
    # version 2 is retired (a withdrawn publish, a retention by hand): it is still the newest here
    delete_manifests(s3, model_env, [2])
    s3.put_object(Bucket=model_env.serving, Key=f"{model_env.name}/_tombstones/2.json",
                  Body=b'{"version": 2, "reason": "withdrawn"}')
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 1 and local(dest) == [1, 2]
    assert out["held"] == [{"version": 2, "reason": "the newest local version stays until a newer "
                                                    "committed version is in place"}]
    # a newer version that cannot be fetched is not "in place": 2 still stays
    [v3] = publish_n(model_env, staged, 1, seed0=10)
    key = f"{model_env.name}/{v3}/variables/variables.index"
    good = s3.get_object(Bucket=model_env.serving, Key=key)["Body"].read()
    s3.put_object(Bucket=model_env.serving, Key=key, Body=bytes([good[0] ^ 0xFF]) + good[1:])
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 1 and local(dest) == [1, 2] and out["failed"][0]["version"] == 3
    # once 3 is in place, 2 goes
    s3.put_object(Bucket=model_env.serving, Key=key, Body=good)
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 0, err
    assert out["added"] == [3] and out["removed"] == [2] and local(dest) == [1, 3]


def test_newest_first_and_one_bad_version_does_not_block_the_others(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 4)
    b, m = model_env.serving, model_env.name
    # version 2: a file corrupted in place (same size); version 3: a manifest that is not JSON
    key = f"{m}/2/variables/variables.index"
    good = s3.get_object(Bucket=b, Key=key)["Body"].read()
    s3.put_object(Bucket=b, Key=key, Body=bytes([good[0] ^ 0xFF]) + good[1:])
    good_manifest = s3.get_object(Bucket=b, Key=f"{m}/_manifests/3.json")["Body"].read()
    s3.put_object(Bucket=b, Key=f"{m}/_manifests/3.json", Body=b"{not json")
    dest = str(tmp_path / "mbp")
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 1
    assert out["added"] == [4, 1] and local(dest) == [1, 4]          # newest first, past the failures
    reasons = {f["version"]: f["reason"] for f in out["failed"]}
    assert set(reasons) == {2, 3}
    assert "sha256" in reasons[2] and "not valid JSON" in reasons[3]
    assert "version 2 skipped (retried next round)" in err
    assert not os.path.exists(os.path.join(dest, "2")) and not os.path.exists(os.path.join(dest, "3"))
    # repaired: the next round fetches both
    s3.put_object(Bucket=b, Key=key, Body=good)
    s3.put_object(Bucket=b, Key=f"{m}/_manifests/3.json", Body=good_manifest)
    rc, out, err = sync_cli(model_env, dest)
    assert rc == 0, err
    assert out["added"] == [3, 2] and local(dest) == [1, 2, 3, 4] and out["ok"]


def _health(model_env, *args):
    p = model_env.cli("sync-health", *args, "--json")
    return p.returncode, json.loads(p.stdout), p.stderr


def test_health_signal_fresh_stale_and_uncertain(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 1)
    dest = str(tmp_path / "mbp")
    rc, out, _ = _health(model_env, "--dest", dest)
    assert rc == 1 and "no readable health file" in out["reason"]     # before the first round
    env = dict(os.environ, **model_env.env, PYTHONPATH=ROOT)
    # every round a full one: the manifests are deleted behind the change marker's back below (a sidecar
    # with the marker sees such a change at its reconciliation: test_change_marker.py)
    sync = subprocess.Popen([sys.executable, "-m", "cli", "sync", model_env.name, "--dest", dest,
                             "--interval", "0.5", "--reconcile-interval", "0", "--config", model_env.config],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # healthy, and the first round has finished (while it runs, its heartbeat alone is healthy)
            rc, out, _ = _health(model_env, "--dest", dest, "--max-age", "3")
            if (rc == 0 and (out.get("record") or {}).get("versions") == [1]) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert rc == 0 and out["healthy"] and out["record"]["versions"] == [1], out
        assert out["record"]["last_success"] and out["record"]["interval_s"] == 0.5
        # the listing becomes uncertain: rounds keep running but none succeeds -> stale, with the reason
        delete_manifests(s3, model_env, [1])
        deadline = time.monotonic() + 30  # a round listed before the deletion may still end well (a busy machine)
        time.sleep(4.5)
        rc, out, err = _health(model_env, "--dest", dest, "--max-age", "3")
        while rc != 1 and time.monotonic() < deadline:
            time.sleep(1)
            rc, out, err = _health(model_env, "--dest", dest, "--max-age", "3")
        assert rc == 1 and "no successful sync round within 3s" in out["reason"], out
        assert "shows no committed version" in out["reason"] and local(dest) == [1]
        # default max age: 3 intervals, at least 30 s: still healthy by that measure
        assert _health(model_env, "--dest", dest)[0] == 0
    finally:
        sync.send_signal(signal.SIGKILL)
        sync.wait()
    # a dead sidecar: no heartbeat -> unhealthy after max-age
    time.sleep(3.5)
    rc, out, _ = _health(model_env, "--dest", dest, "--max-age", "3")
    assert rc == 1 and "wrote no heartbeat for" in out["reason"], out


def test_health_file_elsewhere_and_bad_arguments(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 1)
    dest, hf = str(tmp_path / "mbp"), str(tmp_path / "health" / "sync.json")
    assert sync_cli(model_env, dest, "--health-file", hf)[0] == 0
    assert not os.path.exists(os.path.join(dest, HEALTH_FILE)) and read_health(hf)["versions"] == [1]
    assert _health(model_env, "--health-file", hf, "--max-age", "60")[0] == 0
    p = model_env.cli("sync-health")
    assert p.returncode == 2 and "needs --dest" in p.stderr
    p = model_env.cli("sync-health", "--dest", dest, "--max-age", "0")
    assert p.returncode == 2 and "--max-age must be more than 0" in p.stderr


@pytest.mark.parametrize("keep", [None, 1])
def test_fresh_sync_of_an_empty_serving_prefix_is_fine(model_env, s3, tmp_path, keep):
    """Before the first publish there is nothing to serve and nothing to protect: not a problem
    (the Kubernetes init container runs `sync --once` on a new deployment)."""
    dest = str(tmp_path / "mbp")
    rc, out, err = sync_cli(model_env, dest, *(("--keep", str(keep)) if keep else ()))
    assert rc == 0 and out["ok"] and out["versions"] == [], err
