"""`airflow dags test release__shapes-classifier` end to end: real SeaweedFS (S3 settings only from
the Airflow connection), the real Docker engine running the stand-in serving image, real Model
Garden export of the demo trainer's cached checkpoint, Airflow 3 with SQLite in a temp home."""
from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.docker]
DAG_ID = f"release__{MODEL}"
TASKS = ("newest_checkpoint", "is_new", "export", "validate", "publish", "clean_staging")


def _versions(af):
    from registry.s3 import S3Uri
    from registry.versions import list_versions
    return list_versions(af.s3, S3Uri.parse(f"s3://{af.serving}/{MODEL}/"))


def _staged(af) -> list[str]:
    """Staged candidates that still hold objects (SeaweedFS may list an emptied folder)."""
    from registry.s3 import list_objects
    base = f"{MODEL}/_staging/"
    runs = {o["Key"][len(base):].split("/", 1)[0] for o in list_objects(af.s3, af.serving, base)}
    return [f"s3://{af.serving}/{base}{run}/" for run in sorted(runs)]


def _newest_checkpoint(af) -> str:
    from registry.checkpoints import newest_complete
    from registry.s3 import S3Uri
    return newest_complete(af.s3, S3Uri.parse(f"s3://{af.training}/{MODEL}/checkpoints/")).uri


def test_new_checkpoint_is_published_then_a_second_run_skips(airflow_env):
    af = airflow_env
    assert _versions(af) == []
    ckpt = _newest_checkpoint(af)

    p, run = af.dags_test(DAG_ID)
    print(f"\nfirst run (export, validate, publish): {p.seconds:.1f}s")
    assert run["state"] == "success", (run, p.stdout[-4000:], p.stderr[-4000:])
    assert run["tasks"] == {t: "success" for t in TASKS}
    out = p.stdout + p.stderr  # task logs: the step commands' own lines are in them
    assert "[export]" in out and "[validate]" in out and "tfs-release validate shapes-classifier: exit 0" in out

    [v] = _versions(af)
    assert v["version"] == 1 and v["checkpoint"] == ckpt and v["verdict"] == "passed"
    assert v["files"] > 0 and v["bytes"] > 0
    report_key = v["report"].split(f"s3://{af.serving}/", 1)[1]
    assert af.s3.head_object(Bucket=af.serving, Key=report_key)["ContentLength"] > 0
    assert af.s3.head_object(Bucket=af.serving, Key=f"{MODEL}/_manifests/1.json")["ContentLength"] > 0

    published = af.xcom(DAG_ID, run["run_id"], "publish")
    assert published["version"] == 1
    # signed with the key of the model's signing connection; a replica trusting it verifies it
    assert published["signed_by"] == v["signed_by"] == af.signing[2]
    from registry.s3 import S3Uri
    from registry.versions import verify
    from registry.signing import trusted_keys
    check = verify(af.s3, S3Uri.parse(f"s3://{af.serving}/{MODEL}/"), trusted=trusted_keys([af.signing[1]]))
    assert check.ok and check.signatures[1]["verified"], check.to_json()
    verdict = af.xcom(DAG_ID, run["run_id"], "validate")
    assert verdict["passed"] is True and verdict["report"] == v["report"]
    assert "report_url" not in verdict  # presigned: carries the access key id and a signature
    assert _staged(af) == []  # published: its staged candidate is removed
    assert af.xcom(DAG_ID, run["run_id"], "clean_staging")["removed"] == verdict["candidate"]
    [event] = af.asset_events(f"s3://{af.serving}/{MODEL}")
    assert event["extra"]["version"] == 1 and event["extra"]["checkpoint"] == ckpt
    assert event["extra"]["signed_by"] == af.signing[2]
    assert event["dag_id"] == DAG_ID and event["run_id"] == run["run_id"]

    p, run = af.dags_test(DAG_ID)
    print(f"second run (nothing new): {p.seconds:.1f}s")
    assert run["state"] == "success", (run, p.stdout[-4000:], p.stderr[-4000:])
    assert run["tasks"] == {"newest_checkpoint": "success", "is_new": "success",
                            "export": "skipped", "validate": "skipped", "publish": "skipped",
                            "clean_staging": "success"}
    assert af.xcom(DAG_ID, run["run_id"], "newest_checkpoint")["published_as"] == 1
    assert [x["version"] for x in _versions(af)] == [1]
    assert len(af.asset_events(f"s3://{af.serving}/{MODEL}")) == 1

    _assert_no_secret_in_airflow(af)


