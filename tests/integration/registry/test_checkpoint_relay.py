"""The checkpoint relay (registry/checkpoint_relay.py) against a SeaweedFS of its own whose filer
posts its change events to the relay's endpoint (``notification.webhook``), as ``make services``
and the compose stack configure it: a checkpoint is announced once, seconds after it is complete,
and never while it is being written; a lost notification is caught by the sweep; an idle sweep is
one listing per training location whatever the number of models; a restarted relay announces
nothing twice; notifications need the token. Announcements go to a sink that records them (the
Airflow side is tests/e2e/test_checkpoint_event.py)."""
from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from types import SimpleNamespace

import pytest

import services
from registry.checkpoint_relay import FIRE, RECORD, Relay, serve
from registry.s3 import S3Uri, make_client

from .conftest import make_saved_model, put_checkpoint, put_state

TRAINING, SERVING = "relay-training", "relay-serving"


class Sink:
    """Records announcements; ``latest`` answers as Airflow's newest event would."""

    def __init__(self):
        self.events: list[dict] = []

    def latest(self, uri):
        mine = [e for e in self.events if e["uri"] == uri]
        return {"extra": mine[-1]["extra"]} if mine else None

    def post(self, uri, extra):
        self.events.append({"uri": uri, "extra": extra, "t": time.monotonic()})
        return {"id": len(self.events)}

    def of(self, name):
        return [e["extra"] for e in self.events if e["extra"]["model"] == name]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """SeaweedFS posting every change under the training bucket to 127.0.0.1:<port> with a token."""
    [port] = services.free_ports(1)
    token = secrets.token_urlsafe(16)
    sw = services.start_seaweedfs(str(tmp_path_factory.mktemp("relay-store")),
                                  webhook=(f"http://127.0.0.1:{port}/notify", token, [f"/buckets/{TRAINING}/"]))
    env = sw.env()
    client = make_client(endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=sw.access_key,
                         aws_secret_access_key=sw.secret_key)
    for b in (TRAINING, SERVING):
        client.create_bucket(Bucket=b)
    yield SimpleNamespace(sw=sw, port=port, token=token, client=client, url=f"http://127.0.0.1:{port}/notify")
    sw.stop()


def counted(store):
    """A client of the store whose requests are counted by operation."""
    env = store.sw.env()
    c = make_client(endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=store.sw.access_key,
                    aws_secret_access_key=store.sw.secret_key)
    c.requests = Counter()
    c.meta.events.register("before-call.s3.*", lambda model, **_: c.requests.update([model.name]))
    return c


def models(names, prefix):
    return [SimpleNamespace(name=n, checkpoints=S3Uri(TRAINING, f"{prefix}{n}/checkpoints/"),
                            serving=S3Uri(SERVING, f"{prefix}{n}/")) for n in names]


class Running:
    """A relay with its endpoint and worker thread, as ``tfs-release checkpoint-relay --listen`` runs it."""

    def __init__(self, store, ms, sink, *, sweep_s=3600.0, listen=True):
        self.client = counted(store)
        self.relay = Relay(self.client, ms, sink, sweep_s=sweep_s, debounce_s=0.5)
        self.server = serve(self.relay, "127.0.0.1", store.port, store.token) if listen else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.relay.wake()
        self.thread.join(10)
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.1)
    return value


def test_a_checkpoint_is_announced_once_seconds_after_it_is_complete_never_while_written(store):
    p = f"t1-{secrets.token_hex(3)}/"
    ms = models(["m1", "m2"], p)
    sink = Sink()
    r = Running(store, ms, sink)
    try:
        wait_for("the first sweep", lambda: r.relay.stats["sweeps"] == 1, 10)
        c, pre = store.client, ms[0].checkpoints.prefix
        put_checkpoint(c, TRAINING, pre, 100, shards=2, skip_shards={1})  # the index and one shard of two
        wait_for("a check after the notifications", lambda: r.relay.stats["checks"] >= 1, 10)
        time.sleep(1.5)
        assert sink.events == [], "an incomplete checkpoint was announced"
        assert "missing data shard(s) [1] of 2" in r.relay.watched[0].last
        put_checkpoint(c, TRAINING, pre, 100, shards=2, index=False)     # the last shard
        t0 = time.monotonic()
        put_state(c, TRAINING, pre, "ckpt-100")                          # and the state file, last
        [ev] = wait_for("the announcement", lambda: sink.of("m1"), 15)
        print(f"state file written -> announced in {sink.events[0]['t'] - t0:.2f}s")
        assert ev["checkpoint"] == f"s3://{TRAINING}/{pre}ckpt-100" and ev["step"] == 100 and ev["source"] == "relay"
        assert sink.events[0]["uri"] == f"s3://{TRAINING}/{pre.rstrip('/')}"
        time.sleep(2)
        assert len(sink.events) == 1 and sink.of("m2") == [], sink.events
        # m2 was never listed: a notification costs only the model it names
        assert r.relay.stats["routed"] >= 1 and all(w.name == "m1" or w.last.startswith("wait")
                                                    for w in r.relay.watched)
        # a newer checkpoint: announced too; pruning the old one (a delete) announces nothing
        put_checkpoint(c, TRAINING, pre, 200)
        put_state(c, TRAINING, pre, "ckpt-200", ["ckpt-200"])
        wait_for("the second announcement", lambda: len(sink.of("m1")) == 2, 15)
        for k in (f"{pre}ckpt-100.index", f"{pre}ckpt-100.data-00000-of-00002", f"{pre}ckpt-100.data-00001-of-00002"):
            c.delete_object(Bucket=TRAINING, Key=k)
        time.sleep(2.5)
        assert [e["step"] for e in sink.of("m1")] == [100, 200]
    finally:
        r.close()


