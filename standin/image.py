"""Build the stand-in serving image locally, from nothing (no image registry is reachable here).

Two layers, each cached by a hash of its recipe, rebuilt only when that changes:
- base ``tfs-release/standin-base:<hash>``: a debootstrap'd Debian (the host's own mirror and
  package-manager config, its CA certificates and pip configuration copied in, so the chroot
  reaches the same package mirrors; no host is named here) with a venv holding TensorFlow and
  tensorflow-serving-api at the worker env's pins; imported with ``docker import``;
- ``tfs-release/standin:<hash>``: ``docker/standin.Dockerfile`` FROM that base, adding the
  stand-in's code; the entrypoint mirrors the ``tensorflow/serving`` image's.

    python -m standin.image          # prints the tag, building what is missing
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "docker", "standin.Dockerfile")
BASE_REPO, REPO = "tfs-release/standin-base", "tfs-release/standin"
# tensorflow-text: TF Serving's binary links TF Text's ops, so the stand-in serves them too
PACKAGES = ["tensorflow==2.20.0", "tensorflow-serving-api==2.20.0", "tensorflow-text==2.20.1", "pillow"]
SUITE = "bookworm"
CACHE = os.environ.get("TFS_RELEASE_CACHE", os.path.expanduser("~/.cache/tfs-release"))
BASE_RECIPE = "2"  # bump when build_base() changes what goes into the base image


def recipe_hash(*parts: bytes) -> str:
    """12 hex digits of sha256 over the parts: image tags name what went into the image."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p + b"\0")
    return h.hexdigest()[:12]


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def base_tag() -> str:
    constraints = read_bytes(os.path.join(ROOT, "requirements-worker.txt"))
    return f"{BASE_REPO}:{recipe_hash(BASE_RECIPE.encode(), constraints, ' '.join(PACKAGES).encode(), SUITE.encode())}"


def image_tag() -> str:
    code = sorted(glob.glob(os.path.join(ROOT, "standin", "*.py")) +
                  glob.glob(os.path.join(ROOT, "standin", "tensorflow_model_server")))
    return f"{REPO}:{recipe_hash(base_tag().encode(), read_bytes(DOCKERFILE), *[read_bytes(p) for p in code])}"


def _docker(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=True, **kw)


def _exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def host_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line format)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for line in open(path):
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            for line in open(path):
                parts = line.split()
                if parts[:1] == ["deb"] and "security" not in line:
                    return next(p for p in parts[1:] if "://" in p)
    raise RuntimeError("cannot find this host's Debian mirror in /etc/apt: the stand-in base image "
                       "is debootstrapped from it")


def _copy_host_config(rootfs: str) -> None:
    """What apt and pip on this host need to reach their mirrors, copied into the chroot."""
    for src in ["/etc/resolv.conf", "/etc/pip.conf", *glob.glob("/etc/apt/sources.list*"),
                *glob.glob("/etc/apt/sources.list.d/*"), *glob.glob("/etc/apt/apt.conf.d/*"),
                *glob.glob("/etc/apt/trusted.gpg.d/*"), *glob.glob("/usr/share/keyrings/*"),
                *glob.glob("/usr/local/share/ca-certificates/*"), *glob.glob("/etc/xdg/pip/*")]:
        if os.path.isfile(src):
            dst = rootfs + src
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    # sources.list.d was just copied: drop a one-line sources.list that would duplicate it
    if glob.glob(rootfs + "/etc/apt/sources.list.d/*.sources") and not os.path.exists("/etc/apt/sources.list"):
        try:
            os.unlink(rootfs + "/etc/apt/sources.list")
        except FileNotFoundError:
            pass


def _chroot(rootfs: str, script: str) -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "180",
           "UV_SYSTEM_CERTS": "1", "UV_LINK_MODE": "copy", "UV_NO_PROGRESS": "1"}
    subprocess.run(["chroot", rootfs, "/bin/sh", "-ec", PIP_INSTALL + script], check=True, env=env)


def uv_binary() -> str | None:
    """The pinned uv that bin/venv installed into the cache (requirements-uv.txt), or None."""
    with open(os.path.join(ROOT, "requirements-uv.txt")) as fh:
        pin = next(ln.split("==")[1].strip() for ln in fh if ln.startswith("uv=="))
    path = os.path.join(CACHE, f"uv-{pin}", "bin", "uv")
    return path if os.access(path, os.X_OK) else None


# The recipes install into /opt/venv with `pip_install ARGS` (pip's arguments): uv when bin/venv's uv
# was copied in (parallel unpacking and bytecode compilation; its cache, the host's, is mounted),
# else pip (the host's pip cache is mounted). The same packages either way. Not part of the recipe
# hashes: a change here that changes what gets installed bumps BASE_RECIPE here and in deploy/local_images.py.
PIP_INSTALL = """pip_install() {
  if [ -x /usr/local/bin/uv ]; then uv pip install --python /opt/venv/bin/python --compile-bytecode --quiet "$@"
  else /opt/venv/bin/pip install -q --upgrade pip && /opt/venv/bin/pip install -q "$@"; fi
}
"""


def _standin_script() -> str:
    return f"""
update-ca-certificates >/dev/null 2>&1 || true
python3 -m venv /opt/venv
grep -vE '^(#|$)' /tmp/constraints.txt > /tmp/c.txt
pip_install -c /tmp/c.txt {' '.join(PACKAGES)}
rm -rf /opt/venv/lib/python3*/site-packages/tensorflow/include /tmp/constraints.txt /tmp/c.txt
apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
"""


