"""Rollout confirmation against a real production loop: the sync sidecar (`tfs-release sync`, a
process) fills a model_base_path that a TF-Serving stand-in process serves (latest policy, polling).

A validated version is confirmed (every endpoint AVAILABLE, smoke answers as in validation); a
version production cannot load (it needs an op TF Serving's binary lacks) is rolled back: the last
good version is published again as N+1, production loads that, and both records say so."""
import json
import os
import subprocess
import sys

import pytest

from registry.s3 import S3Uri
from tests.conftest import ROOT

from . import candidates

pytestmark = pytest.mark.docker


def _stage(env, s3, tmp_path, module, tag):
    sm = candidates.save(module, str(tmp_path / f"sm-{tag}"))
    return candidates.stage_candidate(s3, S3Uri(env.serving, f"{env.name}/"), sm, env.golden, str(tmp_path))


@pytest.fixture
def production(gate_env, tmp_path, s3):
    """A sync sidecar (interval 1 s) into tmp_path/prod/<model>, served by a stand-in process; the
    model's config names it as its production endpoint."""
    import yaml
    from serving.launchers import ProcessLauncher
    dest = tmp_path / "prod"
    (dest / gate_env.name).mkdir(parents=True)
    env = {**os.environ, **gate_env.env, "PYTHONPATH": ROOT}
    sync = subprocess.Popen([sys.executable, "-m", "cli", "sync", gate_env.name, "--dest", str(dest / gate_env.name),
                             "--interval", "1", "--config", gate_env.config], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sync.log", "w"))
    server = None
    try:
        def start():  # TF Serving starts once its model has a version
            nonlocal server
            server = ProcessLauncher().start(str(dest), gate_env.name)
            url = f"http://{server.host}:{server.rest_port}"
            cfg = yaml.safe_load(open(gate_env.config))
            cfg["models"][gate_env.name]["production"] = {
                "endpoints": [{"rest": url, "grpc": f"{server.host}:{server.grpc_port}"}], "confirm_deadline_s": 60}
            with open(gate_env.config, "w") as fh:
                yaml.safe_dump(cfg, fh)
            return server
        gate_env.start_production = start
        yield gate_env
    finally:
        sync.terminate()
        sync.wait(10)
        if server is not None:
            server.stop()


def test_confirmed_then_unloadable_version_is_rolled_back(production, s3, tmp_path, standin_image):
    env = production
    v1 = _stage(env, s3, tmp_path, candidates.classifier_module(), "v1")
    p = env.cli("validate", env.name, "--candidate", v1, "--image", standin_image, "--json", timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    env.cli("publish", env.name, "--candidate", v1, check=0)
    env.start_production()
    p = env.cli("confirm", env.name, "--version", "1", "--poll", "0.5", "--json", timeout=300)
    rec = json.loads(p.stdout)
    assert p.returncode == 0 and rec["outcome"] == "confirmed", rec
    assert rec["endpoints"][0]["state"] == "AVAILABLE" and rec["smoke"][0]["passed"], rec
    assert "answers as in validation" in rec["smoke"][0]["detail"]
    # a version production's TF Serving cannot load: EagerPyFunc is not in the serving binary
    bad = _stage(env, s3, tmp_path, candidates.classifier_module(py_op=True), "v2")
    assert json.loads(env.cli("publish", env.name, "--candidate", bad, "--unvalidated", "--json",
                              check=0).stdout)["version"] == 2
    p = env.cli("confirm", env.name, "--version", "2", "--poll", "0.5", "--json", timeout=300)
    rec = json.loads(p.stdout)
    assert p.returncode == 1 and rec["outcome"] == "rolled back", rec
    assert "TF Serving failed to load it" in rec["reason"] and "PyFunc" in rec["reason"], rec["reason"]
    assert rec["rollback_to"] == 1 and rec["rollback_version"] == 3
    assert rec["rollback"]["outcome"] == "confirmed", rec["rollback"]
    # the records, the manifest of the rollback and `versions` agree
    vs = {v["version"]: v for v in json.loads(env.cli("versions", env.name, "--json", check=0).stdout)["versions"]}
    assert (vs[1]["rollout"], vs[2]["rollout"], vs[3]["rollout"]) == ("confirmed", "rolled back", "confirmed")
    assert vs[3]["rollback_of"] == 1
    from registry import layout
    m3 = json.loads(s3.get_object(Bucket=env.serving, Key=layout.manifest_key(S3Uri(env.serving, f"{env.name}/"), 3))["Body"].read())
    assert m3["rollback_reason"].startswith("rollout of version 2 failed: ")
    # production serves the rollback (a copy of 1), never the bad version
    from production.observe import version_status
    ep = rec["endpoints"][0]["endpoint"]
    assert version_status({"rest": ep}, env.name, 3)["state"] == "AVAILABLE"
    assert version_status({"rest": ep}, env.name, 2)["state"] == "END"
    # confirm and rollback again: idempotent (the records decide; nothing new is published)
    again = json.loads(env.cli("confirm", env.name, "--version", "2", "--json", check=1).stdout)
    assert again["already"] and again["state"] == "rolled back" and again["rollback_version"] == 3, again
    back = json.loads(env.cli("rollback", env.name, "--json", check=0).stdout)
    assert back["already"] and back["served"] == 3 and back["rollback_of"] == 1, back
    assert len(json.loads(env.cli("versions", env.name, "--json", check=0).stdout)["versions"]) == 3


def test_production_behind_tls_and_a_token(gate_env, s3, tmp_path, standin_image):
    """Production as many teams run it: REST only through an https ingress that wants a bearer token,
    gRPC over TLS (TF Serving's --ssl_config_file) with an internal CA. Without credentials the
    rollout cannot be confirmed and the record says why (HTTP 401, what to set); with the credentials
    an Airflow connection would give (TFS_RELEASE_PRODUCTION_AUTH) it is confirmed and the smoke test
    passes over both."""
    import time
    import urllib.request

    import yaml

    from tests.integration.validation.tls_proxy import TokenProxy, make_certs
    from tfs_api.endpoint_auth import EndpointAuth
    from serving.launchers import free_port, server_env
    env = gate_env
    v1 = _stage(env, s3, tmp_path, candidates.classifier_module(), "v1")
    p = env.cli("validate", env.name, "--candidate", v1, "--image", standin_image, "--json", timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    env.cli("publish", env.name, "--candidate", v1, check=0)
    dest = tmp_path / "prod" / env.name
    env.cli("sync", env.name, "--dest", str(dest), "--once", check=0)

    certs = make_certs(tmp_path)
    ssl_file = tmp_path / "ssl.config"
    ssl_file.write_text(f"server_key: {json.dumps(open(certs['key']).read())}\n"
                        f"server_cert: {json.dumps(open(certs['cert']).read())}\nclient_verify: false\n")
    rest, grpc_port = free_port(), free_port()
    while grpc_port == rest:
        grpc_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "standin.server", f"--port={grpc_port}", f"--rest_api_port={rest}", "--host=127.0.0.1",
         f"--model_name={env.name}", f"--model_base_path={dest}", f"--ssl_config_file={ssl_file}"],
        env={**server_env(), "PYTHONPATH": ROOT}, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    proxy = None
    try:
        deadline = time.monotonic() + 120
        while True:  # the plain REST port stays inside (127.0.0.1): only the proxy is "production"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rest}/v1/models/{env.name}", timeout=2) as r:
                    if b"AVAILABLE" in r.read():
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        proxy = TokenProxy(rest, certs, token="t0ken")
        cfg = yaml.safe_load(open(env.config))
        cfg["models"][env.name]["production"] = {
            "endpoints": [{"rest": proxy.url}, {"grpc": f"localhost:{grpc_port}"}], "confirm_deadline_s": 3,
            "conn_id": "tfs_production"}
        with open(env.config, "w") as fh:
            yaml.safe_dump(cfg, fh)

        def confirm_fails(auth_env):
            p = env.cli("confirm", env.name, "--version", "1", "--poll", "0.5", "--on-failed", "alert", "--json",
                        timeout=120, env=auth_env)
            rec = json.loads(p.stdout)
            # production could not be observed: unknown, not failed (nothing would be rolled back)
            assert p.returncode == 1 and rec["outcome"] == "unknown", rec
            assert "could not be observed" in rec["reason"] and "confirm again" in rec["action"], rec
            rows = {r["endpoint"]: r for r in rec["endpoints"]}
            assert rows[f"grpc://localhost:{grpc_port}"]["state"] == "UNREACHABLE", rows  # no TLS client
            return rows[proxy.url]

        # nothing: the internal CA is not trusted (the error says where to give it)
        row = confirm_fails({})
        assert row["state"] == "UNREACHABLE" and "CERTIFICATE_VERIFY_FAILED" in row["error"], row
        assert "ca_bundle" in row["error"], row
        # the CA but no token: HTTP 401 from the ingress, and what to set
        ca_only = EndpointAuth.from_connection(login=None, password=None, where="test", extra={"ca_bundle": certs["ca"]})
        row = confirm_fails(ca_only.env())
        assert row["state"] == "ERROR" and "HTTP 401" in row["error"], row
        assert "production.conn_id" in row["error"] and "TFS_RELEASE_PRODUCTION_AUTH" in row["error"], row

        # the connection's settings: a bearer token and the internal CA, gRPC over TLS
        auth = EndpointAuth.from_connection(login=None, password=None, where="test",
                                            extra={"headers": {"Authorization": "Bearer t0ken"},
                                                   "ca_bundle": certs["ca"], "grpc_tls": True})
        p = env.cli("confirm", env.name, "--version", "1", "--poll", "0.5", "--deadline", "60", "--json",
                    timeout=300, env=auth.env())
        rec = json.loads(p.stdout)
        assert p.returncode == 0 and rec["outcome"] == "confirmed", rec
        assert [r["state"] for r in rec["endpoints"]] == ["AVAILABLE", "AVAILABLE"], rec
        assert all(s["passed"] and "answers as in validation" in s["detail"] for s in rec["smoke"]), rec["smoke"]
        assert "Bearer t0ken" in proxy.seen and "t0ken" not in p.stdout + p.stderr  # never in the output

        # the DAG's deferred wait: the trigger gets the same settings from the Airflow connection
        venv = subprocess.run([os.path.join(ROOT, "bin", "venv"), "airflow"], check=True, capture_output=True,
                              text=True).stdout.strip()
        conn = {"conn_type": "http", "extra": {"headers": {"Authorization": "Bearer t0ken"}, "ca_bundle": certs["ca"]}}
        probe_env = {k: v for k, v in os.environ.items()
                     if not k.startswith(("AIRFLOW", "AWS_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        probe_env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), AIRFLOW_CONN_TFS_PRODUCTION=json.dumps(conn))
        out = tmp_path / "trigger.json"
        probe = os.path.join(ROOT, "tests", "integration", "plugins", "rollout_trigger_probe.py")
        p = subprocess.run([os.path.join(venv, "bin", "python"), probe, str(out), "tfs_production", proxy.url,
                            env.name, "1"], env=probe_env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        r = json.loads(out.read_text())
        assert r["with_auth"]["outcome"] == "served" and "auth" in r["kwargs_keys"], r
        assert r["without_auth"]["outcome"] == "unknown", r  # not observed: never "failed"
        assert "CERTIFICATE_VERIFY_FAILED" in r["without_auth"]["endpoints"][0]["error"], r
    finally:
        if proxy is not None:
            proxy.stop()
        server.terminate()
        server.wait(20)
