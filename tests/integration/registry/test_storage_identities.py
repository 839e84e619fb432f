"""The compose stack's object-storage identities (deploy/storage_identities.py) enforced by a real
SeaweedFS started with the same ``-s3.config`` the stack's seaweedfs image renders: the pipeline
identity reads training and writes serving (a real stage + publish through the CLI), the sync
identity only reads serving (a real ``sync --once`` works, a PUT, DELETE or publish is refused), and
neither can touch what it has no business with."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import botocore.exceptions
import pytest
import yaml

import services
from deploy import storage_identities as ids
from registry.s3 import make_client
from tests.conftest import ROOT

from .conftest import make_saved_model, put_checkpoint

MODEL = "shapes-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identities")
    suffix = uuid.uuid4().hex[:6]
    env = {"S3_ACCESS_KEY": f"admin{suffix}", "S3_SECRET_KEY": uuid.uuid4().hex,
           "S3_PIPELINE_ACCESS_KEY": f"pipeline{suffix}", "S3_PIPELINE_SECRET_KEY": uuid.uuid4().hex,
           "S3_SYNC_ACCESS_KEY": f"sync{suffix}", "S3_SYNC_SECRET_KEY": uuid.uuid4().hex,
           "S3_RELAY_ACCESS_KEY": f"relay{suffix}", "S3_RELAY_SECRET_KEY": uuid.uuid4().hex,
           "S3_TRAINING_BUCKET": f"training-{suffix}", "S3_SERVING_BUCKET": f"serving-{suffix}"}
    config = tmp / "s3-identities.json"
    ids.write_private(str(config), ids.seaweedfs_config(env))
    sw = services.start_seaweedfs(str(tmp / "data"), access_key=env["S3_ACCESS_KEY"],
                                  secret_key=env["S3_SECRET_KEY"], s3_config=str(config))
    try:
        sw.ids_env = env
        sw.clients = {name: make_client(endpoint_url=sw.endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                                        region_name="us-east-1")
                      for name, (ak, sk) in ids.keys(env).items()}
        for b in ids.buckets(env):
            sw.clients["admin"].create_bucket(Bucket=b)
        models = tmp / "models.yaml"
        training, serving = ids.buckets(env)
        models.write_text(yaml.safe_dump({"models": {MODEL: {
            "task": "classification", "checkpoints": f"s3://{training}/{MODEL}/checkpoints/",
            "serving": f"s3://{serving}/{MODEL}/"}}}))
        sw.models = str(models)
        yield sw
    finally:
        sw.stop()


def cli(store, identity: str, *args, timeout=300) -> subprocess.CompletedProcess:
    ak, sk = ids.keys(store.ids_env)[identity]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, "PYTHONPATH": ROOT,
           "AWS_ENDPOINT_URL": store.endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ak,
           "AWS_SECRET_ACCESS_KEY": sk}
    return subprocess.run([sys.executable, "-m", "cli", *args, "--config", store.models], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def denied(fn) -> bool:
    try:
        fn()
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


@pytest.fixture(scope="module")
def published(store, tmp_path_factory):
    """The pipeline's work with its own keys: list training's checkpoints, stage, publish version 1."""
    training, _ = ids.buckets(store.ids_env)
    put_checkpoint(store.clients["admin"], training, f"{MODEL}/checkpoints/", 3)  # as the training job
    sm = make_saved_model(tmp_path_factory.mktemp("sm") / "sm")
    out = {"checkpoints": cli(store, "pipeline", "checkpoints", MODEL, "--json")}
    out["stage"] = cli(store, "pipeline", "stage", MODEL, "--dir", sm)
    out["publish"] = cli(store, "pipeline", "publish", MODEL, "--candidate", out["stage"].stdout.strip(),
                         "--unvalidated", "--json")
    return out


def test_pipeline_reads_training_and_publishes_into_serving(store, published):
    training, serving = ids.buckets(store.ids_env)
    p = published["checkpoints"]
    assert p.returncode == 0 and json.loads(p.stdout)["newest"]["step"] == 3, p.stderr
    assert published["stage"].returncode == 0, published["stage"].stderr
    p = published["publish"]
    assert p.returncode == 0 and json.loads(p.stdout)["version"] == 1, p.stderr
    pipe = store.clients["pipeline"]
    assert denied(lambda: pipe.put_object(Bucket=training, Key=f"{MODEL}/checkpoints/ckpt-9.index", Body=b"x"))
    assert denied(lambda: pipe.delete_object(Bucket=training, Key=f"{MODEL}/checkpoints/ckpt-3.index"))
    assert denied(lambda: pipe.create_bucket(Bucket=f"other-{uuid.uuid4().hex[:6]}"))


def test_sync_only_reads_serving(store, published, tmp_path):
    training, serving = ids.buckets(store.ids_env)
    assert published["publish"].returncode == 0, published["publish"].stderr
    dest = tmp_path / "models" / MODEL
    p = cli(store, "sync", "sync", MODEL, "--dest", str(dest), "--once")
    assert p.returncode == 0, p.stderr
    assert (dest / "1" / "saved_model.pb").is_file()
    sync = store.clients["sync"]
    assert denied(lambda: sync.put_object(Bucket=serving, Key=f"{MODEL}/2/saved_model.pb", Body=b"evil"))
    assert denied(lambda: sync.delete_object(Bucket=serving, Key=f"{MODEL}/_manifests/1.json"))
    assert denied(lambda: sync.get_object(Bucket=training, Key=f"{MODEL}/checkpoints/ckpt-3.index"))
    assert denied(lambda: sync.list_objects_v2(Bucket=training))
    # the CLI says what is wrong when the sidecar's keys are used to publish
    cand = cli(store, "pipeline", "stage", MODEL, "--dir", make_saved_model(tmp_path / "sm2", seed=2))
    assert cand.returncode == 0, cand.stderr
    p = cli(store, "sync", "publish", MODEL, "--candidate", cand.stdout.strip(), "--unvalidated")
    assert p.returncode == 2 and "lack permission" in p.stderr, p.stderr
    admin = store.clients["admin"]
    assert admin.head_object(Bucket=serving, Key=f"{MODEL}/_manifests/1.json")
    assert "Contents" not in admin.list_objects_v2(Bucket=serving, Prefix=f"{MODEL}/_manifests/2")


def test_the_relay_reads_training_and_serving_and_writes_nothing(store, published):
    """What the checkpoint relay does (a sweep: list the training location, read the state file,
    ask whether the checkpoint is published) works with its keys; writing anywhere does not."""
    training, serving = ids.buckets(store.ids_env)
    assert published["publish"].returncode == 0, published["publish"].stderr
    from types import SimpleNamespace

    from registry.checkpoint_relay import Relay
    from registry.s3 import S3Uri
    relay = store.clients["relay"]
    sink = SimpleNamespace(latest=lambda uri: None, post=lambda uri, extra: {})
    m = SimpleNamespace(name=MODEL, checkpoints=S3Uri(training, f"{MODEL}/checkpoints/"), serving=S3Uri(serving, f"{MODEL}/"))
    r = Relay(relay, [m], sink)
    decided = r.sweep()
    assert r.stats["last_sweep_ok"] and decided[MODEL].action in ("fire", "record"), (r.stats, decided)
    assert denied(lambda: relay.put_object(Bucket=training, Key=f"{MODEL}/checkpoints/checkpoint", Body=b"x"))
    assert denied(lambda: relay.put_object(Bucket=serving, Key=f"{MODEL}/2/saved_model.pb", Body=b"evil"))
    assert denied(lambda: relay.delete_object(Bucket=serving, Key=f"{MODEL}/_manifests/1.json"))


def test_keys_must_be_set_and_distinct():
    env = {"S3_ACCESS_KEY": "a", "S3_SECRET_KEY": "s", "S3_PIPELINE_ACCESS_KEY": "p", "S3_PIPELINE_SECRET_KEY": "s",
           "S3_SYNC_ACCESS_KEY": "y", "S3_RELAY_ACCESS_KEY": "r", "S3_RELAY_SECRET_KEY": "s"}
    with pytest.raises(ids.IdentityError, match="S3_SYNC_SECRET_KEY"):
        ids.seaweedfs_config(env)
    with pytest.raises(ids.IdentityError, match="four different access keys"):
        ids.seaweedfs_config({**env, "S3_SYNC_SECRET_KEY": "s", "S3_SYNC_ACCESS_KEY": "p"})
