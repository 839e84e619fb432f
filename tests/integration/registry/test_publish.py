"""Against SeaweedFS: claims, server-side copies, manifests; concurrency and SIGKILL safety."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from registry import layout
from registry.s3 import S3Uri
from registry.transfer import sha256_file
from registry.versions import verify

from .conftest import clone_candidate, make_saved_model, write_verdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def serving(model_env):
    return S3Uri(model_env.serving, model_env.serving_prefix)


def test_publish_writes_files_then_manifest(model_env, s3, tmp_path):
    src = make_saved_model(tmp_path / "sm")
    cand = model_env.cli("stage", model_env.name, "--dir", src, check=0).stdout.strip()
    assert "/_staging/" in cand
    out = json.loads(model_env.cli("publish", model_env.name, "--candidate", cand, "--unvalidated",
                                   "--json", check=0).stdout)
    assert out["version"] == 1
    m = json.loads(s3.get_object(Bucket=model_env.serving, Key=f"{model_env.name}/_manifests/1.json")["Body"].read())
    assert m["schema"] == 1 and m["model"] == model_env.name and m["version"] == 1
    assert m["validation"]["verdict"] == "not-validated" and m["candidate"] == cand
    for f in m["files"]:
        assert f["sha256"] == sha256_file(os.path.join(src, f["path"]))[0]
        body = s3.get_object(Bucket=model_env.serving, Key=f"{model_env.name}/1/{f['path']}")["Body"].read()
        assert len(body) == f["size"]
    assert verify(s3, serving(model_env), deep=True).ok


def test_publish_refuses_unvalidated_and_failed_candidates(model_env, s3, staged):
    cand = staged()
    p = model_env.cli("publish", model_env.name, "--candidate", cand)
    assert p.returncode == 2 and "no validation verdict" in p.stderr
    write_verdict(s3, model_env, cand, passed=False, reason="golden expectations missed")
    p = model_env.cli("publish", model_env.name, "--candidate", cand, "--unvalidated")
    assert p.returncode == 2 and "failed validation (golden expectations missed)" in p.stderr
    assert layout.scan(s3, serving(model_env)).highest_number == 0


def test_publish_with_passing_verdict_records_report(model_env, s3, staged):
    cand = staged()
    report = write_verdict(s3, model_env, cand)["report"]
    assert model_env.cli("publish", model_env.name, "--candidate", cand, check=0).stdout.strip() == "1"
    vs = json.loads(model_env.cli("versions", model_env.name, "--json", check=0).stdout)["versions"]
    assert vs[0]["verdict"] == "passed" and vs[0]["report"] == report


def test_eight_concurrent_publishes_get_distinct_consecutive_versions(model_env, s3, staged):
    cands = [staged() for _ in range(8)]
    env = dict(os.environ, **model_env.env, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "cli", "publish", model_env.name, "--candidate", c,
                               "--unvalidated", "--json", "--config", model_env.config],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for c in cands]
    results = [(p.communicate(timeout=300), p.returncode) for p in procs]
    for (out, err), rc in results:
        assert rc == 0, err
        noise = [ln for ln in err.splitlines() if "ERROR" in ln or "Traceback" in ln]
        assert not noise, err
    versions = sorted(json.loads(out)["version"] for (out, _), _ in results)
    assert versions == list(range(1, 9))
    state = layout.scan(s3, serving(model_env))
    assert sorted(state.manifests) == versions and sorted(state.claims) == versions
    manifests = [json.loads(s3.get_object(Bucket=model_env.serving,
                                          Key=f"{model_env.name}/_manifests/{v}.json")["Body"].read())
                 for v in versions]
    assert sorted(m["candidate"] for m in manifests) == sorted(cands)  # each run its own version
    v = verify(s3, serving(model_env), deep=True, grace_seconds=0)
    assert v.ok and v.versions == versions and not v.orphans


def _manifest_files(s3, model_env, n):
    m = json.loads(s3.get_object(Bucket=model_env.serving, Key=f"{model_env.name}/_manifests/{n}.json")["Body"].read())
    return {f["path"]: f for f in m["files"]}


def _check_local_versions(s3, model_env, dest):
    """Every numeric folder under dest is a complete, committed version (what TF Serving would load)."""
    for name in os.listdir(dest):
        if not name.isdigit():
            continue
        want = _manifest_files(s3, model_env, int(name))
        have = {}
        for root, _, names in os.walk(os.path.join(dest, name)):
            for n in names:
                p = os.path.join(root, n)
                have[os.path.relpath(p, os.path.join(dest, name))] = os.path.getsize(p)
        assert have == {k: f["size"] for k, f in want.items()}, f"partial version {name} exposed"


@pytest.mark.slow
def test_sigkilled_publishes_never_expose_partial_versions(model_env, s3, tmp_path):
    """20+ publishes SIGKILLed at random moments while a sync poller (itself killed and restarted)
    mirrors the bucket: no committed version is ever incomplete, no partial version is ever
    exposed locally, the next publish succeeds, and orphans are reported and cleaned."""
    rnd = random.Random(1234)
    env = dict(os.environ, **model_env.env, PYTHONPATH=ROOT)
    src = make_saved_model(tmp_path / "sm", files=40, big=6 * 1024 * 1024)
    cand = model_env.cli("stage", model_env.name, "--dir", src, check=0).stdout.strip()
    dest = str(tmp_path / "model_base_path")
    os.makedirs(dest)
    base = [sys.executable, "-m", "cli", "--config", model_env.config]

    def start_sync():
        return subprocess.Popen(base + ["sync", model_env.name, "--dest", dest, "--interval", "0.2"],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # how long an unkilled publish takes, to aim the kills inside it. Each attempt publishes its
    # own candidate (a server-side copy): publishing one candidate twice returns its version.
    t0 = time.monotonic()
    model_env.cli("publish", model_env.name, "--candidate", cand, "--unvalidated", check=0)
    duration = time.monotonic() - t0
    sync = start_sync()
    killed = 0
    try:
        trial = 0
        while killed < 20 and trial < 40:
            trial += 1
            attempt = clone_candidate(s3, cand, f"attempt-{trial}")
            p = subprocess.Popen(base + ["publish", model_env.name, "--candidate", attempt, "--unvalidated"],
                                 env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.2, duration * 0.95))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
            if trial % 5 == 4:  # kill the poller too, at a random moment, and restart it
                sync.send_signal(signal.SIGKILL)
                sync.wait()
                sync = start_sync()
            _check_local_versions(s3, model_env, dest)
            v = verify(s3, serving(model_env), grace_seconds=0)
            assert v.ok, v.problems
    finally:
        sync.send_signal(signal.SIGTERM)
        sync.wait(timeout=30)
    assert killed >= 20, f"only {killed} publishes were killed mid-run; aim the kills better"
    # the next publish succeeds, with a number no earlier claim used
    state_before = layout.scan(s3, serving(model_env))
    out = model_env.cli("publish", model_env.name, "--candidate", clone_candidate(s3, cand, "last"),
                        "--unvalidated", "--json", check=0)
    assert json.loads(out.stdout)["version"] == state_before.highest_number + 1
    # orphans are reported (verify exits 0: orphans alone are not a failure) and cleaned explicitly
    rep = json.loads(model_env.cli("verify", model_env.name, "--grace", "0", "--json", check=0).stdout)
    assert rep["ok"] and rep["orphans"], "killed publishes should leave orphans to report"
    cleaned = json.loads(model_env.cli("clean-orphans", model_env.name, "--grace", "0", "--json",
                                       check=0).stdout)["cleaned"]
    assert {o["version"] for o in cleaned} == {o["version"] for o in rep["orphans"]}
    rep = json.loads(model_env.cli("verify", model_env.name, "--grace", "0", "--deep", "--json", check=0).stdout)
    assert rep["ok"] and not rep["orphans"]
    model_env.cli("sync", model_env.name, "--dest", dest, "--once", check=0)
    _check_local_versions(s3, model_env, dest)
    assert sorted(int(n) for n in os.listdir(dest) if n.isdigit()) == rep["versions"]
    assert not [n for n in os.listdir(dest) if n.startswith(".tmp-")]


def test_rollback_publishes_copy_as_new_highest_version(model_env, s3, staged):
    for _ in range(2):
        model_env.cli("publish", model_env.name, "--candidate", staged(), "--unvalidated", check=0)
    out = json.loads(model_env.cli("rollback", model_env.name, "--to", "1", "--json", check=0).stdout)
    assert out["version"] == 3 and out["rollback_of"] == 1
    m1, m3 = _manifest_files(s3, model_env, 1), _manifest_files(s3, model_env, 3)
    assert m1 == m3
    vs = json.loads(model_env.cli("versions", model_env.name, "--json", check=0).stdout)["versions"]
    assert [(v["version"], v["rollback_of"]) for v in vs] == [(1, None), (2, None), (3, 1)]
    assert verify(s3, serving(model_env), deep=True).ok
