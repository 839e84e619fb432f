"""The compose stack end to end, with the local override (images built here, never pulled):

- ``test_release_through_the_stack``: build (or reuse) the images, ``docker compose up``, wait for
  every health check, put a demo checkpoint in the training bucket: the store's webhook tells the
  checkpoint relay, whose Asset event starts the release DAG (nobody triggers it). The model's config (a test overlay, as a deployment would mount one) asks for
  approval: the run waits, the request reaches the alert channels (a real webhook receiver and SMTP
  server on the host's Docker bridge address), a decision over the REST API approves it, and the run
  ends once production TF Serving (the stand-in image here, one server for every model, fed by
  ``sync-all``) serves the new version and answers as in validation. Then the sync sidecar is
  stopped and the checkpoint released again: production never gets the new version, the rollout
  is rolled back (the previous version published again) within the deadline, the run fails and the
  alert says why; once the sidecar is back, production serves the rollback version. Then the same
  stack switches to CeleryExecutor (the "celery" profile: Redis and a Celery worker) and the next
  run (nothing new: it skips) runs on the Celery worker; ``docker compose down -v`` leaves nothing.
- ``test_sync_sidecar_killed_mid_download``: only object storage, the sync sidecar and TF Serving;
  kill the sidecar (SIGKILL) while it downloads a large version, restart it: TF Serving never
  lists the partial version, the volume never holds a partial ``<N>/``, the restart completes it.

Each test runs its own compose project (unique name, network, volumes, free ports), so they can run
beside other stacks. Real services: the Docker engine, SeaweedFS, Postgres, Airflow 3, the stand-in.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.docker]

MODEL = "shapes-classifier"
GOLDEN = os.path.join(ROOT, "demo", "golden", MODEL)


@pytest.fixture(scope="module")
def images(docker_engine):
    from deploy import compose, local_images
    compose.ensure_plugin()
    t0 = time.monotonic()
    tags = local_images.ensure_all()
    print(f"\nlocal images ready in {time.monotonic() - t0:.0f}s: {tags}")
    return tags


def _stack(tmp_path, name, extra_files=(), **settings):
    from deploy import compose
    project = f"tfsr-{name}-{uuid.uuid4().hex[:6]}"
    env = {**compose.local_env(project, signing_dir=str(tmp_path / f"signing-{name}")), **settings}
    path = compose.write_env_file(str(tmp_path / "compose.env"), env)
    return compose.Stack(project, path, files=(compose.DEFAULT_FILE, compose.LOCAL_FILE, *extra_files))


def _job_health_check_decides(stack) -> None:
    """The dag-processor's and triggerer's health check (docker/airflow-job-alive.py, one query and no
    Airflow import) says alive for the running job, and not for a stale heartbeat or another host."""
    for service, job in (("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")):
        def check(*env):
            args = [a for kv in env for a in ("--env", kv)]
            return stack.compose("exec", "-T", *args, service, "tfs-release-job-alive", job, check=False, timeout=60)
        ok = check()
        assert ok.returncode == 0 and f"{job} on " in ok.stdout and "alive" in ok.stdout, (ok.stdout, ok.stderr)
        threshold = {"DagProcessorJob": "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD",
                     "TriggererJob": "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"}[job]
        stale = check(f"{threshold}=0")
        assert stale.returncode == 1 and "last heartbeat" in stale.stderr, (stale.stdout, stale.stderr)
        other = check("HOSTNAME=not-this-host")
        assert other.returncode == 1 and f"no running {job} on not-this-host" in other.stderr, other.stderr


def _teardown(stack) -> None:
    t0 = time.monotonic()
    stack.down()
    left = stack.leftovers()
    print(f"compose down -v in {time.monotonic() - t0:.0f}s; leftovers {left}")
    assert left == {"containers": [], "volumes": [], "networks": []}, f"left behind: {left}"


def _s3(env):
    from registry.s3 import make_client
    return make_client(endpoint_url=f"http://127.0.0.1:{env['S3_PORT']}", aws_access_key_id=env["S3_ACCESS_KEY"],
                       aws_secret_access_key=env["S3_SECRET_KEY"], region_name="us-east-1")


def _http(method, url, body=None, token=None, timeout=30):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def _model_status(env) -> dict[str, str]:
    """version -> state, as production TF Serving reports it ({} while it serves nothing)."""
    try:
        body = _http("GET", f"http://127.0.0.1:{env['SERVING_REST_PORT']}/v1/models/{MODEL}", timeout=5)
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return {s["version"]: s["state"] for s in body.get("model_version_status", [])}


def _wait(pred, timeout, what, interval=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _wait_run(api, dag, run_id, token, timeout) -> dict:
    """The DAG run once it is final (success or failed), polled over the REST API."""
    def finished():
        try:
            r = _http("GET", f"{api}/api/v2/dags/{dag}/dagRuns/{run_id}", token=token)
        except (TimeoutError, ConnectionError, urllib.error.URLError):
            return None  # a busy API server that answers late is polled again, not a failed run
        return r if r["state"] in ("success", "failed") else None
    return _wait(finished, timeout, f"run {run_id}", interval=3)


def _golden_example():
    from PIL import Image
    with open(os.path.join(GOLDEN, "golden.json")) as fh:
        first = json.load(fh)["images"][0]
    return np.asarray(Image.open(os.path.join(GOLDEN, first["file"])).convert("RGB")), first["label"]


# The test's additions to the models config, mounted into every service that reads the config (a
# deployment would mount its own the same way; step containers get its text from the Airflow side).
OVERLAY_IN_STACK = "/opt/tfs-release/test.overlay.yaml"
CONFIRM_DEADLINE_S = 60
TEST_OVERLAY = f"""
models:
  {MODEL}:
    production:
      endpoints: [{{rest: "http://serving:8501", grpc: "serving:8500"}}]
      confirm_deadline_s: {CONFIRM_DEADLINE_S}
    approval: required
    approval_timeout_s: 1800
    signing_conn_id: tfs_release_signing   # as compose.overlay.yaml: model-sync serves only signed versions
    alerts: {{slack_conn_id: slack_webhook_default, smtp_conn_id: smtp_default, email_to: [ml-oncall@example.com]}}
