"""A model-based test of the production lifecycle (Hypothesis stateful testing), against the real
SeaweedFS, a real sync sidecar round (`sync_root`, the code `tfs-release sync-all` runs) and a
TF-Serving stand-in process as production reading the sidecar's model config file.

Random sequences of publish (a good version, or one production cannot load), sync rounds, confirm
(production reachable; a closed port; an ingress answering 401), rollback (automatic, or to a version
a person names), promote, abort, retention and a second writer racing the first, for a canary model
or a `rollout: all` one. After every step:
- what the sidecar's config would load (a canary model's stable and canary labels; otherwise the
  highest committed version) is never a version whose rollout failed, was rolled back or aborted,
  unless a person named it or there is no confirmed version to go back to;
- a confirm that could not observe production changes nothing but that version's record (unknown);
- no label update is lost when two writers race;
- every served version has a manifest whose verdict passed or says not-validated;
- the regression gate's baseline is what production serves for stable, and fails closed when
  production cannot be observed.
Bounded: a few examples of a dozen steps (about two minutes)."""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from production import lifecycle, rules
from production.baseline import BaselineUnknown, choose
from production.rollout import confirm
from registry import labels as labels_store
from registry import layout
from registry.config import ModelConfig
from registry.errors import ReleaseError
from registry.publish import publish
from registry.s3 import S3Uri
from registry.serving_config import sync_root
from tfs_api.status import available_versions
from registry.staging import stage
from tests.conftest import ROOT
from tests.integration.registry.test_canary import Server
from tests.integration.validation import candidates

GOLDEN = os.path.join(ROOT, "demo", "golden", "shapes-classifier")
BAD = rules.BAD


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lifecycle-sm")
    return {"good": candidates.save(candidates.classifier_module(), str(d / "good")),
            "bad": candidates.save(candidates.classifier_module(py_op=True), str(d / "bad"))}


