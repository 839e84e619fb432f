"""Against SeaweedFS: verify finds damage, retention rules, sync mirrors atomically."""
import json
import os
import signal
import subprocess
import sys
import time

from registry import layout
from registry.s3 import S3Uri
from registry.sync import sync_once
from registry.versions import retention, verify

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def serving(model_env):
    return S3Uri(model_env.serving, model_env.serving_prefix)


def publish_n(model_env, staged, n):
    return [json.loads(model_env.cli("publish", model_env.name, "--candidate", staged(seed=i), "--unvalidated",
                                     "--json", check=0).stdout)["version"] for i in range(n)]


def test_verify_detects_missing_resized_and_corrupt_files(model_env, s3, staged):
    publish_n(model_env, staged, 3)
    b, p = model_env.serving, model_env.name
    s3.delete_object(Bucket=b, Key=f"{p}/1/assets/asset-0.txt")
    s3.put_object(Bucket=b, Key=f"{p}/2/saved_model.pb", Body=b"short")
    body = s3.get_object(Bucket=b, Key=f"{p}/3/variables/variables.index")["Body"].read()
    s3.put_object(Bucket=b, Key=f"{p}/3/variables/variables.index", Body=bytes([body[0] ^ 1]) + body[1:])
    shallow = model_env.cli("verify", p, "--json")
    assert shallow.returncode == 1
    probs = {(x["version"], x["path"]): x["problem"] for x in json.loads(shallow.stdout)["problems"]}
    assert probs[(1, "assets/asset-0.txt")] == "missing"
    assert probs[(2, "saved_model.pb")].startswith("size 5 != manifest")
    assert (3, "variables/variables.index") not in probs  # same size: only --deep sees it
    deep = json.loads(model_env.cli("verify", p, "--deep", "--json").stdout)
    assert any(x["version"] == 3 and x["problem"].startswith("sha256") for x in deep["problems"])


def test_retention_keeps_newest_and_rollback_targets(model_env, s3, staged):
    publish_n(model_env, staged, 4)                               # 1..4
    model_env.cli("rollback", model_env.name, "--to", "2", check=0)  # 5 = copy of 2
    removed = json.loads(model_env.cli("retention", model_env.name, "--keep", "2", "--json", check=0).stdout)["removed"]
    assert removed == [1, 3]                                      # 2 stays: version 5 rolls back to it
    state = layout.scan(s3, serving(model_env))
    assert sorted(state.manifests) == [2, 4, 5] and state.folders == {2, 4, 5}
    assert verify(s3, serving(model_env), grace_seconds=0).to_json()["orphans"] == []
    # numbers are never reused after retention
    assert publish_n(model_env, staged, 1) == [6]
    assert model_env.cli("retention", model_env.name, "--keep", "0").returncode == 2


def test_sync_mirrors_committed_versions_and_applies_retention(model_env, s3, staged, tmp_path):
    publish_n(model_env, staged, 3)
    dest = str(tmp_path / "mbp")
    r = sync_once(s3, serving(model_env), dest)
    assert r.added == [3, 2, 1] and r.present == [1, 2, 3]  # newest first
    # an uncommitted (claimed, half-copied) version is invisible to the poller
    s3.put_object(Bucket=model_env.serving, Key=f"{model_env.name}/_claims/4", Body=b"{}")
    s3.put_object(Bucket=model_env.serving, Key=f"{model_env.name}/4/saved_model.pb", Body=b"partial")
    assert sync_once(s3, serving(model_env), dest).present == [1, 2, 3]
    retention(s3, serving(model_env), 1)
    r = sync_once(s3, serving(model_env), dest)
    assert r.removed == [1, 2] and r.present == [3]
    r = sync_once(s3, serving(model_env), dest, keep=1)
    assert r.present == [3] and not [n for n in os.listdir(dest) if n.startswith((".tmp-", ".trash-"))]


def test_killed_sync_leaves_no_partial_version_and_resumes(model_env, s3, tmp_path):
    from tests.integration.registry.conftest import make_saved_model
    src = make_saved_model(tmp_path / "sm", files=10, big=120 * 1024 * 1024)
    cand = model_env.cli("stage", model_env.name, "--dir", src, check=0).stdout.strip()
    model_env.cli("publish", model_env.name, "--candidate", cand, "--unvalidated", check=0)
    dest = str(tmp_path / "mbp")
    env = dict(os.environ, **model_env.env, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "cli", "sync", model_env.name, "--dest", dest, "--once",
                          "--config", model_env.config], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(os.path.join(dest, ".tmp-1")):
        time.sleep(0.005)
    # SIGKILL the moment its download folder appears (a 120 MB download is far from done); a fixed
    # sleep here raced the download on a fast, idle machine
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not os.path.exists(os.path.join(dest, "1")), "killed mid-download, yet version 1 is exposed"
    assert os.path.isdir(os.path.join(dest, ".tmp-1"))
    r = sync_once(s3, serving(model_env), dest)
    assert r.present == [1] and not os.path.exists(os.path.join(dest, ".tmp-1"))
    with open(os.path.join(dest, "1", "variables", "variables.data-00000-of-00001"), "rb") as fh, \
            open(os.path.join(src, "variables", "variables.data-00000-of-00001"), "rb") as orig:
        assert fh.read() == orig.read()
