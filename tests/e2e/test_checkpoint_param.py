"""The release DAG's `checkpoint` trigger param must name a checkpoint inside the model's own
checkpoints prefix: `airflow dags test` with another model's (complete, existing) checkpoint fails
the `newest_checkpoint` task with the reason, and nothing is exported. Real SeaweedFS (settings only
from the Airflow connection), Airflow 3 with SQLite in a temp home; no training, no Docker."""
from __future__ import annotations

import glob
import json
import os
import uuid

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import AirflowEnv, migrated_home, sqlite_url

pytestmark = [pytest.mark.slow]
MODEL = "shapes-classifier"


def _put_checkpoint(s3, bucket: str, prefix: str, step: int) -> None:
    s3.put_object(Bucket=bucket, Key=f"{prefix}ckpt-{step}.index", Body=b"i" * 64)
    s3.put_object(Bucket=bucket, Key=f"{prefix}ckpt-{step}.data-00000-of-00001", Body=b"d" * 1000)


@pytest.fixture(scope="module")
def airflow_home(seaweedfs, airflow_bin, migrated_db, tmp_path_factory):
    from registry.s3 import make_client
    tmp = tmp_path_factory.mktemp("airflow-ckpt-param")
    suffix = uuid.uuid4().hex[:10]
    training, serving = f"training-{suffix}", f"serving-{suffix}"
    s3 = make_client(endpoint_url=seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key,
                     aws_secret_access_key=seaweedfs.secret_key, region_name="us-east-1")
    for b in (training, serving):
        s3.create_bucket(Bucket=b)
    _put_checkpoint(s3, training, f"{MODEL}/checkpoints/", 1)
    _put_checkpoint(s3, training, "other-model/checkpoints/", 5)  # complete, but another model's
    config = tmp / "models.yaml"
    config.write_text(yaml.safe_dump({"models": {MODEL: {
        "task": "classification", "checkpoints": f"s3://{training}/{MODEL}/checkpoints/",
        "serving": f"s3://{serving}/{MODEL}/", "golden": os.path.join(ROOT, "demo", "golden", MODEL),
        "experiment": "resnet_imagenet", "input_types": {"serving_default": "image_tensor"},
        "input_size": [64, 64]}}}))
    home = tmp / "airflow-home"
    home.mkdir()
    conn = {"conn_type": "aws", "login": seaweedfs.access_key, "password": seaweedfs.secret_key,
            "extra": {"endpoint_url": seaweedfs.endpoint, "region_name": "us-east-1"}}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_", "TFS_RELEASE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=os.path.join(ROOT, "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=os.path.join(ROOT, "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite_url(str(home)),
               AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn), TFS_RELEASE_CONFIG=str(config),
               TFS_RELEASE_SCHEDULES="off")
    af = AirflowEnv(airflow_bin, str(home), env, training, serving, str(config))
    migrated_home(home, migrated_db)
    af.s3 = s3
    return af


def test_a_checkpoint_outside_the_models_prefix_fails_the_first_task_with_the_reason(airflow_home):
    af = airflow_home
    other = f"s3://{af.training}/other-model/checkpoints/ckpt-5"
    p, run = af.dags_test(f"release__{MODEL}", {"checkpoint": other})
    assert run["state"] == "failed", run
    assert run["tasks"]["newest_checkpoint"] == "failed", run
    for t in ("is_new", "export", "validate", "publish"):
        assert run["tasks"].get(t) in (None, "upstream_failed", "skipped"), run
    reason = (f"checkpoint {other} is not inside this model's checkpoints prefix "
              f"s3://{af.training}/{MODEL}/checkpoints/")
    logs = "".join(open(f, errors="replace").read() for f in glob.glob(
        os.path.join(af.home, "logs", "**", "task_id=newest_checkpoint", "**", "*.log"), recursive=True))
    assert reason in p.stdout + p.stderr + logs, (p.stdout[-3000:], p.stderr[-3000:])
    from registry.s3 import list_objects
    assert not list(list_objects(af.s3, af.serving, f"{MODEL}/_staging/")), "nothing may be exported"
