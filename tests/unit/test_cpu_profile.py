"""tests/cpu_profile.py: what a process is, and a real process's CPU charged to its test file."""
import os
import subprocess
import sys

import pytest

from tests.cpu_profile import Sampler, kind_of


@pytest.mark.parametrize("cmd, container, worker, kind", [
    ("/venv/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))", False, None, "pytest workers"),
    ("/venv/bin/python -m cli validate m --candidate s3://x", False, "gw0", "tfs-release validate"),
    ("python -m cli export m", True, None, "tfs-release export (container)"),
    ("bash /repo/bin/tfs-release publish m", False, "gw1", "tfs-release publish"),
    ("/venv/bin/python /repo/demo/train.py --kind detection --out /tmp/x", False, None, "demo model training"),
    ("/venv/bin/python -B -c from multiprocessing.spawn import spawn_main", False, None, "demo model training"),
    ("/venv/bin/python -B -c from multiprocessing.spawn import spawn_main", False, "gw0", "python"),
    ("python -m standin.server --port=8500", True, None, "stand-in server (container)"),
    ("/venv-airflow/bin/python /venv-airflow/bin/airflow dags test release__m", False, "gw2", "airflow dags"),
    ("airflow worker -- LocalExecutor: <idle>", False, None, "airflow worker"),
    ("/usr/sbin/dockerd --host unix:///var/run/docker.sock", False, None, "dockerd"),
])
def test_kind_of(cmd, container, worker, kind):
    assert kind_of(cmd, container, worker) == kind


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_a_busy_subprocess_is_charged_to_its_test_file():
    s = Sampler()
    s.sample(first=True)
    env = {**os.environ, "PYTEST_CURRENT_TEST": "tests/fake/test_burn.py::test_it (call)"}
    p = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                          "while time.process_time() - t < 0.6: pass\nimport sys; sys.stdin.read()"],
                         env=env, stdin=subprocess.PIPE)
    try:
        import time
        deadline = time.monotonic() + 30
        while s.by_file["tests/fake/test_burn.py"] < 0.5:
            assert time.monotonic() < deadline, dict(s.by_file)
            s.sample()
            time.sleep(0.1)
    finally:
        p.communicate(b"")
    assert s.by_kind[os.path.basename(sys.executable)] >= 0.5, dict(s.by_kind)
    lines = s.report()
    assert lines[0].startswith("cpu: ") and any("tests/fake/test_burn.py" in ln for ln in lines)
