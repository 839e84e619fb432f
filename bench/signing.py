"""Benchmark: what signed versions cost (registry/signing.py), on our own SeaweedFS.

    PYTHONPATH=. $(bin/venv worker)/bin/python bench/signing.py [--rounds 5] [--mb 640]

It starts its own SeaweedFS in a temp dir, stages a SavedModel-like candidate of the transfer
bench's size (640 MB: a 3 MB saved_model.pb, one big variables shard, small assets; as
bench/transfer.py's two sets together), then per round, in alternating order:
- publish it (claim, server-side copies, verified; the manifest) without a key, and with a P-256
  key (the same, plus the signed statement over the files' sha256s and the manifest);
- sync the new version into an empty folder (download, sha256 of every byte, rename) without
  trusted keys, and with the key trusted (the signature checked before the download).
The figures are medians; the ratios (signed / unsigned) are the result: target <= 1.10x each.
Publishing copies server-side and the manifest already holds every file's sha256, so signing hashes
nothing again; verification reuses the digests the download computes anyway.

The last line is one JSON object with every figure. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.transfer import MB, make_saved_model_set  # noqa: E402
from tests.integration.registry.conftest import clone_candidate  # noqa: E402 (server-side copies of a candidate)

TARGET = 1.10


def run(args) -> dict:
    import services
    from registry.publish import publish
    from registry.s3 import S3Uri, make_client
    from registry.signing import SigningKey, keygen, trusted_keys
    from registry.staging import stage
    from registry.sync import sync_once

    work = tempfile.mkdtemp(prefix="tfsr-bench-signing-", dir=args.tmp)
    sw = None
    try:
        sw = services.start_seaweedfs(os.path.join(work, "seaweedfs"))
        client = make_client(endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
                             aws_secret_access_key=sw.secret_key, region_name="us-east-1")
        client.create_bucket(Bucket="serving")
        src = os.path.join(work, "sm")
        make_saved_model_set(src, data_mb=args.mb - 4)
        private, public, kid = keygen(os.path.join(work, "keys", "release.pem"))
        signer, trusted = SigningKey.from_file(private), trusted_keys([public])
        serving = S3Uri("serving", "bench-model/")
        t0 = time.monotonic()
        candidate = stage(client, serving, src, run_id="bench")
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs)
        print(f"staged {size / MB:.0f} MB in {time.monotonic() - t0:.1f}s; key {kid[:12]}", flush=True)

        secs = {k: [] for k in ("publish", "publish_signed", "sync", "sync_verified")}

        def one(signed: bool, record: bool) -> None:
            # a candidate is published once (idempotent): each publish gets its own staged copy's uri
            uri = clone_candidate(client, candidate, f"r{time.monotonic_ns()}")
            t = time.monotonic()
            pub = publish(client, serving, "bench-model", uri, allow_unvalidated=True,
                          signer=signer if signed else None)
            dt_pub = time.monotonic() - t
            dest = os.path.join(work, f"mbp-{pub.version}")
            t = time.monotonic()
            r = sync_once(client, serving, dest, keep=1, trusted=trusted if signed else None, model="bench-model")
            dt_sync = time.monotonic() - t
            assert r.ok and r.present == [pub.version], r.to_json()
            shutil.rmtree(dest)
            if record:
                secs["publish_signed" if signed else "publish"].append(dt_pub)
                secs["sync_verified" if signed else "sync"].append(dt_sync)
            print(f"  {'signed  ' if signed else 'unsigned'} publish {dt_pub:6.2f}s  sync {dt_sync:6.2f}s"
                  f"{'' if record else '  (warm-up)'}", flush=True)

        one(False, False)
        one(True, False)
        for i in range(args.rounds):
            for signed in ((False, True) if i % 2 == 0 else (True, False)):
                one(signed, True)
        med = {k: statistics.median(v) for k, v in secs.items()}
        out = {"mb": round(size / MB), "rounds": args.rounds, "median_s": med,
               "publish_ratio": med["publish_signed"] / med["publish"],
               "sync_ratio": med["sync_verified"] / med["sync"], "target": TARGET}
        print(f"\npublish: unsigned {med['publish']:.2f}s, signed {med['publish_signed']:.2f}s -> "
              f"{out['publish_ratio']:.2f}x ({'PASS' if out['publish_ratio'] <= TARGET else 'FAIL'} <= {TARGET}x)")
        print(f"sync:    unverified {med['sync']:.2f}s, verified {med['sync_verified']:.2f}s -> "
              f"{out['sync_ratio']:.2f}x ({'PASS' if out['sync_ratio'] <= TARGET else 'FAIL'} <= {TARGET}x)")
        return out
    finally:
        if sw is not None:
            sw.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=640)
    ap.add_argument("--tmp", default=None, help="where the temp folder goes (default: the system's)")
    out = run(ap.parse_args())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