def test_lifecycle_state_machine(s3, s3_env, tmp_path, saved_models, monkeypatch):
    from tests.integration.validation.tls_proxy import TokenProxy, make_certs
    from tfs_api.endpoint_auth import EndpointAuth
    bucket = f"lifecycle-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    root = tmp_path / "models"
    root.mkdir()
    config_file = root / "models.config"
    config_file.write_text("model_config_list {\n}\n")
    server = Server(str(config_file), tmp_path / "server.log")
    certs = make_certs(tmp_path)
    # an ingress in front of production that wants a token we do not have: HTTP 401 (the CA is trusted)
    proxy = TokenProxy(server.rest, certs, token="not-ours")
    monkeypatch.setenv("TFS_RELEASE_PRODUCTION_AUTH", json.dumps(
        EndpointAuth.from_connection(login=None, password=None, where="test", extra={"ca_bundle": certs["ca"]}).as_dict()))
    endpoints = {"ok": [{"rest": server.url, "grpc": f"127.0.0.1:{server.grpc}"}],
                 "refused": [{"rest": "http://127.0.0.1:9"}],
                 "401": [{"rest": proxy.url}]}
    stats = {"examples": 0, "steps": 0, "outcomes": {}}

    class Lifecycle(RuleBasedStateMachine):
        @initialize(canary=st.booleans())
        def start(self, canary):
            stats["examples"] += 1
            self.name = f"m{uuid.uuid4().hex[:6]}"
            self.model = ModelConfig(
                name=self.name, serving=S3Uri(bucket, f"{self.name}/"), task="classification", golden=GOLDEN,
                input_types={"serving_default": "image_tensor"},
                extra={"rollout": "canary" if canary else "all",
                       "production": {"endpoints": endpoints["ok"], "confirm_deadline_s": 10}})
            self.named: set[int] = set()   # versions a person named (rollback --to)
            self.n = 0
            self.release("good", "ok")     # production has served a confirmed version before

        # --- helpers -----------------------------------------------------------------------------
        def with_endpoints(self, which):
            # unreachable production: nothing can answer before any deadline; the shortest one the
            # config accepts keeps the example's time on what it tests (the outcome is the same)
            extra = {**self.model.extra, "production": {"endpoints": endpoints[which], "confirm_deadline_s": 1}}
            return dataclasses.replace(self.model, extra=extra)

        def committed(self):
            state = layout.scan(s3, self.model.serving)
            return sorted(set(state.manifests) - set(state.tombstones))

        def served(self):
            return rules.served_version(self.committed(), lifecycle.labels(s3, self.model))

        def states(self):
            return lifecycle.version_states(s3, self.model)

        def sync(self):
            sync_root(s3, [self.model], str(root), config_file=str(config_file),
                      available=lambda name: available_versions(server.url, name))

        # --- rules -------------------------------------------------------------------------------
        @rule(kind=st.sampled_from(["good", "good", "bad"]))
        def publish_version(self, kind):
            """Published without a confirmation (the CLI's publish): never confirmed."""
            self.n += 1
            cand = stage(s3, self.model.serving, saved_models[kind], run_id=f"r{self.n}-{kind}",
                         fields={"input_types": self.model.input_types, "task": "classification"})
            res = publish(s3, self.model.serving, self.name, cand, allow_unvalidated=True)
            lifecycle.on_publish(s3, self.model, res.version)

        @rule(kind=st.sampled_from(["good", "good", "bad"]), how=st.sampled_from(["ok", "ok", "refused", "401"]))
        def release(self, kind, how):
            """What the release DAG does: publish, then confirm in production."""
            self.publish_version(kind)
            self.confirm_newest(how)

        @precondition(lambda self: self.committed())
        @rule()
        def sync_rounds(self):
            """The sidecar: a round, production loads what it lists, a second round moves labels."""
            self.sync()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                now = server.states(self.name)
                if now and all(v in ("AVAILABLE", "END") for v in now.values()):
                    break
                time.sleep(0.3)
            self.sync()

        @precondition(lambda self: self.committed())
        @rule(how=st.sampled_from(["ok", "ok", "refused", "401"]))
        def confirm_newest(self, how):
            n = self.committed()[-1]
            before_states, before_served = self.states(), self.served()
            stop = threading.Event()

            def sidecar():  # production's sidecar keeps running while the release is confirmed
                while not stop.wait(0.5):
                    self.sync()
            side = threading.Thread(target=sidecar)
            if how == "ok":
                self.sync_rounds()
                side.start()
            try:
                rec = confirm(s3, self.with_endpoints(how) if how != "ok" else self.model, n, poll_s=0.3)
            finally:
                stop.set()
                if side.is_alive():
                    side.join()
            key = f"{how}: {rec.get('outcome')}"
            stats["outcomes"][key] = stats["outcomes"].get(key, 0) + 1
            if how == "ok" and rec.get("outcome") not in (rules.CONFIRMED, rules.PROMOTED):
                stats.setdefault("why", []).append(f"{self.model.extra['rollout']} v{n}: {str(rec.get('reason'))[:200]}")
            if how == "ok" and rec.get("outcome") == rules.CONFIRMED and not rec.get("already"):
                # the gate's baseline is what production serves for stable (or its newest version), which
                # may lag the registry (a label moves once its version is loaded); newest_confirmed is the
                # registry's stable label (or the newest confirmed version)
                lab = lifecycle.labels(s3, self.model)
                serves = server.label(self.name, "stable") if lab else max(
                    v for v, st_ in server.states(self.name).items() if st_ == "AVAILABLE")
                assert choose(s3, self.model)["version"] == serves, (lab, rec)
                assert choose(s3, self.model, mode="newest_confirmed")["version"] == (lab["stable"] if lab else n)
            if how != "ok":
                with pytest.raises(BaselineUnknown):  # the gate fails closed when production cannot be seen
                    choose(s3, self.with_endpoints(how))
            if how != "ok" and before_states.get(n) in (rules.PUBLISHED, rules.UNKNOWN):
                # production could not be observed: nothing but N's record changes, nothing is rolled back
                after = self.states()
                assert after[n] == rules.UNKNOWN, (how, rec)
                assert {v: s for v, s in after.items() if v != n} == {v: s for v, s in before_states.items() if v != n}
                assert self.served() == before_served and self.committed()[-1] == n, rec
                assert "could not be observed" in rec["reason"], rec

        @precondition(lambda self: self.committed())
        @rule(data=st.data())
        def rollback(self, data):
            named = data.draw(st.one_of(st.none(), st.sampled_from(self.committed())))
            try:
                res = lifecycle.rollback(s3, self.model, to=named, reason="model test", by="hypothesis")
            except ReleaseError as exc:  # nothing confirmed to return to: said, nothing changed
                assert named is None and "nothing known good" in str(exc), exc
                return
            if named is not None:
                self.named.add(named)
                if res.get("copy"):
                    self.named.add(res["copy"])
            assert res["served"] == self.served(), res

        @precondition(lambda self: self.model.extra["rollout"] == "canary")
        @rule(action=st.sampled_from(["promote", "abort"]))
        def canary_action(self, action):
            fn = lifecycle.promote if action == "promote" else lifecycle.abort
            lab = lifecycle.labels(s3, self.model)
            try:
                fn(s3, self.model, reason="model test", by="hypothesis")
            except ReleaseError as exc:
                if action == "promote" and lab["canary"] is not None:  # only an unconfirmed canary is refused
                    assert self.states().get(lab["canary"]) != rules.CONFIRMED, exc
                return
            if action == "promote":
                assert self.states()[lab["canary"]] == rules.PROMOTED

        @precondition(lambda self: len(self.committed()) > 1)
        @rule(keep=st.integers(1, 2))
        def retention(self, keep):
            before = self.served()
            lifecycle.retention(s3, self.model, keep)
            assert before in self.committed()  # what production serves is never retired

        @precondition(lambda self: self.model.extra["rollout"] == "canary")
        @rule()
        def two_writers(self):
            """A publish and an abort at the same moment: both land in the labels' history (no lost update)."""
            self.n += 1
            cand = stage(s3, self.model.serving, saved_models["good"], run_id=f"r{self.n}-race",
                         fields={"input_types": self.model.input_types, "task": "classification"})
            res = publish(s3, self.model.serving, self.name, cand, allow_unvalidated=True)
            before = len(labels_store.read(s3, self.model.serving)[0]["history"])
            done = []

            def pub():
                lifecycle.on_publish(s3, self.model, res.version)
                done.append("publish")

            def ab():
                try:
                    lifecycle.abort(s3, self.model, reason="race", by="hypothesis")
                    done.append("abort")
                except ReleaseError:
                    pass  # no canary (yet): refused, and said
            threads = [threading.Thread(target=pub), threading.Thread(target=ab)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            lab = labels_store.read(s3, self.model.serving)[0]
            assert len(lab["history"]) == min(before + len(done), labels_store.HISTORY_KEPT), (done, lab["history"][-3:])
            assert sorted(h["action"] for h in lab["history"][-len(done):]) == sorted(done)

        # --- invariants --------------------------------------------------------------------------
        @invariant()
        def production_never_serves_a_bad_version(self):
            stats["steps"] += 1
            committed = self.committed()
            if not committed:
                return
            states = self.states()
            lab = lifecycle.labels(s3, self.model)
            served = [v for v in ((lab.get("stable"), lab.get("canary")) if lab else (max(committed),)) if v]
            recs = lifecycle.records(s3, self.model.serving)
            for v in served:
                key = layout.manifest_key(self.model.serving, v)
                m = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                copy_unconfirmed = m.get("rollback_of") and states.get(v) == rules.FAILED  # alerted; no 2nd copy
                if states.get(v) in BAD and v not in self.named and not copy_unconfirmed:
                    fallback = rules.rollback_target(committed, states, recs, below=v, canary=lab is not None)
                    assert fallback is None, (f"production serves {v} ({states.get(v)}) although {fallback} is "
                                              f"confirmed good", states, lab)
                assert (m.get("validation") or {}).get("verdict") in ("passed", "not-validated"), m

    try:
        run_state_machine_as_test(Lifecycle, settings=settings(
            max_examples=int(os.environ.get("TFS_RELEASE_MODEL_EXAMPLES", "10")), stateful_step_count=12,
            deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck), print_blob=True,
            # no shrinking: a failure prints its whole sequence at once instead of minutes of re-runs
            phases=[Phase.explicit, Phase.reuse, Phase.generate]))
        # the sequences exercised what they are for (a derandomized run: the same every time)
        seen = set(stats["outcomes"])
        assert "ok: confirmed" in seen and seen & {"refused: unknown", "401: unknown"}, stats
        assert seen & {"ok: rolled back", "ok: aborted", "ok: failed"}, stats
    finally:
        print(f"lifecycle model test: {stats}")
        proxy.stop()
        server.stop()
