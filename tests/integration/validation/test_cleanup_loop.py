"""30 validations mixing passes, failures, timeouts and validators SIGKILLed mid-run: no
container is left behind (a killed one's container is removed by its reaper within seconds, before
any next run)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from registry.s3 import S3Uri
from tests.conftest import ROOT
from tests.integration.conftest import validation_containers

from . import candidates
from .conftest import GOLDEN_CLS

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def test_thirty_mixed_runs_leave_no_container(export_env, model_env, s3, tmp_path, standin_image, docker_engine):
    cls_env = model_env
    cls_env.name = export_env("classification")   # a trained demo classifier: its runs really pass
    serving = S3Uri(cls_env.serving, f"{cls_env.name}/")
    good = cls_env.cli("export", cls_env.name, check=0, timeout=900).stdout.strip()
    broken_sm = candidates.corrupt_variables(candidates.save(candidates.classifier_module(), str(tmp_path / "broken")))
    broken = candidates.stage_candidate(s3, serving, broken_sm, GOLDEN_CLS, str(tmp_path), reference=False)
    base = [sys.executable, "-m", "cli", "validate", cls_env.name, "--image", standin_image,
            "--config", cls_env.config]
    env = {**os.environ, **cls_env.env, "PYTHONPATH": ROOT}
    # 30 runs: 5 passes, 5 failures, 10 timeouts, 10 kills; every kill is followed by a run that
    # sweeps what it left (passes are the slow kind, ~17 s against ~6-11 s for the others)
    plan = ["pass", "timeout", "kill", "broken", "kill", "timeout"] * 5
    codes, killed_left, took = {}, 0, {}
    for i, kind in enumerate(plan):
        t0 = time.monotonic()
        args = base + ["--candidate", broken if kind == "broken" else good]
        if kind == "timeout":
            args += ["--deadline", "0.5"]
        p = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kind == "kill":
            mine, deadline = [], time.monotonic() + 120
            while time.monotonic() < deadline and p.poll() is None:
                mine = docker_engine.containers.list(all=True, ignore_removed=True, filters={"label": f"tfs-release.pid={p.pid}"})
                if mine:
                    break
                time.sleep(0.2)
            if mine:  # the label the other assertions scope by is on the run's container
                assert {c.id for c in mine} <= {c.id for c in validation_containers(docker_engine, good)}, mine
            p.send_signal(signal.SIGKILL)
            p.wait()
            killed_left += bool(mine)  # the kill landed while its container existed
            # no later run needed: the container's reaper removes it within seconds
            # (within a second on a quiet machine; the engine itself can take many seconds to remove a
            # container when the 2 cores are saturated: the final pre-stop run once needed over 15 s)
            gone = time.monotonic() + 30
            while docker_engine.containers.list(all=True, ignore_removed=True, filters={"label": f"tfs-release.pid={p.pid}"}):
                assert time.monotonic() < gone, f"run {i} (kill): its container outlived the validator by 30 s"
                time.sleep(0.2)
            took.setdefault(kind, []).append(time.monotonic() - t0)
            continue
        _, err = p.communicate(timeout=600)
        codes.setdefault(kind, set()).add(p.returncode)
        took.setdefault(kind, []).append(time.monotonic() - t0)
        # whatever a killed run left behind is gone once the next run has started and finished
        assert validation_containers(docker_engine, good, broken) == [], f"run {i} ({kind}) left containers"
    print(f"\n{len(plan)} runs: " + ", ".join(f"{k} x{len(v)} mean {sum(v) / len(v):.1f}s"
                                             for k, v in sorted(took.items())))
    assert codes == {"pass": {0}, "timeout": {1}, "broken": {1}}, codes
    assert killed_left >= 5, "the SIGKILLs should have landed while containers were running"
    assert validation_containers(docker_engine, good, broken) == []


def test_sigterm_of_the_validator_removes_its_container(cls_env, s3, tmp_path, standin_image, docker_engine):
    """What Airflow does to a task it stops: SIGTERM. The validator unwinds and removes the server."""
    serving = S3Uri(cls_env.serving, f"{cls_env.name}/")
    sm = candidates.save(candidates.classifier_module(), str(tmp_path / "good"))
    cand = candidates.stage_candidate(s3, serving, sm, GOLDEN_CLS, str(tmp_path))
    p = subprocess.Popen([sys.executable, "-m", "cli", "validate", cls_env.name, "--image", standin_image,
                          "--candidate", cand, "--config", cls_env.config],
                         env={**os.environ, **cls_env.env, "PYTHONPATH": ROOT}, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not docker_engine.containers.list(ignore_removed=True,
            all=True, filters={"label": f"tfs-release.pid={p.pid}"}):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM); cleaned up" in err
    assert docker_engine.containers.list(all=True, ignore_removed=True, filters={"label": f"tfs-release.pid={p.pid}"}) == []