def test_a_lost_notification_is_caught_by_the_sweep_and_an_idle_sweep_is_one_listing(store):
    p = f"t2-{secrets.token_hex(3)}/"
    ms = models([f"m{i}" for i in range(30)], p)
    sink = Sink()
    # nobody listens: SeaweedFS's webhook gives up on these notifications
    put_checkpoint(store.client, TRAINING, ms[7].checkpoints.prefix, 5)
    put_state(store.client, TRAINING, ms[7].checkpoints.prefix, "ckpt-5")
    r = Running(store, ms, sink, sweep_s=1.0, listen=False)
    try:
        [ev] = wait_for("the sweep's announcement", lambda: sink.of("m7"), 10)
        assert ev["step"] == 5
        sweeps = r.relay.stats["sweeps"]
        wait_for("three idle sweeps", lambda: r.relay.stats["sweeps"] >= sweeps + 3, 10)
        before = Counter(r.client.requests)
        n = r.relay.stats["sweeps"]
        wait_for("three more idle sweeps", lambda: r.relay.stats["sweeps"] >= n + 3, 10)
        idle = Counter(r.client.requests) - before
        rounds = r.relay.stats["sweeps"] - n
        # one paginated listing of the location per sweep, for 30 models: no GET, no per-model LIST
        assert set(idle) == {"ListObjectsV2"} and idle["ListObjectsV2"] in (rounds, rounds + 1), (idle, rounds)
        assert [f"s3://{loc.bucket}/{loc.prefix}" for loc in r.relay.locations] == [f"s3://{TRAINING}/{p}"]
        assert len(sink.events) == 1
    finally:
        r.close()


def test_a_restarted_relay_announces_nothing_twice_and_records_what_is_published(store, tmp_path):
    from registry.publish import publish
    from registry.staging import stage
    p = f"t3-{secrets.token_hex(3)}/"
    ms = models(["a", "b"], p)
    for m in ms:
        put_checkpoint(store.client, TRAINING, m.checkpoints.prefix, 10)
        put_state(store.client, TRAINING, m.checkpoints.prefix, "ckpt-10")
    sink = Sink()
    first = Relay(counted(store), ms, sink)
    assert {n: d.action for n, d in first.sweep().items()} == {"a": FIRE, "b": FIRE}
    # b's checkpoint gets released (published with its lineage); then the relay restarts without state
    from registry.checkpoints import list_checkpoints
    ck = list_checkpoints(store.client, ms[1].checkpoints).newest
    cand = stage(store.client, ms[1].serving, make_saved_model(tmp_path / "sm"),
                 fields={"source_checkpoint": {"uri": ck.uri, "step": ck.step, "files": ck.files}})
    publish(store.client, ms[1].serving, "b", cand, allow_unvalidated=True)
    second = Relay(counted(store), ms, sink)
    decided = second.sweep()
    assert {n: d.action for n, d in decided.items()} == {"a": "wait", "b": RECORD}, decided
    assert decided["a"].reason == "ckpt-10 was already announced (by relay)"
    # the training job announced a newer one itself: the relay does not announce it again
    put_checkpoint(store.client, TRAINING, ms[0].checkpoints.prefix, 20)
    put_state(store.client, TRAINING, ms[0].checkpoints.prefix, "ckpt-20")
    sink.post(f"s3://{TRAINING}/{ms[0].checkpoints.prefix.rstrip('/')}", {"checkpoint": f"s3://{TRAINING}/{ms[0].checkpoints.prefix}ckpt-20", "source": "training", "model": "a"})
    d = second.check(second.watched[0])
    assert (d.action, d.reason) == ("wait", "ckpt-20 was already announced (by training)")
    # without Airflow's record (a new Asset, say), a published checkpoint is recorded, not announced
    third = Relay(counted(store), ms, Sink())
    decided = third.sweep()
    assert decided["b"].action == RECORD and "already published as version 1" in decided["b"].reason
    assert decided["a"].action == FIRE
    assert len(sink.events) == 3   # two by the first relay, one by "training"


