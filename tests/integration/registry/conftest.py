"""Helpers that write what training and export write, so registry tests have real objects."""
from __future__ import annotations

import os

import pytest


def put_checkpoint(s3, bucket: str, prefix: str, step: int, *, shards: int = 1, skip_shards=(),
                   index: bool = True, size: int = 1000) -> None:
    if index:
        s3.put_object(Bucket=bucket, Key=f"{prefix}ckpt-{step}.index", Body=b"i" * 64)
    for s in range(shards):
        if s in skip_shards:
            continue
        s3.put_object(Bucket=bucket, Key=f"{prefix}ckpt-{step}.data-{s:05d}-of-{shards:05d}",
                      Body=bytes([step % 256]) * size)


def put_state(s3, bucket: str, prefix: str, latest: str, all_paths=()) -> None:
    lines = [f'model_checkpoint_path: "{latest}"'] + [f'all_model_checkpoint_paths: "{p}"' for p in all_paths]
    s3.put_object(Bucket=bucket, Key=f"{prefix}checkpoint", Body=("\n".join(lines) + "\n").encode())


def make_saved_model(path, *, files: int = 4, big: int = 0, seed: int = 0) -> str:
    """A SavedModel-shaped folder: saved_model.pb, variables/, assets/ (content is random bytes;
    the registry never parses it)."""
    import random
    rnd = random.Random(seed)
    os.makedirs(os.path.join(path, "variables"), exist_ok=True)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as fh:
        fh.write(rnd.randbytes(2048))
    with open(os.path.join(path, "variables", "variables.index"), "wb") as fh:
        fh.write(rnd.randbytes(512))
    with open(os.path.join(path, "variables", "variables.data-00000-of-00001"), "wb") as fh:
        fh.write(rnd.randbytes(big or 100_000))
    for i in range(files):
        with open(os.path.join(path, "assets", f"asset-{i}.txt"), "wb") as fh:
            fh.write(rnd.randbytes(1000 + i))
    return str(path)


@pytest.fixture
def staged(model_env, tmp_path):
    """Stage a SavedModel-shaped candidate through the CLI; returns its URI."""
    def _stage(**kw):
        d = make_saved_model(tmp_path / f"sm-{len(os.listdir(tmp_path))}", **kw)
        p = model_env.cli("stage", model_env.name, "--dir", d, check=0)
        return p.stdout.strip()
    return _stage


@pytest.fixture
def s3_proxy(seaweedfs):
    """A fault-injecting proxy in front of the session's SeaweedFS (see s3_proxy.py)."""
    from .s3_proxy import S3Proxy
    env = seaweedfs.env()
    with S3Proxy(env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) as proxy:
        yield proxy


def write_verdict(s3, model_env, candidate_uri: str, **fields) -> dict:
    """A verdict as `tfs-release validate` writes it for ``candidate_uri`` (passed, this model, this
    candidate's digest), with ``fields`` overriding any key."""
    import json
    from registry.staging import candidate_digest
    run = candidate_uri.rstrip("/").rsplit("/", 1)[-1]
    body = json.loads(s3.get_object(Bucket=model_env.serving,
                                    Key=f"{model_env.name}/_staging/{run}/candidate.json")["Body"].read())
    v = {"model": model_env.name, "run_id": run, "candidate": candidate_uri, "passed": True, "reason": None,
         "candidate_digest": candidate_digest(body["files"]),
         "report": f"s3://{model_env.serving}/{model_env.name}/_reports/{run}/index.html", **fields}
    s3.put_object(Bucket=model_env.serving, Key=f"{model_env.name}/_reports/{run}/verdict.json",
                  Body=json.dumps(v).encode())
    return v


def clone_candidate(s3, candidate_uri: str, run: str) -> str:
    """Another staged candidate with the same files (server-side copies, candidate.json last)."""
    import json
    from registry.s3 import S3Uri, list_objects
    src = S3Uri.parse(candidate_uri)
    dst = src.prefix.rstrip("/").rsplit("/", 1)[0] + f"/{run}/"
    for o in list_objects(s3, src.bucket, src.prefix):
        rel = o["Key"][len(src.prefix):]
        if rel != "candidate.json":
            s3.copy_object(CopySource={"Bucket": src.bucket, "Key": o["Key"]}, Bucket=src.bucket,
                           Key=dst + rel, MetadataDirective="COPY")
    body = json.loads(s3.get_object(Bucket=src.bucket, Key=src.prefix + "candidate.json")["Body"].read())
    body["run_id"] = run
    s3.put_object(Bucket=src.bucket, Key=dst + "candidate.json", Body=json.dumps(body).encode())
    return f"s3://{src.bucket}/{dst}"
