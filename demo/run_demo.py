"""The main job, end to end, without Airflow (the Airflow DAGs come with their issue):

  a training job writes checkpoints -> tfs-release release (newest complete checkpoint -> Model
  Garden export -> validation in a temporary TF Serving -> publish the next version) for the three
  demo models -> a second release finds nothing new -> a broken checkpoint fails validation and
  publishes nothing -> tfs-release sync fills a TF Serving model_base_path.

Run by `make demo` (services started, .run/services.env sourced).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from demo import checkpoint_cache  # noqa: E402
from registry import config  # noqa: E402
from registry.s3 import make_client  # noqa: E402

KINDS = {"shapes-classifier": "classification", "shapes-segmenter": "segmentation",
         "shapes-detector": "detection"}
SERVING_IMAGE = "tensorflow/serving:2.19.0"
BASE_PATH = os.path.join(ROOT, ".run", "demo", "model_base_path")


def say(msg: str) -> None:
    print(msg, flush=True)


def cli(*args, check=True) -> dict:
    """Run the tfs-release CLI as a user would; returns its --json output."""
    p = subprocess.run([sys.executable, "-m", "cli", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    if check and p.returncode not in (0, 1):
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"tfs-release {' '.join(args)} failed with exit {p.returncode}")
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    out["_exit"] = p.returncode
    return out


def serving_setup() -> tuple[str, str | None]:
    """(launcher, image): the real tensorflow/serving image when the engine has or can pull it,
    else the locally built stand-in; the process launcher when no Docker engine runs."""
    import services
    try:
        services.ensure_docker()
    except RuntimeError as exc:
        say(f"   no Docker engine ({exc}): validating with the process launcher (the TF-Serving stand-in)")
        return "process", None
    import docker
    client = docker.from_env()
    try:
        client.images.get(SERVING_IMAGE)
        say(f"   serving image: {SERVING_IMAGE}")
        return "docker", SERVING_IMAGE
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(SERVING_IMAGE)
        return "docker", SERVING_IMAGE
    except Exception:  # noqa: BLE001 - no registry here: fall back to the stand-in
        say(f"   {SERVING_IMAGE} cannot be pulled here (no image registry reachable): building the "
            "TF-Serving stand-in image locally instead (standin/, several minutes the first time)")
    from standin.image import ensure_image
    image = ensure_image()
    say(f"   serving image: {image} (the TF-Serving stand-in)")
    return "docker", image


def upload_like_training(client, folder: str, bucket: str, prefix: str) -> int:
    """What a training job does: ckpt files first, the state file last. Skips what is there."""
    have = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}
    files = checkpoint_cache.checkpoint_files(folder)
    files.sort(key=lambda f: f == "checkpoint")
    n = 0
    for f in files:
        path = os.path.join(folder, f)
        if have.get(prefix + f) != os.path.getsize(path) or f == "checkpoint":
            client.upload_file(path, bucket, prefix + f)
            n += 1
    return n


def main() -> None:
    cfg = config.load(os.path.join(ROOT, "config", "models.yaml"))
    client = make_client()
    for b in {m.checkpoints.bucket for m in cfg.models.values()} | {m.serving.bucket for m in cfg.models.values()}:
        try:
            client.create_bucket(Bucket=b)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    say("== serving environment for validation")
    launcher, image = serving_setup()
    img = ["--image", image] if image else []
    reports = []
    for name, kind in KINDS.items():
        m = cfg.model(name)
        say(f"== {name}: the training job writes checkpoints to {m.checkpoints}")
        folder = checkpoint_cache.get(kind)
        n = upload_like_training(client, folder, m.checkpoints.bucket, m.checkpoints.prefix)
        say(f"   {n} file(s) uploaded ({', '.join(checkpoint_cache.checkpoint_files(folder))})")
        say(f"   tfs-release release {name}")
        out = cli("release", name, "--launcher", launcher, *img)
        say(f"   {out.get('summary') or out}")
        reports.append((name, out.get("report"), out.get("report_url")))
    name = "shapes-classifier"
    say(f"== {name}: release again with no new checkpoint")
    say(f"   {cli('release', name, '--launcher', launcher, *img).get('summary')}")
    m = cfg.model(name)
    versions_before = [v["version"] for v in cli("versions", name)["versions"]]
    step = max(c["step"] for c in cli("checkpoints", name)["checkpoints"] if c["step"] is not None) + 1
    say(f"== {name}: a broken checkpoint arrives (ckpt-{step}: random weights, e.g. a bad restart)")
    tmp = os.path.join(ROOT, ".run", "demo", "broken")
    subprocess.run([sys.executable, os.path.join(ROOT, "demo", "broken_checkpoint.py"), "--kind", "classification",
                    "--out", tmp, "--step", str(step)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": ROOT})
    for f in os.listdir(tmp):
        if f.startswith(f"ckpt-{step}."):
            client.upload_file(os.path.join(tmp, f), m.checkpoints.bucket, m.checkpoints.prefix + f)
    client.put_object(Bucket=m.checkpoints.bucket, Key=m.checkpoints.prefix + "checkpoint",
                      Body=f'model_checkpoint_path: "ckpt-{step}"\n'.encode())
    out = cli("release", name, "--launcher", launcher, *img)
    say(f"   {out.get('summary')} (exit {out['_exit']})")
    say(f"   why: {(out.get('reason') or '')[:300]}")
    reports.append((f"{name} (broken)", out.get("report"), out.get("report_url")))
    after = [v["version"] for v in cli("versions", name)["versions"]]
    say(f"   versions before {versions_before}, after {after}: nothing was published")
    say("   alerts (Slack, e-mail) come with the Airflow pipeline issue; the CLI exits 1 with the reason")
    say(f"== sync committed versions into {BASE_PATH} (what production TF Serving serves)")
    for name in KINDS:
        r = cli("sync", name, "--dest", os.path.join(BASE_PATH, name), "--once", "--keep", "3")
        say(f"   {name}: local versions {r.get('versions')}")
    say("== published versions")
    for name in KINDS:
        for v in cli("versions", name)["versions"]:
            say(f"   {name:18} v{v['version']:<3} step {v['step']}  {v['verdict']}  {v['checkpoint']}")
    say("== reports (s3 uri; the URL opens in a browser for 7 days)")
    for name, uri, url in reports:
        say(f"   {name}: {uri}\n      {url}")
    say("Demo done.")


if __name__ == "__main__":
    main()
