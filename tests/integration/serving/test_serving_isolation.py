"""The temporary serving container gets as little as possible (real Docker engine, stand-in image):
a read-only root filesystem, a non-root user, no environment but the model's name and path, and no
network egress: it is alone on an internal network of its own, the validator reaches it there, and
a connection from inside to another container (or anywhere off the host) fails while the same
connection from an ordinary container succeeds. In the network mode (a validator in a container)
the validator's container is connected to that internal network instead, and the model is copied
into an anonymous volume that goes with the container."""
from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from serving.launchers import SERVING_USER, DockerLauncher

from tests.integration.validation import candidates

pytestmark = pytest.mark.docker

CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("CONNECTED")
except Exception as exc:
    print("FAILED", type(exc).__name__, exc)
"""
LISTEN_PORT = 8088


@pytest.fixture(scope="module")
def listener(docker_engine, standin_image):
    """A TCP server in a container on Docker's default bridge: 'somewhere else' a server must not reach."""
    c = docker_engine.containers.run(standin_image, entrypoint=["python", "-m", "http.server", str(LISTEN_PORT)],
                                     detach=True, labels={"tfsr.test": "egress-listener"})
    try:
        c.reload()
        yield c.attrs["NetworkSettings"]["IPAddress"]
    finally:
        c.remove(force=True)


def _connect_from(container, host: str, port: int) -> str:
    return container.exec_run(["python", "-c", CONNECT, host, str(port)]).output.decode().strip()


def _wait_available(host: str, port: int, model: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/v1/models/{model}", timeout=3) as r:
                body = json.loads(r.read())
            if body["model_version_status"][0]["state"] == "AVAILABLE":
                return body
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} never served {model}")
        time.sleep(0.5)


def test_serving_container_is_read_only_non_root_and_cannot_reach_out(docker_engine, standin_image, listener,
                                                                      tmp_path, s3_env):
    candidates.save(candidates.classifier_module(), str(tmp_path / "models" / "m" / "1"))
    launcher = DockerLauncher(standin_image, run_id=f"iso-{uuid.uuid4().hex[:6]}", network="")
    server = launcher.start(str(tmp_path / "models"), "m")
    name = server.describe.split("(")[-1].rstrip(")")
    try:
        c = docker_engine.containers.get(name)
        hc, cfg = c.attrs["HostConfig"], c.attrs["Config"]
        assert hc["ReadonlyRootfs"] is True
        assert cfg["User"] == SERVING_USER and SERVING_USER.split(":")[0] != "0"
        assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
        assert not hc.get("PortBindings"), "nothing published: the internal network is the only way in"
        # no credentials: the validator's own environment has the S3 keys (s3_env), the server none
        env = dict(e.split("=", 1) for e in cfg["Env"])
        assert not [k for k in env if k.startswith(("AWS_", "AIRFLOW", "TFS_RELEASE_"))], env
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(c.attrs)
        # alone on an internal network of its own
        networks = c.attrs["NetworkSettings"]["Networks"]
        assert list(networks) == [name], networks
        net = docker_engine.networks.get(name)
        assert net.attrs["Internal"] is True
        assert [x.name for x in (net.containers or [])] == [name]

        # the validator (this process, on the engine's host) reaches it on that network
        assert server.host == networks[name]["IPAddress"] and (server.rest_port, server.grpc_port) == (8501, 8500)
        assert _wait_available(server.host, server.rest_port, "m")["model_version_status"][0]["version"] == "1"

        # inside: the server's user, a root filesystem it cannot write, a writable /tmp
        out = c.exec_run(["sh", "-c", "id -u; touch /x 2>&1; touch /models/m/1/x 2>&1; touch /tmp/x && echo tmp-ok"]
                         ).output.decode()
        assert out.splitlines()[0] == SERVING_USER.split(":")[0], out
        assert out.count("Read-only file system") == 2 and "tmp-ok" in out, out

        # egress: another container (on the default bridge) answers an ordinary container ...
        probe = docker_engine.containers.run(standin_image, entrypoint=["sleep", "60"], detach=True,
                                             labels={"tfsr.test": "egress-control"})
        try:
            assert _connect_from(probe, listener, LISTEN_PORT) == "CONNECTED"
        finally:
            probe.remove(force=True)
        # ... but not the serving container; nor does an address off this host
        assert _connect_from(c, listener, LISTEN_PORT).startswith("FAILED"), "egress to another container"
        assert _connect_from(c, "192.0.2.1", 443).startswith("FAILED"), "egress off the host"
    finally:
        server.stop()
    assert not docker_engine.containers.list(all=True, filters={"name": f"^/{name}$"})
    assert not docker_engine.networks.list(names=[name]), "the internal network goes with the container"


