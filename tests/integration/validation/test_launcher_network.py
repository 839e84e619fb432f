"""The docker launcher's network mode (``TFS_RELEASE_SERVING_NETWORK``), for a validator that runs
in a container (the compose stack's worker image): the serving container joins that network,
publishes no host port, gets the model copied in (nothing bind-mounted from a path the engine's
host does not have), answers by container name, and is removed on stop. The sweep keeps servers
whose containerised validator still runs. Real Docker engine and the stand-in image."""
from __future__ import annotations

import time
import uuid

import pytest

from validation import launchers
from validation.launchers import LABEL, NETWORK_ENV, ROLE, DockerLauncher

pytestmark = pytest.mark.docker

PROBE = """
import json, time, urllib.request
deadline = time.time() + 90
while True:
    try:
        print(urllib.request.urlopen("http://%s:8501/v1/models/m", timeout=3).read().decode()); break
    except Exception as exc:
        if time.time() > deadline: raise
        time.sleep(0.5)
"""


def test_network_from_environment(monkeypatch):
    monkeypatch.delenv(NETWORK_ENV, raising=False)
    assert DockerLauncher("img", run_id="r").network == ""  # default: host ports on 127.0.0.1
    monkeypatch.setenv(NETWORK_ENV, "stack-net")
    assert DockerLauncher("img", run_id="r").network == "stack-net"
    assert DockerLauncher("img", run_id="r", network="").network == ""
    assert launchers.make("docker", image="img", run_id="r").network == "stack-net"


@pytest.fixture
def network(docker_engine):
    net = docker_engine.networks.create(f"tfsr-test-{uuid.uuid4().hex[:8]}")
    yield net.name
    net.remove()


def test_serving_container_on_the_validators_network(docker_engine, standin_image, network, tmp_path):
    from tests.integration.validation.candidates import classifier_module, save
    save(classifier_module(), str(tmp_path / "models" / "m" / "1"))
    launcher = DockerLauncher(standin_image, run_id=f"net-{uuid.uuid4().hex[:6]}", network=network)
    server = launcher.start(str(tmp_path / "models"), "m")
    name = server.host
    try:
        assert (server.rest_port, server.grpc_port) == (8501, 8500)
        c = docker_engine.containers.get(name)
        assert network in c.attrs["NetworkSettings"]["Networks"]
        assert not c.attrs["HostConfig"].get("PortBindings"), "no host port in network mode"
        assert c.attrs["Mounts"] == [], "the model is copied in, not bind-mounted"
        # another container on the network (as the validator in the worker image) reaches it by name
        out = docker_engine.containers.run(standin_image, entrypoint=["python", "-c", PROBE % name],
                                           network=network, remove=True).decode()
        assert '"state": "AVAILABLE"' in out and '"version": "1"' in out, out
        listing = c.exec_run(["sh", "-c", "ls -l /models/m/1/saved_model.pb"]).output.decode()
        assert listing.startswith("-r--r--r--"), listing
    finally:
        server.stop()
    assert not docker_engine.containers.list(all=True, filters={"name": name})


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
