"""Leftover serving containers against the real Docker engine (serving/sweep.py): a SIGKILLed
validator's container disappears by itself (its reaper) with no other validation running; a
container ends itself at its expiry; the sweep removes only what it may (dead owner on this host,
stopped owner container, expiry passed) and never another host's live container."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import docker
import pytest

from registry.s3 import S3Uri
from tests.conftest import ROOT
from serving import sweep as sweep_mod

from tests.integration.validation import candidates

GOLDEN_CLS = os.path.join(ROOT, "demo", "golden", "shapes-classifier")

pytestmark = [pytest.mark.docker]


def _labels(**over) -> dict[str, str]:
    labels = {sweep_mod.ROLE: "validation", "tfs-release.model": "sweep-test",
              "tfs-release.run": f"sweep-{uuid.uuid4().hex[:6]}"}
    labels.update({k: v for k, v in over.items() if v is not None})
    return labels


def _exists(engine, name) -> bool:
    return bool(engine.containers.list(all=True, ignore_removed=True, filters={"name": f"^/{name}$"}))


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_sweep_removes_only_what_it_may(docker_engine, standin_image):
    me, host = sweep_mod.host_id(), "this-host"
    holder = docker_engine.containers.run(standin_image, entrypoint=["sleep", "300"], detach=True,
                                          labels={"tfsr.test": "holder"})
    now = int(time.time())
    cases = {  # name suffix -> (labels, removed by the sweep?)
        "dead-owner": (_labels(**{sweep_mod.HOST_ID: me, sweep_mod.PID: str(_dead_pid()),
                                  sweep_mod.EXPIRES: str(now + 3600)}), True),
        "live-owner": (_labels(**{sweep_mod.HOST_ID: me, sweep_mod.PID: str(os.getpid()),
                                  sweep_mod.PID_START: sweep_mod.proc_start(os.getpid()),
                                  sweep_mod.EXPIRES: str(now + 3600)}), False),
        # pid 1 exists here too: only the host-id says it is another machine's process
        "other-host-live": (_labels(**{sweep_mod.HOST_ID: "0" * 16, sweep_mod.HOST: host, sweep_mod.PID: "1",
                                       sweep_mod.EXPIRES: str(now + 3600)}), False),
        "other-host-dead-pid": (_labels(**{sweep_mod.HOST_ID: "0" * 16, sweep_mod.PID: str(_dead_pid()),
                                           sweep_mod.EXPIRES: str(now + 3600)}), False),
        "other-host-expired": (_labels(**{sweep_mod.HOST_ID: "0" * 16, sweep_mod.PID: "1",
                                          sweep_mod.EXPIRES: str(now - 5)}), True),
        "live-owner-expired": (_labels(**{sweep_mod.HOST_ID: me, sweep_mod.PID: str(os.getpid()),
                                          sweep_mod.EXPIRES: str(now - 5)}), True),
        "owner-container-runs": (_labels(**{sweep_mod.HOST_ID: "1" * 16, sweep_mod.PID: "1",
                                            sweep_mod.OWNER_CONTAINER: holder.id[:12],
                                            sweep_mod.EXPIRES: str(now + 3600)}), False),
    }
    tag = uuid.uuid4().hex[:6]
    names = {k: f"tfsr-sweeptest-{k}-{tag}" for k in cases}
    try:
        for k, (labels, _) in cases.items():
            c = docker_engine.containers.create(standin_image, entrypoint=["sleep", "300"], name=names[k],
                                                labels=labels)
            if k.startswith("other-host-live"):
                c.start()  # running, owned elsewhere: the case the old sweep got wrong
        removed = set(sweep_mod.sweep(docker_engine, ("validation",)))
        for k, (_, gone) in cases.items():
            assert (names[k] in removed) == gone, (k, removed)
            assert _exists(docker_engine, names[k]) == (not gone), k
        holder.stop(timeout=1)  # the containerised validator stopped: its server is a leftover
        assert names["owner-container-runs"] in sweep_mod.sweep(docker_engine, ("validation",))
        assert _exists(docker_engine, names["other-host-live"])  # still: it expires in an hour
    finally:
        for c in docker_engine.containers.list(all=True, ignore_removed=True, filters={"name": f"tfsr-sweeptest-.*-{tag}"}):
            c.remove(force=True)
        holder.remove(force=True)


def test_a_sigkilled_validator_leaves_nothing_even_with_no_other_validation(cls_env, s3, tmp_path,
                                                                           standin_image, docker_engine):
    """`tfs-release validate` killed with SIGKILL the moment its container exists: no handler runs,
    no later validation sweeps; the reaper removes the container within seconds."""
    serving = S3Uri(cls_env.serving, f"{cls_env.name}/")
    sm = candidates.save(candidates.classifier_module(), str(tmp_path / "good"))
    cand = candidates.stage_candidate(s3, serving, sm, GOLDEN_CLS, str(tmp_path))
    p = subprocess.Popen([sys.executable, "-m", "cli", "validate", cls_env.name, "--image", standin_image,
                          "--candidate", cand, "--config", cls_env.config, "--deadline", "600"],
                         env={**os.environ, **cls_env.env, "PYTHONPATH": ROOT}, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mine = {"label": f"{sweep_mod.PID}={p.pid}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not docker_engine.containers.list(all=True, ignore_removed=True, filters=mine):
        time.sleep(0.2)
    [container] = docker_engine.containers.list(all=True, filters=mine)
    labels = container.labels
    assert labels[sweep_mod.HOST_ID] == sweep_mod.host_id() and float(labels[sweep_mod.EXPIRES]) > time.time()
    p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    while docker_engine.containers.list(all=True, ignore_removed=True, filters=mine) and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    took = time.monotonic() - t0
    print(f"\ncontainer of the SIGKILLed validator removed {took:.1f}s after the kill")
    assert docker_engine.containers.list(all=True, ignore_removed=True, filters=mine) == [], "still there 60 s after the SIGKILL"
    assert took < 10


def test_a_container_ends_itself_at_its_expiry(docker_engine, standin_image, tmp_path, monkeypatch):
    """The container's own command is wrapped in `timeout`: with the reaper gone too (a lost host),
    the server still ends at the expiry, and any sweep then removes it."""
    from serving.launchers import DockerLauncher
    monkeypatch.setenv(sweep_mod.TTL_ENV, "4")
    (tmp_path / "m").mkdir()  # no version yet: the server runs and waits for one
    launcher = DockerLauncher(standin_image, run_id="expiry-test", network="")
    server = launcher.start(str(tmp_path), "m")
    try:
        [name] = launcher._names
        c = docker_engine.containers.get(name)
        assert c.attrs["Config"]["Entrypoint"][:4] == ["timeout", "-k", "10s", "4s"]
        for reaper in launcher._reapers:  # the host is "lost": nothing removes the container
            reaper.kill()
            reaper.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c.reload()
            if c.status == "exited":
                break
            time.sleep(0.5)
        assert c.status == "exited", c.status
        assert c.attrs["State"]["ExitCode"] in (124, 137), c.attrs["State"]
        assert name in sweep_mod.sweep(docker_engine, ("validation",))  # expired: anyone may remove it
    finally:
        server.stop()
    assert not _exists(docker_engine, name)


def test_the_reaper_removes_a_container_created_after_its_owner_died(docker_engine, standin_image):
    """The reaper starts before the container exists; an owner killed with its create request still
    in flight leaves a container that appears afterwards: the reaper waits for it and removes it."""
    import threading
    name = f"tfsr-sweeptest-late-{uuid.uuid4().hex[:6]}"
    result = {}
    t = threading.Thread(target=lambda: result.update(why=sweep_mod.watch(
        docker_engine, name, pid=_dead_pid(), pid_start=None, expires=None, settle_s=15.0)))
    t.start()
    try:
        time.sleep(3)  # the "in-flight" create lands after the reaper saw its owner gone
        # the low-level create: docker-py's containers.create reads the container back, which 404s when
        # the reaper was faster than that read (seen on a busy machine)
        docker_engine.api.create_container(standin_image, entrypoint=["sleep", "300"], name=name, labels=_labels())
        t.join(timeout=30)
        assert not t.is_alive() and result["why"] == "owner gone", result
        assert not _exists(docker_engine, name), "the late container was left behind"
    finally:
        for c in docker_engine.containers.list(all=True, ignore_removed=True, filters={"name": f"^/{name}$"}):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:  # the reaper got there first
                pass
