#!/usr/bin/env python
"""Create the stack's buckets (S3_BUCKETS, space-separated) once the object store accepts writes.

The compose stack's init step with a local S3 server (SeaweedFS); with MinIO the `mc` image does
the same. Settings: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
Existing buckets are kept (it is safe to run at every `up`)."""
import os
import sys
import time

import boto3
import botocore.config


def main() -> int:
    buckets = os.environ.get("S3_BUCKETS", "training serving").split()
    c = boto3.client("s3", config=botocore.config.Config(s3={"addressing_style": "path"},
                                                         retries={"max_attempts": 1}))
    deadline, last = time.monotonic() + float(os.environ.get("S3_WAIT_S", "120")), None
    pending = list(buckets)
    while pending and time.monotonic() < deadline:
        b = pending[0]
        try:
            try:
                c.create_bucket(Bucket=b)
            except c.exceptions.BucketAlreadyOwnedByYou:
                pass
            # the S3 port answers before volumes are allocated: a write round trip proves it works
            c.put_object(Bucket=b, Key=".tfs-release-probe", Body=b"ok")
            c.delete_object(Bucket=b, Key=".tfs-release-probe")
            print(f"bucket {b}: ready", flush=True)
            pending.pop(0)
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(1)
    if pending:
        print(f"create-buckets: {pending} not writable at {os.environ.get('AWS_ENDPOINT_URL')}: {last}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
