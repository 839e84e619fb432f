"""plugins/tfs_release_airflow/step_command.py against a fake step command (a real subprocess that
behaves like `tfs-release <step> ... --result FILE`): results, exit codes, reasons, environment,
and termination of the step when the task is interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "plugins"))
from tfs_release_airflow.step_command import StepFailed, StepProcess, public, run_step, step_env  # noqa: E402

S3_ENV = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "AKIDTEST",
          "AWS_SECRET_ACCESS_KEY": "s3cr3t-never-logged", "AWS_REGION": "us-east-1"}

FAKE = """\
#!{python}
# behaves like tfs-release: BEHAVIOUR comes from the model name
import json, os, sys, time
argv = sys.argv[1:]
step, model = argv[0], argv[1]
result = argv[argv.index("--result") + 1]
with open(os.environ["TFS_RELEASE_FAKE_RECORD"], "w") as fh:
    json.dump({{"argv": argv, "env": dict(os.environ), "pid": os.getpid()}}, fh)
print("INFO step starting", file=sys.stderr, flush=True)
def write(obj):
    with open(result, "w") as fh:
        json.dump(obj, fh)
if model == "ok":
    print("s3://serving/ok/_staging/run-1/")
    write({{"candidate": "s3://serving/ok/_staging/run-1/", "report_url": "http://x?X-Amz-Signature=abc",
           "exit_code": 0}})
    sys.exit(0)
if model == "verdict":
    print("tfs-release validate: 1 check(s) failed: golden: top-1 0.33 < 0.9", file=sys.stderr)
    write({{"passed": False, "reason": "1 check(s) failed: golden: top-1 0.33 < 0.9",
           "checks": [{{"name": "golden", "passed": False}}], "report_url": "http://x?sig", "exit_code": 1}})
    sys.exit(1)
if model == "bad":
    print("tfs-release export: no complete checkpoint under s3://t/bad/ (ckpt-2: missing shard)", file=sys.stderr)
    write({{"error": "no complete checkpoint under s3://t/bad/ (ckpt-2: missing shard)", "type": "CheckpointError",
           "exit_code": 2}})
    sys.exit(2)
if model == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: boom", file=sys.stderr)
    sys.exit(3)
if model == "silent":
    sys.exit(0)
if model == "slow":
    import signal
    def bye(*_):
        open(os.environ["TFS_RELEASE_FAKE_RECORD"] + ".terminated", "w").close()
        sys.exit(143)
    signal.signal(signal.SIGTERM, bye)
    print("ready", flush=True)
    time.sleep(60)
if model == "stubborn":  # ignores SIGTERM, and leaves a helper process in its group
    import signal, subprocess
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.environ["TFS_RELEASE_FAKE_RECORD"] + ".helper", "w") as fh:
        fh.write(str(helper.pid))
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    path = tmp_path / "tfs-release"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    record = tmp_path / "record.json"
    monkeypatch.setenv("TFS_RELEASE_FAKE_RECORD", str(record))  # allow-listed prefix
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_DB", "postgres://user:pw@db/x")

    def run(model, *args):
        return run_step(str(path), "export", model, *args, config="/cfg/models.yaml", s3_env=S3_ENV,
                        cwd=str(tmp_path))

    run.record = lambda: json.loads(record.read_text())
    run.record_path = record
    return run


def test_success_returns_the_result_without_secrets(fake):
    out = fake("ok", "--checkpoint", "s3://t/ok/ckpt-1")
    assert out == {"candidate": "s3://serving/ok/_staging/run-1/", "exit_code": 0}
    rec = fake.record()
    assert rec["argv"][:4] == ["export", "ok", "--checkpoint", "s3://t/ok/ckpt-1"]
    assert rec["argv"][4:6] == ["--config", "/cfg/models.yaml"] and rec["argv"][6] == "--result"
    assert not any("s3cr3t" in a for a in rec["argv"])  # credentials only in the environment
    assert {k: rec["env"][k] for k in S3_ENV} == S3_ENV
    assert "AIRFLOW_CONN_OTHER_DB" not in rec["env"]


def test_failed_check_raises_with_the_one_line_reason_and_keeps_the_verdict(fake):
    with pytest.raises(StepFailed) as err:
        fake("verdict")
    e = err.value
    assert e.exit_code == 1 and e.reason == "1 check(s) failed: golden: top-1 0.33 < 0.9"
    assert "exit 1, a check failed" in str(e) and e.reason in str(e)
    assert e.result["checks"] == [{"name": "golden", "passed": False}] and "report_url" not in e.result


