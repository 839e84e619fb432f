"""The main job as far as it exists today: the registry end to end on the real SeaweedFS.

1. a fake training job drops checkpoints into s3://training/<model>/checkpoints/ (ckpt-300 is left
   incomplete and named in the state file, as a save interrupted mid-way would be);
2. find the newest *complete* checkpoint (ckpt-200);
3. stage a SavedModel built here (a tiny tf.Module; Model Garden export comes with the exporters);
4. publish it as the next version (claim, copy, verify, manifest) -- unvalidated for now;
5. sync the committed versions into a local model_base_path, as the production sidecar does, and
   load the newest one from there.

Run by `make demo` (services started, .run/services.env sourced).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from registry import config  # noqa: E402
from registry.checkpoints import list_checkpoints  # noqa: E402
from registry.publish import publish  # noqa: E402
from registry.s3 import make_client  # noqa: E402
from registry.staging import stage  # noqa: E402
from registry.sync import sync_once  # noqa: E402
from registry.versions import list_versions, verify  # noqa: E402

MODEL = "shapes-detector"


def ensure_bucket(client, name):
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.ClientError as exc:
        if "BucketAlreadyExists" not in str(exc):
            raise


def seed_training(client, loc):
    """What a training job writes (content is placeholder bytes: the real trainer comes with the
    exporters issue)."""
    for step in (100, 200, 300):
        client.put_object(Bucket=loc.bucket, Key=f"{loc.prefix}ckpt-{step}.index", Body=b"index" * 20)
        shards = [0, 1] if step != 300 else [0]  # ckpt-300: shard 1 of 2 never arrived
        for s in shards:
            client.put_object(Bucket=loc.bucket, Key=f"{loc.prefix}ckpt-{step}.data-{s:05d}-of-00002",
                              Body=os.urandom(256 * 1024))
    client.put_object(Bucket=loc.bucket, Key=f"{loc.prefix}checkpoint",
                      Body=b'model_checkpoint_path: "/train/ckpt-300"\n'
                           b'all_model_checkpoint_paths: "/train/ckpt-200"\n'
                           b'all_model_checkpoint_paths: "/train/ckpt-300"\n')


def tiny_saved_model(path):
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 2.0 * x}

    m = Doubler()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def main():
    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s", stream=sys.stderr)
    cfg = config.load(os.path.join(ROOT, "config", "models.yaml")).model(MODEL)
    client = make_client()
    for bucket in (cfg.checkpoints.bucket, cfg.serving.bucket):
        ensure_bucket(client, bucket)
    print(f"== 1. training job writes checkpoints to {cfg.checkpoints}")
    seed_training(client, cfg.checkpoints)
    print("== 2. newest complete checkpoint")
    listing = list_checkpoints(client, cfg.checkpoints)
    for ck in listing.checkpoints:
        print(f"   {'*' if ck is listing.newest else ' '} {ck.name:10} "
              f"{'complete' if ck.complete else 'skipped: ' + ck.reason}")
    with tempfile.TemporaryDirectory() as tmp:
        print("== 3. stage a SavedModel (stand-in for the Model Garden export, not built yet)")
        sm = os.path.join(tmp, "sm")
        tiny_saved_model(sm)
        fields = {"source_checkpoint": {"uri": listing.newest.uri, "step": listing.newest.step}}
        cand = stage(client, cfg.serving, sm, fields=fields)
        print(f"   candidate: {cand}")
        print("== 4. publish (validation is not built yet: published as 'not-validated')")
        res = publish(client, cfg.serving, MODEL, cand, allow_unvalidated=True)
        print(f"   published version {res.version}: {res.uri} (manifest {res.manifest_uri})")
    v = verify(client, cfg.serving)
    print(f"   verify: ok={v.ok}, versions={v.versions}, orphans={len(v.orphans)}")
    dest = os.path.join(ROOT, ".run", "demo", "model_base_path", MODEL)
    print(f"== 5. sync committed versions into {dest} (what production TF Serving reads)")
    r = sync_once(client, cfg.serving, dest, keep=3)
    print(f"   local versions: {r.present} (added {r.added}, removed {r.removed})")
    import tensorflow as tf
    newest = os.path.join(dest, str(r.present[-1]))
    out = tf.saved_model.load(newest).signatures["serving_default"](x=tf.ones([1, 4]))
    print(f"   loaded {newest}: serving_default(x=ones) -> y={out['y'].numpy().tolist()}")
    print("== versions")
    for ver in list_versions(client, cfg.serving):
        print(f"   {ver['version']:>3}  {ver['created']}  step={ver['step']}  {ver['verdict']}")
    print("Demo done: the registry part of the pipeline (export, validation and Airflow come with "
          "later issues).")


if __name__ == "__main__":
    main()
