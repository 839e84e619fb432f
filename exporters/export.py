"""`tfs-release export`: newest complete checkpoint -> staged candidate.

download the checkpoint (verified) -> params (config vs training's params.yaml) -> restore every
variable (checked) -> SavedModel -> in-process reference answers for the golden set -> warmup
records -> stage under _staging/<run>/ with the manifest fields the exporter owns.
Bad input fails before anything is staged.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

from exporters import golden as golden_mod
from registry import checkpoints, staging, transfer
from registry.config import ModelConfig
from registry.s3 import local_path_for

log = logging.getLogger(__name__)


def versions() -> dict:
    import tensorflow as tf
    from importlib.metadata import PackageNotFoundError, version

    import registry

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None
    return {"name": "tfs-release", "version": registry.__version__, "tensorflow": tf.__version__,
            "tf_models_official": v("tf-models-official"), "keras": v("tf-keras")}


def download_checkpoint(client, ck: checkpoints.Checkpoint, params_key: str | None, dest: str) -> tuple[str, str | None]:
    """Fetch the checkpoint's files (and params.yaml); returns (local checkpoint prefix, params path)."""
    bucket = ck.uri[len("s3://"):].split("/", 1)[0]
    files = [transfer.RemoteFile(key=f["key"], dest=local_path_for(dest, f["key"].rsplit("/", 1)[-1]),
                                 size=f["size"], etag=f["etag"]) for f in ck.files]
    params_local = None
    if params_key:
        params_local = local_path_for(dest, "params.yaml")
        head = client.head_object(Bucket=bucket, Key=params_key)
        files.append(transfer.RemoteFile(key=params_key, dest=params_local, size=head["ContentLength"],
                                         etag=head.get("ETag", "").strip('"')))
    stats = transfer.download_files(client, bucket, files)
    log.info("downloaded checkpoint %s: %d files, %.1f MB in %.1fs", ck.name, stats.files,
             stats.bytes / 2**20, stats.seconds)
    return os.path.join(dest, ck.name), params_local


def export_candidate(client, model: ModelConfig, *, checkpoint_uri: str | None = None,
                     run_id: str | None = None, keep_dir: str | None = None) -> dict:
    model.require("task", "checkpoints", "experiment", "input_size", "golden")
    t0 = time.monotonic()
    golden = golden_mod.load(model.golden, task=model.task)  # a bad golden set fails before any work
    ck, listing = checkpoints.resolve(client, model.checkpoints, checkpoint_uri)
    log.info("exporting %s from %s (step %s)", model.name, ck.uri, ck.step)
    work = tempfile.mkdtemp(prefix=f"tfsr-export-{model.name}-")
    try:
        ckpt_prefix, params_file = download_checkpoint(client, ck, listing.params_key, os.path.join(work, "ckpt"))
        from exporters import model_garden, params as params_mod, reference
        params, params_source = params_mod.resolve(model.experiment, model.params_override, params_file)
        params_mod.apply_output_options(params, normalized_boxes=bool(model.extra.get("output_normalized_coordinates")),
                                        class_dtype=model.extra.get("class_dtype", "int32"))
        module, kind = model_garden.build_module(params, task=model.task, input_size=model.input_size,
                                                 batch_size=model.batch_size,
                                                 first_input_type=next(iter(model.input_types.values())))
        restored = model_garden.restore(module, ckpt_prefix, experiment=model.experiment)
        sm_dir, ref_dir = os.path.join(work, "saved_model"), os.path.join(work, "reference")
        t_export = time.monotonic()
        functions = model_garden.export(module, params, sm_dir, model.input_types)
        export_seconds = time.monotonic() - t_export
        signatures = model_garden.describe_signatures(functions)
        ref = reference.reference_answers(functions, golden, model.input_types, ref_dir,
                                          batch_size=model.validation_batch_size)
        warmup = reference.write_warmup(sm_dir, model.name, golden, model.input_types)
        fields = {
            "model": model.name, "task": kind,
            "source_checkpoint": {"uri": ck.uri, "step": ck.step, "name": ck.name,
                                  "files": [{"key": f["key"], "size": f["size"], "etag": f["etag"]}
                                            for f in ck.files]},
            "params_digest": params_mod.digest(params), "params_source": params_source,
            "experiment": model.experiment, "input_types": model.input_types,
            "input_size": list(model.input_size), "exporter": versions(), "signatures": signatures,
            "golden": {"source": golden.source, "images": len(golden.images)},
            "labels": {str(k): v for k, v in (golden.classes or {}).items()},  # the model's label map
            "warmup_records": warmup, "variables": restored["variables"],
        }
        uri = staging.stage(client, model.serving, sm_dir, run_id=run_id, fields=fields,
                            extra_dirs={"reference": ref_dir})
        if keep_dir:
            shutil.copytree(sm_dir, os.path.join(keep_dir, "saved_model"), dirs_exist_ok=True)
            shutil.copytree(ref_dir, os.path.join(keep_dir, "reference"), dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - t0
    log.info("staged %s candidate %s in %.1fs (export %.1fs, reference %.1fs, %d warmup records)",
             model.name, uri, total, export_seconds, ref["seconds"], warmup)
    return {"candidate": uri, "checkpoint": ck.uri, "step": ck.step, "signatures": signatures,
            "params_source": params_source, "warmup_records": warmup, "seconds": round(total, 2),
            "export_seconds": round(export_seconds, 2)}