"""
READS_CONFIG = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                "airflow-worker", "model-sync", "checkpoint-relay")


def _test_services(tmp_path) -> str:
    """A compose file on top: the overlay mounted, and the host's alert receivers reachable."""
    overlay = tmp_path / "test.overlay.yaml"
    overlay.write_text(TEST_OVERLAY)
    overlay.chmod(0o644)  # read by the images' own users
    lines = ["services:"]
    for svc in READS_CONFIG:
        lines += [f"  {svc}:", '    extra_hosts: ["host.docker.internal:host-gateway"]',
                  f"    volumes: ['{overlay}:{OVERLAY_IN_STACK}:ro']"]
    path = tmp_path / "test-services.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _bridge_gateway() -> str:
    """The host's address on Docker's default bridge (what host-gateway resolves to): the alert
    receivers listen there, never on a public interface."""
    return subprocess.run(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _task_states(api, dag, run_id, token) -> dict[str, str]:
    tis = _http("GET", f"{api}/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances", token=token)
    return {t["task_id"]: t["state"] for t in tis["task_instances"]}


def _approve(api, dag, run_id, token, comment) -> int:
    """Approve the run's request over the REST API (as a person would) until `approve` succeeds;
    returns how many requests were answered: more than 1 when Airflow lost a decision (the race the
    task's retries cover, dags/model_release.py) and a retry asked again."""
    answered, deadline = set(), time.monotonic() + 900
    while time.monotonic() < deadline:
        tis = _http("GET", f"{api}/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances", token=token)["task_instances"]
        [ti] = [t for t in tis if t["task_id"] == "approve"]
        if ti["state"] == "success":
            return len(answered)
        assert ti["state"] not in ("failed", "upstream_failed", "skipped"), {t["task_id"]: t["state"] for t in tis}
        if ti["state"] == "awaiting_input" and ti["try_number"] not in answered:
            time.sleep(5)  # a person takes a moment; a faster answer only makes the race likelier
            out = _http("PATCH", f"{api}/api/v2/dags/{dag}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
                                 "approve/-1/hitlDetails",
                        {"chosen_options": ["Approve"], "params_input": {"comment": comment}}, token=token)
            assert out["chosen_options"] == ["Approve"], out
            answered.add(ti["try_number"])
            if len(answered) > 1:
                print(f"run {run_id}: Airflow lost the first decision; approve's retry asked again")
        time.sleep(2)
    raise AssertionError(f"run {run_id}: approve did not succeed within 900 s (answered {sorted(answered)})")


def _volume_dir(stack, volume="models") -> str:
    name = f"{stack.project}_{volume}"
    out = subprocess.run(["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", name],
                         capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(out, MODEL)


def test_release_through_the_stack(images, tmp_path):
    from demo.alert_sinks import WEBHOOK_TOKEN, AlertSinks
    from registry.s3 import S3Uri
    from registry.versions import load_manifests
    t_start = time.monotonic()
    sinks = AlertSinks(str(tmp_path / "alerts"), host=_bridge_gateway()).start()
    stack = _stack(tmp_path, "e2e", extra_files=(_test_services(tmp_path),),
                   TFSR_CONFIG_OVERLAY=OVERLAY_IN_STACK,
                   SLACK_WEBHOOK_URL=f"http://host.docker.internal:{sinks.webhook_port}/services/{WEBHOOK_TOKEN}",
                   SMTP_HOST="host.docker.internal", SMTP_PORT=str(sinks.smtp_port), SMTP_STARTTLS="false")
    env = stack.env
    try:
        up_s = stack.up(timeout=600)
        _job_health_check_decides(stack)
        api = f"http://127.0.0.1:{env['AIRFLOW_API_PORT']}"
        token = _http("POST", f"{api}/auth/token", {"username": env["AIRFLOW_ADMIN_USER"],
                                                    "password": env["AIRFLOW_ADMIN_PASSWORD"]})["access_token"]
        dag = f"release__{MODEL}"

        def parsed():
            try:
                return "approve" in {t["task_id"] for t in _http("GET", f"{api}/api/v2/dags/{dag}/tasks",
                                                                  token=token)["tasks"]}
            except urllib.error.HTTPError:
                return None
        _wait(parsed, 180, f"the DAG {dag} to be parsed (with the overlay's approval task)")
        # unpausing starts no scheduled run (the daily cron starts at its next point)
        _http("PATCH", f"{api}/api/v2/dags/{dag}", {"is_paused": False}, token=token)

        # a training job's checkpoint lands in the training bucket: the store's webhook tells the
        # checkpoint relay, which announces it (Asset event): the release starts, nobody triggers it
        from demo.checkpoint_cache import checkpoint_files, get
        folder = get("classification")
        s3 = _s3(env)
        files = sorted(checkpoint_files(folder), key=lambda f: f == "checkpoint")  # the state file last
        for f in files:
            s3.upload_file(os.path.join(folder, f), "training", f"{MODEL}/checkpoints/{f}")
        t_trigger = time.monotonic()
        runs = _wait(lambda: _http("GET", f"{api}/api/v2/dags/{dag}/dagRuns", token=token)["dag_runs"], 120,
                     "a release run started by the checkpoint relay's Asset event")
        [run] = runs
        assert run["run_type"] == "asset_triggered", run
        run_id = run["dag_run_id"]
        print(f"checkpoint uploaded -> release run created in {time.monotonic() - t_trigger:.1f}s (relay)")
        relay_log = stack.logs("checkpoint-relay", tail=40)
        assert f"checkpoint relay {MODEL}: new complete checkpoint" in relay_log, relay_log

        # approval: the run waits before publish; the request is announced on both channels
        assert sinks.wait(webhooks=1, mails=1, timeout=900), (sinks.webhooks, sinks.mails,
                                                               _task_states(api, dag, run_id, token))
        assert "approve" in sinks.webhooks[0].payload["text"].lower(), sinks.webhooks[0].payload
        assert load_manifests(s3, S3Uri.parse(f"s3://serving/{MODEL}/")) == {}  # nothing published while it waits
        assert _approve(api, dag, run_id, token, "golden set reviewed (TICKET-7)") in (1, 2, 3)

        result = _wait_run(api, dag, run_id, token, 900)
        states = _task_states(api, dag, run_id, token)
        if result["state"] != "success":
            logs = {s: stack.logs(s, tail=60) for s in ("airflow-scheduler", "airflow-triggerer")}
            pytest.fail(f"release run {result['state']}: {states}\n{logs}")
        run_s = time.monotonic() - t_trigger
        runs = _http("GET", f"{api}/api/v2/dags/{dag}/dagRuns", token=token)["dag_runs"]
        print(f"release runs: {[(r['dag_run_id'], r['state']) for r in runs]}; ours: {states}")
        assert [r["dag_run_id"] for r in runs] == [run_id], runs
        assert states["approve"] == states["publish"] == "success", states
        # the stack names its serving as production: the run ended only once the triggerer saw it
        # AVAILABLE there and the smoke test against it passed
        assert states["wait_for_rollout"] == states["confirm_rollout"] == states["released"] == "success", states

        manifests = load_manifests(s3, S3Uri.parse(f"s3://serving/{MODEL}/"))
        assert len(manifests) == 1, f"one checkpoint, one version: {sorted(manifests)}"
        version, manifest = next(iter(manifests.items()))
        assert str(manifest["source_checkpoint"]).find(f"s3://training/{MODEL}/checkpoints/ckpt-") >= 0, manifest
        assert manifest["validation"]["verdict"] == "passed", manifest["validation"]
        assert manifest["validation"]["approval"]["comment"] == "golden set reviewed (TICKET-7)", manifest
        # signed in the stack (airflow-init's tfs_release_signing connection); model-sync, which trusts
        # only that key, is what serves it below
        from registry.signing import trusted_keys
        [kid] = trusted_keys([env["SIGNING_PUBLIC_KEY_FILE"]]).keys
        assert manifest["signed_by"]["key_id"] == kid, manifest.get("signed_by")
        rollout = json.loads(s3.get_object(Bucket="serving", Key=f"{MODEL}/_rollouts/{version}.json")["Body"].read())
        assert rollout["outcome"] == "confirmed" and rollout["smoke"][0]["passed"], rollout
        version = str(version)

        # production TF Serving (stand-in image) serves it from the model config file sync-all wrote
        _wait(lambda: _model_status(env).get(version) == "AVAILABLE", 180,
              f"production TF Serving to report version {version} AVAILABLE")
        image, label = _golden_example()
        assert _predict_label(env, version, image) == label
        synced = os.listdir(_volume_dir(stack))
        assert version in synced and not [n for n in synced if n.startswith(".tmp-")], synced
        config_file = os.path.join(os.path.dirname(_volume_dir(stack)), "models.config")
        assert f'name: "{MODEL}"' in open(config_file).read()

        # nothing the steps started outlives them: the network holds only the stack's containers
        net = json.loads(subprocess.run(["docker", "network", "inspect", env["TFSR_NETWORK"]], check=True,
                                        capture_output=True, text=True).stdout)[0]
        ours = {r["Name"] for r in stack.ps()}
        strays = {c["Name"] for c in net["Containers"].values()} - ours
        assert not strays, f"step or validation containers left on the network: {strays}"

        # a rollout production cannot take (its sync sidecar stopped): rolled back and alerted
        t_rb = time.monotonic()
        stack.compose("stop", "model-sync")
        sent = len(sinks.webhooks)
        run_id = _http("POST", f"{api}/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": {"force": True}},
                       token=token)["dag_run_id"]
        assert _approve(api, dag, run_id, token, "retry of the same checkpoint") in (1, 2, 3)
        result = _wait_run(api, dag, run_id, token, 900)
        states = _task_states(api, dag, run_id, token)
        if states.get("publish") != "success":
            log = [ln for ln in stack.logs("airflow-scheduler", tail=400).splitlines() if "approve" in ln]
            pytest.fail(f"rollback run: {states}\n" + "\n".join(log[-40:]))
        assert result["state"] == "failed", states
        assert states["confirm_rollout"] == "failed", states
        assert states["released"] == "upstream_failed", states
        v2 = int(version) + 1
        rec = json.loads(s3.get_object(Bucket="serving", Key=f"{MODEL}/_rollouts/{v2}.json")["Body"].read())
        assert rec["outcome"] == "rolled back" and rec["rollback_to"] == int(version), rec
        assert rec["rollback_version"] == v2 + 1 and f"version {v2} NOT_FOUND" in rec["reason"], rec
        assert rec["deadline_s"] == CONFIRM_DEADLINE_S and rec["recheck_s"] == 10, rec
        assert sinks.wait(webhooks=sent + 1, timeout=120), sinks.webhooks
        alert = "\n".join(w.payload["text"] for w in sinks.webhooks[sent:])
        assert "confirm_rollout" in alert and f"version {v2}" in alert, alert
        rb_s = time.monotonic() - t_rb
        # the sidecar back: production serves the rollback version (the first version's model)
        stack.compose("start", "model-sync")
        _wait(lambda: _model_status(env).get(str(v2 + 1)) == "AVAILABLE", 180,
              f"production to serve the rollback version {v2 + 1}")
        assert _predict_label(env, str(v2 + 1), image) == label

        # scale-out: the README's switch (CeleryExecutor + the "celery" profile: Redis and a Celery
        # worker) on the same stack; a second run (nothing new: it skips) runs on the Celery worker
        t_celery = time.monotonic()
        celery_up_s = stack.use_celery().up(timeout=600)
        assert {"redis", "airflow-worker"} <= {r["Service"] for r in stack.ps()}
        worker_host = subprocess.run(["docker", "inspect", "--format", "{{.Config.Hostname}}",
                                      stack.container("airflow-worker")],
                                     capture_output=True, text=True, check=True).stdout.strip()
        run2 = _http("POST", f"{api}/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": {}},
                     token=token)["dag_run_id"]
        result2 = _wait_run(api, dag, run2, token, 600)
        tis2 = _http("GET", f"{api}/api/v2/dags/{dag}/dagRuns/{run2}/taskInstances", token=token)["task_instances"]
        states2 = {t["task_id"]: t["state"] for t in tis2}
        if result2["state"] != "success":
            logs = {s: stack.logs(s, tail=60) for s in ("airflow-scheduler", "airflow-worker")}
            pytest.fail(f"celery run {result2['state']}: {states2}\n{logs}")
        assert states2 == {"newest_checkpoint": "success", "is_new": "success", "export": "skipped",
                           "validate": "skipped", "approve": "skipped", "publish": "skipped",
                           "wait_for_rollout": "skipped", "confirm_rollout": "skipped", "released": "skipped",
                           "clean_staging": "success"}, states2
        hosts = {t["task_id"]: t["hostname"] for t in tis2 if t["state"] == "success"}
        assert hosts and set(hosts.values()) == {worker_host}, (hosts, worker_host)
        assert len(load_manifests(s3, S3Uri.parse(f"s3://serving/{MODEL}/"))) == 3  # nothing new published
        celery_s = time.monotonic() - t_celery
    finally:
        _teardown(stack)
        sinks.stop()
    wall = time.monotonic() - t_start
    print(f"compose e2e: up+healthy {up_s:.0f}s, approved release run {run_s:.0f}s, rolled-back release "
          f"{rb_s:.0f}s; CeleryExecutor switch (recreate + healthy {celery_up_s:.0f}s) and a skip run "
          f"{celery_s:.0f}s; total wall {wall:.0f}s")