def _post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if not isinstance(body, bytes) else body,
                                 method="POST", headers={"Content-Type": "application/json",
                                                         **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_notifications_need_the_token_and_a_readable_body_and_s3_event_records_work(store):
    p = f"t4-{secrets.token_hex(3)}/"
    ms = models(["x"], p)
    sink = Sink()
    r = Running(store, ms, sink)
    try:
        pre = ms[0].checkpoints.prefix
        status, body = _post(store.url, {"Records": []})
        assert status == 401 and "Authorization: Bearer" in body["error"]
        status, body = _post(store.url, {"Records": []}, "wrong")
        assert status == 401
        status, body = _post(store.url, b"{not json", store.token)
        assert status == 400
        status, body = _post(store.url, {"hello": "world"}, store.token)
        assert status == 400 and "SeaweedFS filer webhook events, S3 event notifications" in body["error"]
        # an S3 event notification (AWS's format: MinIO's webhook, an SQS or SNS body), URL-encoded key
        put_checkpoint(store.client, TRAINING, pre, 3)
        status, body = _post(store.url, {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": TRAINING}, "object": {"key": f"{pre}ckpt-3.index".replace("-", "%2D")}}}]}, store.token)
        assert status == 202 and body == {"routed": 1}
        [ev] = wait_for("the announcement", lambda: sink.of("x"), 10)
        assert ev["step"] == 3
        # a key of no watched model: accepted, nothing to do
        status, body = _post(store.url, {"Records": [{"s3": {"bucket": {"name": TRAINING},
                                                               "object": {"key": "elsewhere/ckpt-1.index"}}}]}, store.token)
        assert (status, body) == (202, {"routed": 0})
        with urllib.request.urlopen(f"http://127.0.0.1:{store.port}/health", timeout=5) as resp:
            health = json.loads(resp.read())
        assert health["healthy"] and health["models"] == 1 and health["fired"] == 1
    finally:
        r.close()


def test_the_cli_says_what_is_wrong_and_tolerates_one_bad_model_entry(model_env):
    import yaml
    name, b = model_env.name, model_env.training
    cfg = yaml.safe_load(open(model_env.config))
    cfg["defaults"] = {"checkpoint_poll_s": 0}
    cfg["models"]["typo-model"] = {"serving": "s3://x/y/", "checkpoints": "s3://t/c/", "task": "detectoin"}
    cfg["models"]["polled"] = {**cfg["models"][name], "checkpoints": f"s3://{b}/polled/", "serving":
                               f"s3://{model_env.serving}/polled/", "checkpoint_poll_s": 5}
    with open(model_env.config, "w") as fh:
        yaml.safe_dump(cfg, fh)
    nowhere = {"AIRFLOW_API_URL": "http://127.0.0.1:1", "AIRFLOW_API_TOKEN": "t"}
    p = model_env.cli("checkpoint-relay", "--once", env={"AIRFLOW_API_URL": "", "AIRFLOW_API_TOKEN": ""}, check=2)
    assert "Airflow's API needs an address and a token" in p.stderr
    p = model_env.cli("checkpoint-relay", "--once", "--models", "polled", env=nowhere, check=2)
    assert "polled is watched by the triggerer (checkpoint_poll_s: 5): set checkpoint_poll_s: 0" in p.stderr
    p = model_env.cli("checkpoint-relay", "--listen", "0.0.0.0:8790", env={**nowhere, "TFS_RELEASE_RELAY_TOKEN": ""},
                      check=2)
    assert "set TFS_RELEASE_RELAY_TOKEN" in p.stderr
    # the typo is named and not watched; the others are (nothing there yet: no call to Airflow)
    p = model_env.cli("checkpoint-relay", "--once", env=nowhere, check=0)
    assert "not watching typo-model: models.typo-model.task" in p.stderr
    assert f"{name}: wait: the prefix holds no checkpoint" in p.stdout and "polled" not in p.stdout
    # a complete checkpoint, and Airflow does not answer: exit 1 with the reason; nothing announced
    put_checkpoint(make_client(**_endpoint(model_env)), b, f"{name}/checkpoints/", 7)
    p = model_env.cli("checkpoint-relay", "--once", env=nowhere, check=1)
    assert "Airflow's API at http://127.0.0.1:1 does not answer" in p.stderr, p.stderr


def _endpoint(model_env):
    return {"endpoint_url": model_env.env["AWS_ENDPOINT_URL"], "aws_access_key_id": model_env.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": model_env.env["AWS_SECRET_ACCESS_KEY"]}


def test_when_airflow_cannot_say_what_was_announced_the_relay_announces_anyway(store):
    """Airflow's events endpoint answers 500 while a run an event created is queued (its start_date
    is empty): a new checkpoint is announced all the same (at worst one extra run, which skips)."""
    class Blind(Sink):
        def latest(self, uri):
            raise RuntimeError("GET /api/v2/assets/events: HTTP 500")
    p = f"t6-{secrets.token_hex(3)}/"
    [m] = models(["q"], p)
    put_checkpoint(store.client, TRAINING, m.checkpoints.prefix, 4)
    sink = Blind()
    d = Relay(counted(store), [m], sink).sweep()["q"]
    assert d.action == FIRE and [e["step"] for e in sink.of("q")] == [4]
