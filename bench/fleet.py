"""Benchmark: the idle object-storage cost of the sync sidecars as the fleet grows.

For M models x V versions on the real SeaweedFS (tiny versions written straight into a serving
bucket: one file and a manifest each), one replica's sidecar (``sync-all``'s round: every model
into one TF Serving tree) first syncs everything, then idles. Every request is counted by kind with
botocore's event hooks:
- baseline: every round a full round (``--reconcile-interval 0``, no change marker): per model a
  HEAD and the listings of its manifests and tombstones (before this issue the full round also
  listed every version folder: 5 + V requests per model);
- marker: the idle round with the change marker (registry/index.py): one conditional GET per
  serving bucket, plus one full round per reconciliation interval.
Printed per (M, V): requests per idle round, requests per hour per replica at the default 2 s
interval, and dollars per month for 3 replicas at AWS S3 list prices (LIST/PUT $0.005 per 1,000,
GET/HEAD $0.0004 per 1,000), and the ratio marker / baseline.

    python bench/fleet.py [--models 1,10,100,1000] [--versions 1,10] [--replicas 3] [--interval 2]

Checkpoint detection (``--detection``, on by default): M models' checkpoint watchers
(registry/checkpoint_watch.py ``Watch``, what the trigger on the triggerer runs), each model with a
complete checkpoint and its state file, idle after their first poll; counted the same way:
- baseline: a LIST of the prefix every poll (before the conditional GET);
- watcher: one conditional GET of the state file every poll (304), plus a listing every
  reconciliation (``DEFAULT_RECONCILE_S``).
- relay: the checkpoint relay (registry/checkpoint_relay.py, one process for every model), idle:
  a sweep (one paginated listing of the training location) every ``--sweep`` seconds; the store's
  notifications cost no request at idle.
Printed per M at ``--poll`` seconds (the default ``checkpoint_poll_s``): requests per hour and
dollars per month.

Freshness at M = ``--freshness-models`` (1000): a SeaweedFS of its own posts its filer events to a
relay watching every model; for ``--checkpoints`` (5) checkpoints of random models, the time from
the state file's PUT to the relay's announcement (what Airflow's REST API would receive), and from
a publish to a sync-all replica of every model holding the new version (its 2 s gated rounds). The
release run between them (export, validation, publish) is the pipeline's work, measured in
bench/pipeline.py, and not part of the target: detection + propagation <= 30 s median.

DAG parse time at M = 1000 (``--dag-parse``, on by default): ``bench/dag_parse.py --models 1000
--relay`` (the fleet's config: no watcher per model), run from here; target <= 10 s for the file.

Target: M=1000, V=10, 3 replicas: the sidecars' and checkpoint detection's idle cost together
<= $10 a month.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PRICE = {"list": 0.005 / 1000, "get": 0.0004 / 1000}   # dollars per request
LIST_OPS = {"ListObjectsV2", "ListObjects", "PutObject", "CopyObject", "PostObject"}
HOURS_PER_MONTH = 730


class Counter:
    def __init__(self, client):
        self.ops: dict[str, int] = {}
        client.meta.events.register("before-parameter-build.s3", self._count)

    def _count(self, model, **_):
        self.ops[model.name] = self.ops.get(model.name, 0) + 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.ops)


def delta(a: dict, b: dict) -> dict:
    return {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) != a.get(k, 0)}


def dollars(ops: dict[str, float]) -> float:
    return sum(n * (PRICE["list"] if op in LIST_OPS else PRICE["get"]) for op, n in ops.items())


def fill(client, bucket: str, models: int, versions: int) -> list[str]:
    """M models x V committed versions (one small file + manifest each), as publish leaves them."""
    from registry import manifest
    names = [f"m{i:04d}" for i in range(models)]
    body = b"saved_model"
    sha = hashlib.sha256(body).hexdigest()

    def one(name):
        for n in range(1, versions + 1):
            client.put_object(Bucket=bucket, Key=f"{name}/{n}/saved_model.pb", Body=body)
            m = manifest.build(model=name, version=n, run_id=f"bench-{n}",
                               files=[{"path": "saved_model.pb", "size": len(body), "sha256": sha}],
                               candidate={}, validation={}, candidate_uri=None)
            client.put_object(Bucket=bucket, Key=f"{name}/_manifests/{n}.json", Body=manifest.dumps(m))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, names))
    return names


def measure(client, endpoint_env: dict, models: int, versions: int, *, replicas: int, interval: float,
            reconcile_s: float, idle_rounds: int) -> dict:
    from registry import index
    from registry.config import ModelConfig
    from registry.index import ChangeGate
    from registry.s3 import S3Uri
    from registry.serving_config import sync_root_round
    from registry.sync import gated
    bucket = f"fleet-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    work = tempfile.mkdtemp(prefix="tfsr-fleet-")
    try:
        t0 = time.monotonic()
        names = fill(client, bucket, models, versions)
        index.touch(client, S3Uri(bucket, ""), "bench fill")
        fill_s = time.monotonic() - t0
        cfgs = [ModelConfig(name=n, serving=S3Uri(bucket, f"{n}/")) for n in names]
        counter = Counter(client)
        root = os.path.join(work, "root")
        t0 = time.monotonic()
        sync_root_round(client, cfgs, root, config_file=os.path.join(root, "models.config"))
        first_s = time.monotonic() - t0
        # baseline: an idle full round (nothing to download)
        a = counter.snapshot()
        t0 = time.monotonic()
        sync_root_round(client, cfgs, root, config_file=os.path.join(root, "models.config"))
        full_s = time.monotonic() - t0
        full = delta(a, counter.snapshot())
        # marker: a gate that settled on a full round, then idle rounds
        gate = ChangeGate(client, [bucket], reconcile_s=reconcile_s)
        rounds = []
        round_ = gated(lambda: not sync_root_round(client, cfgs, root, config_file=None)["problems"], gate)
        round_()                                   # the first round is full (no state)
        a = counter.snapshot()
        t0 = time.monotonic()
        for _ in range(idle_rounds):
            round_()
            rounds.append(1)
        idle_s = (time.monotonic() - t0) / idle_rounds
        idle = {k: v / idle_rounds for k, v in delta(a, counter.snapshot()).items()}
        per_hour_rounds = 3600 / interval
        base_hour = {k: v * per_hour_rounds for k, v in full.items()}
        marker_hour = {k: v * per_hour_rounds + full.get(k, 0) * (3600 / reconcile_s if reconcile_s > 0 else 0)
                       for k, v in {**{k: 0 for k in full}, **idle}.items()}
        base_month = dollars(base_hour) * HOURS_PER_MONTH * replicas
        marker_month = dollars(marker_hour) * HOURS_PER_MONTH * replicas
        return {"models": models, "versions": versions, "fill_s": round(fill_s, 1), "first_sync_s": round(first_s, 1),
                "full_round": full, "full_round_s": round(full_s, 2), "idle_round": idle, "idle_round_s": round(idle_s, 4),
                "baseline_requests_per_hour": round(sum(base_hour.values())),
                "marker_requests_per_hour": round(sum(marker_hour.values())),
                "baseline_usd_month": round(base_month, 2), "marker_usd_month": round(marker_month, 2),
                "ratio": round(marker_month / base_month, 4) if base_month else None}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        from registry.s3 import delete_prefix
        delete_prefix(client, bucket, "")
        client.delete_bucket(Bucket=bucket)


class Sink:
    """The relay's announcements, recorded (what Airflow's REST API would receive), with their time."""

    def __init__(self):
        self.events: list[tuple[float, str, dict]] = []

    def latest(self, uri):
        return None

    def post(self, uri, extra):
        self.events.append((time.monotonic(), uri, extra))
        return {}


def measure_relay(client, counter, bucket: str, names: list[str], serving, *, sweep_s: float) -> dict:
    """The relay watching all M models, idle: requests per sweep; per hour at one sweep per ``sweep_s``."""
    from types import SimpleNamespace

    from registry.checkpoint_relay import Relay
    from registry.s3 import S3Uri
    ms = [SimpleNamespace(name=n, checkpoints=S3Uri(bucket, f"{n}/checkpoints/"), serving=serving) for n in names]
    sink = Sink()
    relay = Relay(client, ms, sink, sweep_s=sweep_s)
    t0 = time.monotonic()
    relay.sweep()                                   # the first sweep checks (and announces) every model
    first_s = time.monotonic() - t0
    assert len(sink.events) == len(names), len(sink.events)
    a = counter.snapshot()
    t0 = time.monotonic()
    for _ in range(3):
        relay.sweep()
    idle_s = (time.monotonic() - t0) / 3
    per_sweep = {k: v / 3 for k, v in delta(a, counter.snapshot()).items()}
    hour = {k: v * 3600 / sweep_s for k, v in per_sweep.items()}
    return {"per_sweep": per_sweep, "sweep_s": sweep_s, "idle_sweep_s": round(idle_s, 3), "first_sweep_s": round(first_s, 1),
            "requests_per_hour": round(sum(hour.values()), 1), "usd_month": round(dollars(hour) * HOURS_PER_MONTH, 4)}


def measure_freshness(models: int, checkpoints: int, interval: float) -> dict:
    """Detection and propagation at M models, on a SeaweedFS of its own that posts filer events to the relay."""
    import random
    import secrets
    import statistics
    import threading
    from types import SimpleNamespace

    import services
    from registry import index
    from registry.checkpoint_relay import Relay, serve
    from registry.config import ModelConfig
    from registry.index import ChangeGate
    from registry.publish import publish
    from registry.s3 import S3Uri, make_client
    from registry.serving_config import sync_root_round
    from registry.staging import stage
    from registry.sync import gated
    work = tempfile.mkdtemp(prefix="tfsr-fresh-")
    [port] = services.free_ports(1)
    token = secrets.token_urlsafe(16)
    sw = services.start_seaweedfs(os.path.join(work, "weed"),
                                  webhook=(f"http://127.0.0.1:{port}/", token, ["/buckets/training/"]))
    try:
        env = sw.env()
        client = make_client(endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=sw.access_key,
                             aws_secret_access_key=sw.secret_key)
        for b in ("training", "serving"):
            client.create_bucket(Bucket=b)
        names = [f"m{i:04d}" for i in range(models)]
        ms = [SimpleNamespace(name=n, checkpoints=S3Uri("training", f"{n}/checkpoints/"),
                              serving=S3Uri("serving", f"{n}/")) for n in names]
        # detection: the relay listening, idle, then checkpoints of random models written as training does
        sink = Sink()
        relay = Relay(client, ms, sink, sweep_s=3600)
        server = serve(relay, "127.0.0.1", port, token)
        stop = threading.Event()
        worker = threading.Thread(target=relay.run, args=(stop,), daemon=True)
        worker.start()
        rnd = random.Random(7)
        detect = []
        for name in rnd.sample(names, checkpoints):
            p = f"{name}/checkpoints/"
            client.put_object(Bucket="training", Key=p + "ckpt-100.data-00000-of-00001", Body=b"d" * 100_000)
            client.put_object(Bucket="training", Key=p + "ckpt-100.index", Body=b"i" * 64)
            client.put_object(Bucket="training", Key=p + "checkpoint", Body=b'model_checkpoint_path: "ckpt-100"\n')
            t0 = time.monotonic()
            n = len(sink.events)
            while len(sink.events) == n and time.monotonic() - t0 < 60:
                time.sleep(0.01)
            detect.append(sink.events[-1][0] - t0 if len(sink.events) > n else float("inf"))
        stop.set()
        relay.wake()
        worker.join(10)
        server.shutdown()
        server.server_close()
        # propagation: a replica of every model (one version each), gated rounds every `interval` s
        fill(client, "serving", models, 1)
        index.touch(client, S3Uri("serving", ""), "bench fill")
        cfgs = [ModelConfig(name=n, serving=S3Uri("serving", f"{n}/")) for n in names]
        root = os.path.join(work, "root")
        gate = ChangeGate(client, ["serving"], reconcile_s=86400)
        round_ = gated(lambda: not sync_root_round(client, cfgs, root, config_file=os.path.join(root, "models.config"))[
            "problems"], gate)
        round_()
        halt = threading.Event()

        def sidecar():
            while not halt.wait(interval):
                round_()
        side = threading.Thread(target=sidecar, daemon=True)
        side.start()
        sm = os.path.join(work, "sm")
        os.makedirs(os.path.join(sm, "variables"))
        with open(os.path.join(sm, "saved_model.pb"), "wb") as fh:
            fh.write(b"saved_model v2")
        propagate = []
        for name in rnd.sample(names, checkpoints):
            cand = stage(client, S3Uri("serving", f"{name}/"), sm)
            pub = publish(client, S3Uri("serving", f"{name}/"), name, cand, allow_unvalidated=True)
            t0 = time.monotonic()
            while not os.path.isdir(os.path.join(root, name, str(pub.version))) and time.monotonic() - t0 < 120:
                time.sleep(0.02)
            propagate.append(time.monotonic() - t0)
        halt.set()
        side.join(60)
        return {"models": models, "detection_s": [round(x, 2) for x in detect],
                "propagation_s": [round(x, 2) for x in propagate],
                "detection_median_s": round(statistics.median(detect), 2),
                "propagation_median_s": round(statistics.median(propagate), 2)}
    finally:
        sw.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure_detection(client, models: int, *, poll_s: float, idle_polls: int, sweep_s: float) -> dict:
    """M checkpoint watchers, idle: requests per poll and dollars a month, baseline vs watcher."""
    from registry.checkpoint_watch import DEFAULT_RECONCILE_S, FIRE, Watch
    from registry.s3 import S3Uri

    class ListingWatch(Watch):  # the watcher before the conditional GET: a LIST every poll
        def state_file(self):
            return True, None

    bucket = f"fleet-train-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    try:
        names = [f"m{i:04d}" for i in range(models)]

        def write(name):
            p = f"{name}/checkpoints/"
            client.put_object(Bucket=bucket, Key=p + "ckpt-100.index", Body=b"i" * 64)
            client.put_object(Bucket=bucket, Key=p + "ckpt-100.data-00000-of-00001", Body=b"d" * 1000)
            client.put_object(Bucket=bucket, Key=p + "checkpoint", Body=b'model_checkpoint_path: "ckpt-100"\n')
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(write, names))
        serving = S3Uri(bucket, "none/")
        out = {"models": models, "poll_s": poll_s}
        counter = Counter(client)
        for label, cls in (("baseline", ListingWatch), ("watcher", Watch)):
            watches = [cls(client, S3Uri(bucket, f"{n}/checkpoints/"), serving) for n in names]
            with ThreadPoolExecutor(16) as pool:
                first = list(pool.map(lambda w: w.poll().action, watches))
            assert all(a == FIRE for a in first), first[:3]
            a = counter.snapshot()
            with ThreadPoolExecutor(16) as pool:
                for _ in range(idle_polls):
                    list(pool.map(lambda w: w.poll(), watches))
            per_poll = {k: v / (idle_polls * models) for k, v in delta(a, counter.snapshot()).items()}
            hour = {k: v * 3600 / poll_s * models for k, v in per_poll.items()}
            if label == "watcher":  # and one listing per reconciliation
                hour["ListObjectsV2"] = hour.get("ListObjectsV2", 0) + models * 3600 / DEFAULT_RECONCILE_S
            out[label] = {"per_poll": per_poll, "requests_per_hour": round(sum(hour.values())),
                          "usd_month": round(dollars(hour) * HOURS_PER_MONTH, 2)}
        out["relay"] = measure_relay(client, counter, bucket, names, serving, sweep_s=sweep_s)
        return out
    finally:
        from registry.s3 import delete_prefix
        delete_prefix(client, bucket, "")
        client.delete_bucket(Bucket=bucket)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="1,10,100,1000")
    ap.add_argument("--versions", default="1,10")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between sidecar rounds")
    ap.add_argument("--reconcile", type=float, default=86400.0, help="the sidecar's --reconcile-interval")
    ap.add_argument("--idle-rounds", type=int, default=20)
    ap.add_argument("--poll", type=float, default=5.0, help="the watchers' checkpoint_poll_s")
    ap.add_argument("--sweep", type=float, default=300.0, help="the relay's --sweep-interval")
    ap.add_argument("--freshness-models", type=int, default=1000)
    ap.add_argument("--checkpoints", type=int, default=5, help="checkpoints (and versions) timed for freshness")
    ap.add_argument("--no-detection", dest="detection", action="store_false", help="only the sidecars")
    ap.add_argument("--no-dag-parse", dest="dag_parse", action="store_false", help="skip bench/dag_parse.py")
    a = ap.parse_args()
    import services
    from registry.s3 import make_client
    state = services.up(with_docker=False)
    sw = services.SeaweedFS(**state["seaweedfs"])
    os.environ.update(sw.env())
    client = make_client()
    results = []
    print(f"{'models':>6} {'versions':>8} {'baseline req/h':>15} {'marker req/h':>13} {'baseline $/mo':>14} "
          f"{'marker $/mo':>12} {'ratio':>7}   (3600/{a.interval:g} rounds/h, {a.replicas} replicas, "
          f"reconcile {a.reconcile:g}s)", flush=True)
    for m in [int(x) for x in a.models.split(",")]:
        for v in [int(x) for x in a.versions.split(",")]:
            r = measure(client, sw.env(), m, v, replicas=a.replicas, interval=a.interval, reconcile_s=a.reconcile,
                        idle_rounds=a.idle_rounds)
            results.append(r)
            print(f"{m:>6} {v:>8} {r['baseline_requests_per_hour']:>15,} {r['marker_requests_per_hour']:>13,} "
                  f"{r['baseline_usd_month']:>14,.2f} {r['marker_usd_month']:>12,.2f} {r['ratio']:>7.4f}   "
                  f"(idle round {r['idle_round']}, full round {sum(r['full_round'].values())} requests "
                  f"in {r['full_round_s']}s)", flush=True)
    detection = []
    if a.detection:
        print(f"\ncheckpoint detection, idle: watchers every {a.poll:g}s per model, the relay's sweep every "
              f"{a.sweep:g}s\n{'models':>6} {'baseline req/h':>15} {'watcher req/h':>14} {'relay req/h':>12} "
              f"{'baseline $/mo':>14} {'watcher $/mo':>13} {'relay $/mo':>11}", flush=True)
        for m in [int(x) for x in a.models.split(",")]:
            d = measure_detection(client, m, poll_s=a.poll, idle_polls=3, sweep_s=a.sweep)
            detection.append(d)
            r = d["relay"]
            print(f"{m:>6} {d['baseline']['requests_per_hour']:>15,} {d['watcher']['requests_per_hour']:>14,} "
                  f"{r['requests_per_hour']:>12,} {d['baseline']['usd_month']:>14,.2f} {d['watcher']['usd_month']:>13,.2f} "
                  f"{r['usd_month']:>11,.4f}   (per idle sweep {r['per_sweep']} in {r['idle_sweep_s']}s; "
                  f"first sweep {r['first_sweep_s']}s)", flush=True)
    fresh = None
    if a.detection and a.freshness_models:
        fresh = measure_freshness(a.freshness_models, a.checkpoints, a.interval)
        print(f"\nfreshness at {fresh['models']} models: checkpoint complete -> announced {fresh['detection_s']} s "
              f"(median {fresh['detection_median_s']}); published -> on the replica {fresh['propagation_s']} s "
              f"(median {fresh['propagation_median_s']})", flush=True)
    big = [r for r in results if r["models"] == 1000 and r["versions"] == 10]
    det = {d["models"]: d for d in detection}.get(1000)
    for r in big:
        print(f"{'PASS' if r['marker_usd_month'] <= 10 else 'FAIL'}: sidecars' idle cost at 1000 models x 10 versions x "
              f"{a.replicas} replicas: ${r['marker_usd_month']:.2f}/month (target <= $10; a full round every "
              f"interval: ${r['baseline_usd_month']:,.2f})")
        if det:
            total = r["marker_usd_month"] + det["relay"]["usd_month"]
            print(f"{'PASS' if total <= 10 else 'FAIL'}: sidecars + checkpoint detection (the relay, a sweep every "
                  f"{a.sweep:g}s) at 1000 models: ${total:,.2f}/month (target <= $10; detection "
                  f"${det['relay']['usd_month']:,.4f}; watchers every {a.poll:g}s ${det['watcher']['usd_month']:,.2f}, "
                  f"a listing every poll ${det['baseline']['usd_month']:,.2f})")
    if fresh:
        total = fresh["detection_median_s"] + fresh["propagation_median_s"]
        print(f"{'PASS' if total <= 30 else 'FAIL'}: freshness at {fresh['models']} models, detection + propagation "
              f"medians {total:.2f}s (target <= 30 s; the release run between them is the pipeline's own work)")
    parse = None
    if a.dag_parse:
        import subprocess
        p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "dag_parse.py"), "--models", "1000", "--relay",
                            "--rounds", "1", "--target", "10"], capture_output=True, text=True, cwd=ROOT)
        try:
            parse = json.loads(p.stdout.strip().splitlines()[-1])["files"]["model_release.py"]
        except (IndexError, KeyError, json.JSONDecodeError):
            print(f"bench/dag_parse.py failed (exit {p.returncode}): {p.stderr[-2000:]}")
        if parse:
            worst = max(parse["dagbag_1000_s"], parse["report_1000_s"])
            print(f"{'PASS' if worst <= 10 else 'FAIL'}: DAG parse time at 1000 models (the release DAG file, "
                  f"{parse['dags']} DAGs, no watcher per model): {parse['dagbag_1000_s']:.2f}s in a fresh process, "
                  f"{parse['report_1000_s']:.2f}s in `airflow dags report` (target <= 10 s)")
    print(json.dumps({"bench": "fleet", "results": results, "detection": detection, "freshness": fresh,
                      "dag_parse_1000": parse}))


if __name__ == "__main__":
    main()