def debootstrapped(include: tuple[str, ...], log=sys.stderr, what: str = "standin image") -> str:
    """A tarball of a minbase Debian rootfs with ``include``, debootstrapped from the host's mirror
    once per cache (every local base starts from the same one: debootstrap takes ~45 s, the
    extraction ~2 s); other processes wait for the one that makes it."""
    import fcntl
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(debootstrap):
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap, or run bin/system-deps)")
    key = recipe_hash(BASE_RECIPE.encode(), SUITE.encode(), ",".join(include).encode())
    path = os.path.join(CACHE, f"debootstrap-{SUITE}-{key}.tar")
    os.makedirs(CACHE, exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        work = tempfile.mkdtemp(prefix="debootstrap-", dir=os.environ.get("TMPDIR", "/var/tmp"))
        try:
            rootfs = os.path.join(work, "rootfs")
            print(f"{what}: debootstrap {SUITE} (minbase) into {rootfs} (kept as {path})", file=log, flush=True)
            subprocess.run([debootstrap, "--variant=minbase", "--include=" + ",".join(include),
                            SUITE, rootfs, host_mirror()], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-cf", path + ".tmp", "."], check=True)
            os.replace(path + ".tmp", path)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)
    return path


def build_base(tag: str, log=sys.stderr, *, what: str = "standin image",
               include: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates"),
               files: dict[str, str] | None = None, script: str | None = None) -> None:
    """A debootstrapped Debian rootfs (``debootstrapped``; the host's mirror and package config), copy ``files``
    (host path -> path in the rootfs) in, run ``script`` in a chroot (host uv and pip caches mounted),
    and ``docker import`` it as ``tag``. The defaults build the stand-in base; deploy/local_images.py
    builds the compose stack's local bases with other packages and scripts."""
    t0 = time.monotonic()
    tarball = debootstrapped(include, log=log, what=what)
    work = tempfile.mkdtemp(prefix="standin-base-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    rootfs = os.path.join(work, "rootfs")
    mounts = []
    try:
        os.makedirs(rootfs)
        subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-xpf", tarball], check=True)
        _copy_host_config(rootfs)
        if files is None:
            files = {os.path.join(ROOT, "requirements-worker.txt"): "/tmp/constraints.txt"}
        for src, dst in files.items():
            os.makedirs(os.path.dirname(rootfs + dst), exist_ok=True)
            shutil.copy(src, rootfs + dst)
        # reuse this host's package caches (the venvs downloaded the same wheels); uv when bin/venv has it
        binds = [(os.path.expanduser("~/.cache/pip"), "/root/.cache/pip")]
        uv = uv_binary()
        if uv:
            os.makedirs(rootfs + "/usr/local/bin", exist_ok=True)
            shutil.copy(uv, rootfs + "/usr/local/bin/uv")
            binds.append((os.path.join(CACHE, "uv-cache"), "/root/.cache/uv"))
        for src, dst in binds:
            os.makedirs(src, exist_ok=True)
            os.makedirs(rootfs + dst, exist_ok=True)
        for dst, extra in [("/proc", ["-t", "proc", "proc"])] + [(dst, ["--bind", src]) for src, dst in binds]:
            subprocess.run(["mount", *extra, rootfs + dst], check=True)
            mounts.append(rootfs + dst)
        if script is None:
            print("standin image: python venv with " + " ".join(PACKAGES), file=log, flush=True)
        else:
            print(f"{what}: running the image recipe in the chroot", file=log, flush=True)
        _chroot(rootfs, _standin_script() if script is None else script)
        if uv:
            os.unlink(rootfs + "/usr/local/bin/uv")
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False)
    try:
        print(f"{what}: docker import -> {tag}", file=log, flush=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "--exclude=./proc/*", "--exclude=./root/.cache/*",
                                "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "--change", "ENV LANG=C.UTF-8", "-", tag], stdin=tar.stdout, check=True,
                       stdout=subprocess.DEVNULL)
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError(f"tar of the {what} rootfs failed")
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)
    print(f"{what}: base built in {time.monotonic() - t0:.0f}s", file=log, flush=True)


def ensure_image(log=sys.stderr) -> str:
    """The stand-in image's tag, building the base and/or the code layer when missing."""
    base, tag = base_tag(), image_tag()
    if _exists(tag):
        return tag
    if not _exists(base):
        build_base(base, log=log)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="standin-ctx-") as ctx:
        shutil.copytree(os.path.join(ROOT, "standin"), os.path.join(ctx, "standin"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "README.md"))
        _docker("build", "-q", "--build-arg", f"BASE={base}", "-f", DOCKERFILE, "-t", tag, ctx,
                stdout=subprocess.DEVNULL)
    print(f"standin image: {tag} built in {time.monotonic() - t0:.0f}s", file=log, flush=True)
    prune(keep=(base, tag))
    return tag


KEEP_BUILDS = 3  # other checkouts on this engine (a demo, CI, another branch) may still use a recent build


def prune(keep: tuple[str, ...]) -> None:
    """Remove older builds of the stand-in images (a base is ~2 GB), keeping the ``KEEP_BUILDS``
    newest of each besides ``keep``: a build for other sources must not remove the image a run of
    another checkout is using right now. An image a container uses is never removed (rmi refuses)."""
    for repo in (REPO, BASE_REPO):
        out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                             capture_output=True, text=True).stdout.split()  # newest first
        for old in [t for t in out if t not in keep][KEEP_BUILDS:]:
            subprocess.run(["docker", "rmi", old], capture_output=True)


if __name__ == "__main__":
    print(ensure_image())