def _predict_label(env, version: str, image) -> int:
    out = _http("POST", f"http://127.0.0.1:{env['SERVING_REST_PORT']}/v1/models/{MODEL}/versions/{version}:predict",
                {"signature_name": "serving_default", "instances": [image.tolist()]})
    pred = out["predictions"][0]
    probs = np.asarray(pred["probs"] if isinstance(pred, dict) else pred)
    assert probs.shape == (3,) and abs(probs.sum() - 1) < 1e-3
    return int(np.argmax(probs))


SLOW_SYNC = """
services:
  model-sync:
    cpus: 0.25
"""


def _stage_and_publish(s3, sm_dir, run_id, env):
    """Staged and published as the pipeline would: signed with the stack's key (model-sync trusts it)."""
    import base64
    from registry.publish import publish
    from registry.s3 import S3Uri
    from registry.signing import SigningKey
    from registry.staging import stage
    serving = S3Uri.parse(f"s3://serving/{MODEL}/")
    cand = stage(s3, serving, sm_dir, run_id=run_id)
    signer = SigningKey.from_pem(base64.b64decode(env["SIGNING_KEY_PEM_B64"]), source="the stack's key")
    return publish(s3, serving, MODEL, cand, allow_unvalidated=True, signer=signer).version


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_sync_sidecar_killed_mid_download(images, tmp_path):
    from tests.integration.validation.candidates import classifier_module, save
    override = tmp_path / "slow-sync.yaml"  # a slower sidecar: a wide window to kill it mid-download
    override.write_text(SLOW_SYNC)
    stack = _stack(tmp_path, "sync", extra_files=(str(override),))
    env = stack.env
    try:
        stack.up("s3", "s3-init", "model-sync", "serving", timeout=300)
        s3 = _s3(env)
        sm = save(classifier_module(), str(tmp_path / "sm"))
        v1 = _stage_and_publish(s3, sm, "small", env)
        _wait(lambda: _model_status(env).get(str(v1)) == "AVAILABLE", 120, f"version {v1} AVAILABLE")

        # a large version: the same model with 600 MB of assets
        with open(os.path.join(sm, "assets", "padding.bin") if os.path.isdir(os.path.join(sm, "assets"))
                  else _mk(os.path.join(sm, "assets", "padding.bin")), "wb") as fh:
            for _ in range(600):
                fh.write(os.urandom(1 << 20))
        v2 = _stage_and_publish(s3, sm, "large", env)
        dest = _volume_dir(stack)
        tmp_dir = os.path.join(dest, f".tmp-{v2}")
        _wait(lambda: os.path.isdir(tmp_dir), 120, f"the sidecar to start downloading into {tmp_dir}", interval=0.05)
        time.sleep(1.0)
        assert not os.path.exists(os.path.join(dest, str(v2))), "the version completed before the kill"
        t_kill = time.monotonic()
        subprocess.run(["docker", "kill", "--signal", "KILL", stack.container("model-sync")], check=True,
                       capture_output=True)
        print(f"killed the sync sidecar mid-download; .tmp-{v2} holds "
              f"{sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(tmp_dir) for f in fs)} bytes")

        # while it is down: no partial <N>/, production serves only the complete version
        for _ in range(8):
            assert not os.path.exists(os.path.join(dest, str(v2)))
            assert _model_status(env) == {str(v1): "AVAILABLE"}, _model_status(env)
            time.sleep(0.5)

        stack.compose("start", "model-sync")
        seen = []

        def serving_v2():
            st = _model_status(env)
            seen.append(st)
            if str(v2) in st:  # listed only once the folder is complete
                assert os.path.isdir(os.path.join(dest, str(v2)))
            return st.get(str(v2)) == "AVAILABLE"
        _wait(serving_v2, 300, f"version {v2} AVAILABLE after the restart", interval=0.5)
        print(f"restarted: version {v2} AVAILABLE {time.monotonic() - t_kill:.0f}s after the kill")

        # the volume: only complete versions, each file as its manifest says; no temporary leftovers
        names = os.listdir(dest)
        assert not [n for n in names if n.startswith((".tmp-", ".trash-"))], names
        assert sorted(n for n in names if n.isdigit()) == sorted([str(v1), str(v2)])
        manifest = json.loads(s3.get_object(Bucket="serving", Key=f"{MODEL}/_manifests/{v2}.json")["Body"].read())
        files = {f["path"]: f for f in manifest["files"]}
        on_disk = {os.path.relpath(os.path.join(r, f), os.path.join(dest, str(v2)))
                   for r, _, fs in os.walk(os.path.join(dest, str(v2))) for f in fs}
        assert on_disk == set(files)
        for rel, f in files.items():
            p = os.path.join(dest, str(v2), rel)
            assert os.path.getsize(p) == f["size"] and _sha256(p) == f["sha256"], rel
    finally:
        _teardown(stack)


def _mk(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
