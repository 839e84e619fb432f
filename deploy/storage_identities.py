#!/usr/bin/env python3
"""Object-storage identities of the compose stack: each service gets only what it needs.

  admin     S3_ACCESS_KEY / S3_SECRET_KEY: the object store's root. Used only by the store itself
            and the one-shot ``s3-init`` (buckets, and with MinIO the identities below); no
            long-running service has it.
  pipeline  S3_PIPELINE_ACCESS_KEY / S3_PIPELINE_SECRET_KEY: Airflow's ``aws_default`` connection
            (the release DAGs and their steps). Read and list the training bucket (checkpoints);
            read, list, write and delete in the serving bucket (staging, claims, versions,
            manifests, reports, tombstones, retention). No bucket administration.
  sync      S3_SYNC_ACCESS_KEY / S3_SYNC_SECRET_KEY: the model-sync sidecar next to production TF
            Serving. Read and list the serving bucket, nothing else: a compromised or buggy sidecar
            cannot change what is published.
  relay     S3_RELAY_ACCESS_KEY / S3_RELAY_SECRET_KEY: the checkpoint relay. Read and list the
            training bucket (checkpoints) and the serving bucket (is a checkpoint published?); it
            writes nothing.

A training job writing checkpoints should get an identity of its own (write on training only); the
stack's e2e test writes them with the admin keys, from outside the stack.

SeaweedFS (docker-compose.local.yaml) takes the identities from a static ``-s3.config`` file, which
the seaweedfs image renders at start from those variables (this file, run as a script:
``storage_identities.py seaweedfs OUT``). MinIO (docker-compose.yaml) gets users and the policies of
``minio_policies`` from the s3-init job. Stdlib only: it runs inside the seaweedfs image too.
"""
from __future__ import annotations

import json
import os
import sys

IDENTITIES = {"admin": ("S3_ACCESS_KEY", "S3_SECRET_KEY"),
              "pipeline": ("S3_PIPELINE_ACCESS_KEY", "S3_PIPELINE_SECRET_KEY"),
              "sync": ("S3_SYNC_ACCESS_KEY", "S3_SYNC_SECRET_KEY"),
              "relay": ("S3_RELAY_ACCESS_KEY", "S3_RELAY_SECRET_KEY")}
BUCKETS = {"training": ("S3_TRAINING_BUCKET", "training"), "serving": ("S3_SERVING_BUCKET", "serving")}


class IdentityError(ValueError):
    """A key is missing, or two identities share an access key."""


def buckets(env: dict[str, str]) -> tuple[str, str]:
    return tuple(env.get(var) or default for var, default in BUCKETS.values())  # type: ignore[return-value]


def keys(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    """identity -> (access key, secret key), every one present and distinct."""
    out, missing = {}, []
    for name, (ak, sk) in IDENTITIES.items():
        if not env.get(ak) or not env.get(sk):
            missing += [v for v in (ak, sk) if not env.get(v)]
        out[name] = (env.get(ak, ""), env.get(sk, ""))
    if missing:
        raise IdentityError(f"set {', '.join(missing)} (see .env.example): each service has its own keys")
    access = [a for a, _ in out.values()]
    if len(set(access)) != len(access):
        raise IdentityError("the admin, pipeline, sync and relay identities need four different access keys")
    return out


def actions(training: str, serving: str) -> dict[str, list[str]]:
    """SeaweedFS actions per identity (``Action:bucket`` limits an action to one bucket)."""
    return {"admin": ["Admin", "Read", "List", "Tagging", "Write"],
            "pipeline": [f"Read:{training}", f"List:{training}",
                         f"Read:{serving}", f"List:{serving}", f"Write:{serving}", f"Tagging:{serving}"],
            "sync": [f"Read:{serving}", f"List:{serving}"],
            "relay": [f"Read:{training}", f"List:{training}", f"Read:{serving}", f"List:{serving}"]}


def seaweedfs_config(env: dict[str, str]) -> dict:
    """The ``-s3.config`` document for SeaweedFS."""
    training, serving = buckets(env)
    acts = actions(training, serving)
    return {"identities": [{"name": name, "credentials": [{"accessKey": ak, "secretKey": sk}], "actions": acts[name]}
                           for name, (ak, sk) in keys(env).items()]}


def minio_policies(training: str, serving: str) -> dict[str, dict]:
    """IAM policies for MinIO (and the shape of what to grant on AWS S3): pipeline, sync and relay."""
    def arns(bucket):
        return [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    read = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]
    write = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
             "s3:ListBucketMultipartUploads"]
    return {
        "pipeline": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": read, "Resource": arns(training)},
            {"Effect": "Allow", "Action": read + write, "Resource": arns(serving)}]},
        "sync": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": read, "Resource": arns(serving)}]},
        "relay": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": read, "Resource": arns(training) + arns(serving)}]},
    }


def write_private(path: str, doc: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "seaweedfs":
        print("usage: storage_identities.py seaweedfs OUT.json   (keys from S3_* variables)", file=sys.stderr)
        return 2
    try:
        doc = seaweedfs_config(dict(os.environ))
    except IdentityError as exc:
        print(f"storage identities: {exc}", file=sys.stderr)
        return 2
    write_private(argv[1], doc)
    training, serving = buckets(dict(os.environ))
    print(f"storage identities: {', '.join(i['name'] for i in doc['identities'])} "
          f"(training bucket {training!r}, serving bucket {serving!r})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
