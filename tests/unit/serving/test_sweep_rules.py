"""serving/sweep.py's decision (which leftover container may go) and its small helpers, on
hand-made label sets: the sweep never removes another host's live container."""
from __future__ import annotations

import os
import subprocess

import pytest

from serving import sweep as s

ME, OTHER = "a" * 16, "b" * 16
NOW = 1_000_000.0


def decide(labels, *, alive=(), running=None):
    return s.decide(labels, now=NOW, my_host_id=ME, my_hostname="me",
                    alive=lambda pid, start: pid in alive, container_running=lambda ref: (running or {}).get(ref))


@pytest.mark.parametrize("labels, alive, running, remove", [
    # this host: the owner's pid decides
    ({s.HOST_ID: ME, s.PID: "10", s.EXPIRES: str(NOW + 60)}, {10}, None, False),
    ({s.HOST_ID: ME, s.PID: "10", s.EXPIRES: str(NOW + 60)}, set(), None, True),
    # another host: never, however dead the same pid number looks here, until it expires
    ({s.HOST_ID: OTHER, s.PID: "10", s.EXPIRES: str(NOW + 60)}, set(), None, False),
    ({s.HOST_ID: OTHER, s.PID: "10", s.EXPIRES: str(NOW - 1)}, {10}, None, True),
    ({s.HOST_ID: OTHER, s.PID: "10"}, set(), None, False),   # no expiry: left for a human
    # expiry passed: gone even with a live owner here
    ({s.HOST_ID: ME, s.PID: "10", s.EXPIRES: str(NOW)}, {10}, None, True),
    # an owner container on this engine: running keeps it, stopped or gone frees it
    ({s.HOST_ID: OTHER, s.PID: "1", s.OWNER_CONTAINER: "c1", s.EXPIRES: str(NOW + 60)}, set(), {"c1": True}, False),
    ({s.HOST_ID: OTHER, s.PID: "1", s.OWNER_CONTAINER: "c1", s.EXPIRES: str(NOW + 60)}, set(), {"c1": False}, True),
    ({s.HOST_ID: OTHER, s.PID: "1", s.OWNER_CONTAINER: "c1", s.EXPIRES: str(NOW + 60)}, set(), {}, True),
    # labels of older releases (no host-id): the hostname says whether the pid is ours to check
    ({s.HOST: "me", s.PID: "10"}, set(), None, True),
    ({s.HOST: "me", s.PID: "10"}, {10}, None, False),
    ({s.HOST: "elsewhere", s.PID: "10"}, set(), None, False),
    # garbage labels: kept (nothing proves it is a leftover) unless this host's owner is unknown
    ({s.HOST_ID: ME, s.PID: "x", s.EXPIRES: "soon"}, set(), None, True),
])
def test_decide(labels, alive, running, remove):
    got, why = decide(labels, alive=alive, running=running)
    assert got is remove, why
    assert why


def test_owner_labels_name_this_process_and_the_expiry():
    labels = s.owner_labels("validation", ttl_s=90, now=NOW)
    assert labels[s.ROLE] == "validation" and labels[s.PID] == str(os.getpid())
    assert labels[s.HOST_ID] == s.host_id() and labels[s.EXPIRES] == str(int(NOW + 90))
    assert labels[s.PID_START] == s.proc_start(os.getpid())
    assert s.OWNER_CONTAINER not in labels
    assert s.owner_labels("step", ttl_s=1, owner_container="abc")[s.OWNER_CONTAINER] == "abc"


def test_pid_alive_tells_a_reused_pid_from_its_owner():
    assert s.pid_alive(os.getpid(), s.proc_start(os.getpid()))
    assert not s.pid_alive(os.getpid(), "1")  # same number, another start time: another process
    p = subprocess.Popen(["true"])
    p.wait()
    assert not s.pid_alive(p.pid)
    assert not s.pid_alive(0)


def test_ttl_from_env():
    assert s.ttl_from_env({}) == s.DEFAULT_TTL_S
    assert s.ttl_from_env({s.TTL_ENV: "120"}) == 120
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ValueError, match=s.TTL_ENV):
            s.ttl_from_env({s.TTL_ENV: bad})


def test_expiring_entrypoint_wraps_the_images_own():
    sh = ["/bin/sh", "-c", "exec server \"$@\"", "--"]
    assert s.expiring_entrypoint({"Entrypoint": sh}, 3600) == ["timeout", "-k", "10s", "3600s", *sh]
    assert s.expiring_entrypoint({"Entrypoint": "/usr/bin/tf_serving_entrypoint.sh"}, 5.7) == \
        ["timeout", "-k", "10s", "5s", "/usr/bin/tf_serving_entrypoint.sh"]
    assert s.expiring_entrypoint({"Entrypoint": None, "Cmd": ["x"]}, 60) is None
