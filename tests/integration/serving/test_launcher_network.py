"""The docker launcher's network mode (``TFS_RELEASE_SERVING_NETWORK``), for a validator that runs
in a container (the compose stack's worker image): the mode comes from the environment, and the
sweep keeps servers whose containerised validator still runs. How a server is placed in that mode
(its own internal network, the validator's container connected to it, the model copied in) is in
test_serving_isolation.py. Real Docker engine and the stand-in image."""
from __future__ import annotations

import time
import uuid

import pytest

from serving import launchers
from serving.launchers import LABEL, NETWORK_ENV, ROLE, DockerLauncher

pytestmark = pytest.mark.docker

def test_network_from_environment(monkeypatch):
    monkeypatch.delenv(NETWORK_ENV, raising=False)
    assert DockerLauncher("img", run_id="r").network == ""  # default: the validator is on the engine's host
    monkeypatch.setenv(NETWORK_ENV, "stack-net")
    assert DockerLauncher("img", run_id="r").network == "stack-net"
    assert DockerLauncher("img", run_id="r", network="").network == ""
    assert launchers.make("docker", image="img", run_id="r").network == "stack-net"


def test_sweep_keeps_servers_of_a_running_containerised_validator(docker_engine, standin_image):
    holder = docker_engine.containers.run(standin_image, entrypoint=["sleep", "300"], detach=True,
                                          labels={"tfsr.test": "holder"})
    name = f"tfsr-validate-sweeptest-{uuid.uuid4().hex[:8]}"
    labels = {LABEL: ROLE, "tfs-release.model": "m", "tfs-release.run": "sweeptest",
              "tfs-release.host": holder.id[:12], "tfs-release.host-id": "0" * 16, "tfs-release.pid": "7",
              "tfs-release.owner-container": holder.id[:12], "tfs-release.expires": str(int(time.time()) + 600)}
    docker_engine.containers.create(standin_image, name=name, labels=labels)
    try:
        launcher = DockerLauncher(standin_image, run_id="sweeper", network="")
        assert name not in launcher.sweep()  # its validator's container runs: in use
        holder.remove(force=True)
        assert name in launcher.sweep()  # the validator's container is gone: a leftover
    finally:
        holder.remove(force=True) if docker_engine.containers.list(all=True, filters={"id": holder.id}) else None
        for c in docker_engine.containers.list(all=True, filters={"name": name}):
            c.remove(force=True)