def test_forced_dry_run_publishes_nothing_then_force_publishes_again(airflow_env):
    af = airflow_env
    before = [x["version"] for x in _versions(af)]
    assert before, "runs after test_new_checkpoint_is_published_then_a_second_run_skips"

    p, run = af.dags_test(DAG_ID, conf={"force": True, "dry_run": True, "launcher": "docker"})
    print(f"\nforced dry run (export, validate, no publish): {p.seconds:.1f}s")
    assert run["state"] == "success", (run, p.stdout[-4000:], p.stderr[-4000:])
    assert run["tasks"] == {"newest_checkpoint": "success", "is_new": "success", "export": "success",
                            "validate": "success", "publish": "skipped", "clean_staging": "success"}
    assert af.xcom(DAG_ID, run["run_id"], "validate")["passed"] is True
    assert [x["version"] for x in _versions(af)] == before
    exported = af.xcom(DAG_ID, run["run_id"], "export")
    assert _staged(af) == [exported["candidate"]]  # not published: kept for staging_keep_days
    assert af.xcom(DAG_ID, run["run_id"], "clean_staging")["removed"] is None
    assert len(af.asset_events(f"s3://{af.serving}/{MODEL}")) == 1

    p, run = af.dags_test(DAG_ID, conf={"force": True})
    print(f"forced run (the same checkpoint again): {p.seconds:.1f}s")
    assert run["state"] == "success", (run, p.stdout[-4000:], p.stderr[-4000:])
    assert run["tasks"] == {t: "success" for t in TASKS}
    versions = _versions(af)
    assert [x["version"] for x in versions] == before + [before[-1] + 1]
    assert versions[-1]["checkpoint"] == versions[0]["checkpoint"]  # same checkpoint, next version
    assert [e["extra"]["version"] for e in af.asset_events(f"s3://{af.serving}/{MODEL}")] == [1, 2]
    assert _staged(af) == [exported["candidate"]]  # the dry run's is kept, this run's is removed

    _assert_no_secret_in_airflow(af)


def test_a_bad_param_is_refused_before_any_run(airflow_env):
    af = airflow_env
    runs = af.runs(DAG_ID)
    p = af.run("dags", "test", DAG_ID, "--conf", '{"launcher": "kubernetes"}')
    assert p.returncode != 0
    assert "Invalid input for param launcher: 'kubernetes' is not one of ['docker', 'process']" in p.stderr + p.stdout
    assert af.runs(DAG_ID) == runs


def _assert_no_secret_in_airflow(af):
    """The S3 secret key and the signing key never reach XCom, task logs, or the CLI output."""
    with open(af.signing[0]) as fh:  # the private key's base64 body (its longest line)
        pem_line = max(fh.read().splitlines(), key=len)
    assert os.path.getsize(os.path.join(af.home, "airflow-cli.log")) > 0
    for secret in (af.env_secret, pem_line):
        for (value,) in af.query("SELECT value FROM xcom"):
            assert secret not in str(value)
        for folder, _, files in os.walk(af.home):
            for f in files:
                if f.endswith((".log", ".json")) and "airflow.db" not in f:
                    with open(os.path.join(folder, f), errors="replace") as fh:
                        assert secret not in fh.read(), os.path.join(folder, f)