def test_bad_input_raises_with_the_error(fake):
    with pytest.raises(StepFailed) as err:
        fake("bad")
    assert err.value.exit_code == 2
    assert err.value.reason == "no complete checkpoint under s3://t/bad/ (ckpt-2: missing shard)"
    assert "bad input" in str(err.value)


def test_crash_without_result_uses_the_last_output_line(fake):
    with pytest.raises(StepFailed) as err:
        fake("crash")
    assert err.value.exit_code == 3 and err.value.reason == "RuntimeError: boom" and err.value.result is None


def test_exit_zero_without_result_is_a_failure(fake):
    with pytest.raises(StepFailed, match="wrote no result file"):
        fake("silent")


def test_output_goes_to_the_log(fake, caplog):
    caplog.set_level("INFO", logger="tfs_release_airflow.step_command")
    fake("ok")
    text = caplog.text
    assert "[export] INFO step starting" in text and "exit 0" in text
    assert "s3cr3t" not in text


def test_interrupted_task_terminates_the_step(fake):
    """What Airflow does on kill/timeout: an exception raised in the task's main thread by a signal."""
    class Killed(Exception):
        pass

    def handler(*_):
        raise Killed()

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(2)
    t0 = time.monotonic()
    try:
        with pytest.raises(Killed):
            fake("slow")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - t0 < 30
    pid = fake.record()["pid"]
    assert os.path.exists(str(fake.record_path) + ".terminated")  # it got SIGTERM (cleanup runs)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_step_env_drops_other_secrets_and_adds_s3():
    env = step_env({"AWS_ACCESS_KEY_ID": "k"}, base={"PATH": "/bin", "AIRFLOW_CONN_X": "s",
                                                     "AIRFLOW_VAR_Y": "v", "AWS_ACCESS_KEY_ID": "old"})
    assert env == {"PATH": "/bin", "AWS_ACCESS_KEY_ID": "k"}


def test_public_drops_presigned_urls():
    assert public({"report": "s3://b/r/index.html", "report_url": "http://x?X-Amz-Signature=1"}) == \
        {"report": "s3://b/r/index.html"}



def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _wait_ready(proc: StepProcess):
    for line in proc.lines():
        if line == "ready":
            return


def test_stop_kills_a_step_that_ignores_sigterm_and_its_whole_group(fake, tmp_path):
    """on_kill's path: SIGTERM to the step's process group, SIGKILL after the grace."""
    proc = StepProcess([str(tmp_path / "tfs-release"), "export", "stubborn", "--result", str(tmp_path / "r.json")],
                       dict(os.environ), cwd=str(tmp_path)).start()
    _wait_ready(proc)
    helper = int(open(str(fake.record_path) + ".helper").read())
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # its own group, not the task's
    t0 = time.monotonic()
    proc.stop(grace_s=1.0)
    took = time.monotonic() - t0
    assert 0.9 < took < 5, took
    assert not proc.running()
    deadline = time.monotonic() + 5
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(helper), "the step's helper process outlived the stop"


def test_the_step_dies_with_its_task_process(fake, tmp_path):
    """A task process killed with SIGKILL (no on_kill runs): the kernel sends the step SIGTERM."""
    task = subprocess.Popen([sys.executable, "-c", TASK.format(plugins=os.path.join(ROOT, "plugins"),
                                                               fake=str(tmp_path / "tfs-release"),
                                                               result=str(tmp_path / "r.json"))],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    step_pid = int(task.stdout.readline())
    task.send_signal(signal.SIGKILL)
    task.wait()
    deadline = time.monotonic() + 10
    while _alive(step_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(step_pid), "the step outlived its task process"
    assert os.path.exists(str(fake.record_path) + ".terminated")  # SIGTERM: its cleanup ran


TASK = """
import os, sys
sys.path.insert(0, {plugins!r})
from tfs_release_airflow.step_command import StepProcess
proc = StepProcess([{fake!r}, "export", "slow", "--result", {result!r}], dict(os.environ)).start()
for line in proc.lines():
    if line == "ready":
        break
print(proc.pid, flush=True)
proc.wait()
"""