def test_network_mode_connects_the_validators_container_and_copies_the_model_in(docker_engine, standin_image,
                                                                                tmp_path):
    """As in the compose stack: the validator runs in a container on a network of its own (here a
    `holder` container stands in for it); the server is not on that network."""
    candidates.save(candidates.classifier_module(), str(tmp_path / "models" / "m" / "1"))
    stack_net = docker_engine.networks.create(f"tfsr-test-{uuid.uuid4().hex[:8]}")
    holder = docker_engine.containers.run(standin_image, entrypoint=["sleep", "300"], detach=True,
                                          network=stack_net.name, labels={"tfsr.test": "validator"})
    launcher = DockerLauncher(standin_image, run_id=f"isonet-{uuid.uuid4().hex[:6]}", network=stack_net.name,
                              own_container=holder.id)
    try:
        server = launcher.start(str(tmp_path / "models"), "m")
        name = server.describe.split("(")[-1].rstrip(")")
        try:
            c = docker_engine.containers.get(name)
            assert c.attrs["HostConfig"]["ReadonlyRootfs"] is True and c.attrs["Config"]["User"] == SERVING_USER
            assert list(c.attrs["NetworkSettings"]["Networks"]) == [name], "not on the validator's network"
            assert docker_engine.networks.get(name).attrs["Internal"] is True
            mounts = c.attrs["Mounts"]
            assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/models")], mounts
            volume = mounts[0]["Name"]
            # the validator's container reaches the server at its address on the internal network
            holder.reload()
            assert name in holder.attrs["NetworkSettings"]["Networks"]
            probe = (f"import json, time, urllib.request\nfor _ in range(240):\n    try:\n"
                     f"        print(urllib.request.urlopen('http://{server.host}:8501/v1/models/m', timeout=3)"
                     f".read().decode()); break\n    except Exception: time.sleep(0.5)\n")
            out = holder.exec_run(["python", "-c", probe]).output.decode()
            assert '"state": "AVAILABLE"' in out, out
            listing = c.exec_run(["sh", "-c", "ls -l /models/m/1/saved_model.pb"]).output.decode()
            assert listing.startswith("-r--r--r--"), listing
            # and the server cannot reach the validator's network (nor the validator there)
            stack_ip = holder.attrs["NetworkSettings"]["Networks"][stack_net.name]["IPAddress"]
            assert _connect_from(c, stack_ip, 22).startswith("FAILED")
        finally:
            server.stop()
        assert not docker_engine.containers.list(all=True, filters={"name": f"^/{name}$"})
        assert not docker_engine.networks.list(names=[name])
        assert not [v for v in docker_engine.volumes.list() if v.name == volume], "its model volume goes too"
        holder.reload()
        assert list(holder.attrs["NetworkSettings"]["Networks"]) == [stack_net.name]
    finally:
        holder.remove(force=True)
        stack_net.remove()


def test_a_validator_container_that_is_not_on_this_engine_is_a_clear_error(docker_engine, standin_image, tmp_path):
    from serving.launchers import LauncherError
    candidates.save(candidates.classifier_module(), str(tmp_path / "models" / "m" / "1"))
    launcher = DockerLauncher(standin_image, run_id="isonone", network="stack-net", own_container="no-such-container")
    with pytest.raises(LauncherError, match="unset TFS_RELEASE_SERVING_NETWORK when the validator runs on the engine"):
        launcher.start(str(tmp_path / "models"), "m")
    assert not docker_engine.containers.list(all=True, filters={"label": "tfs-release.run=isonone"})
    assert not docker_engine.networks.list(filters={"label": "tfs-release.run=isonone"})


def test_a_sigkilled_validator_leaves_no_network_behind(docker_engine, standin_image, tmp_path):
    """The reaper that removes a killed validator's container removes its internal network too (a
    leftover network per kill would use up the engine's address pools)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    candidates.save(candidates.classifier_module(), str(tmp_path / "models" / "m" / "1"))
    code = (f"import sys, time; sys.path.insert(0, {ROOT!r})\n"
            "from serving.launchers import DockerLauncher\n"
            f"s = DockerLauncher({standin_image!r}, run_id='isokill', network='').start({str(tmp_path / 'models')!r}, 'm')\n"
            "print('STARTED', s.describe, flush=True)\ntime.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    try:
        line = p.stdout.readline()
        assert line.startswith("STARTED"), line
        name = line.rsplit("(", 1)[1].strip().rstrip(")")
        assert docker_engine.networks.list(names=[name]) and docker_engine.containers.list(filters={"name": f"^/{name}$"})
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and (docker_engine.networks.list(names=[name]) or
                                          docker_engine.containers.list(all=True, filters={"name": f"^/{name}$"})):
        time.sleep(0.2)
    took = time.monotonic() - t0
    print(f"\ncontainer and network of the SIGKILLed validator gone {took:.1f}s after the kill")
    assert not docker_engine.containers.list(all=True, filters={"name": f"^/{name}$"})
    assert not docker_engine.networks.list(names=[name]), "its internal network is still there"
