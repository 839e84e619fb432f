"""Against SeaweedFS and the real sidecar (`tfs-release sync` / `sync-all`): only versions signed by
a trusted key reach a model_base_path (registry/signing.py).

Someone with write access to the serving bucket but not the signing key can write a version whose
files, manifest and sha256s are all consistent: it is never served. Neither is a signed version
changed afterwards (a file, or the manifest's verdict), a signed version replayed under another
number, nor one signed by a key the replica does not trust (unknown, or retired after a rotation).
In every case the previous version keeps serving, the round records why (health file), and the
next round retries. Rollback copies are signed, and never of a version that is not.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from registry.s3 import S3Uri
from registry.sync import HEALTH_FILE, read_health

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def keys(model_env, tmp_path):
    """Three key pairs made by `tfs-release keygen`: {name: (private, public, key id)}."""
    out = {}
    for name in ("a", "b", "c"):
        p = model_env.cli("keygen", str(tmp_path / "keys" / f"{name}.pem"), "--json", check=0)
        k = json.loads(p.stdout)
        assert oct(os.stat(k["private_key"]).st_mode & 0o777) == "0o600"
        out[name] = (k["private_key"], k["public_key"], k["key_id"])
    return out


def publish(model_env, staged, key=None, seed=0, **kw):
    p = model_env.cli("publish", model_env.name, "--candidate", staged(seed=seed), "--unvalidated", "--json",
                      *(("--signing-key", key) if key else ()), **kw)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def sync(model_env, dest, *trusted):
    p = model_env.cli("sync", model_env.name, "--dest", dest, "--once", "--json",
                      *[a for k in trusted for a in ("--trusted-key", k)])
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else {}, p.stderr


def local(dest):
    return sorted(int(n) for n in os.listdir(dest) if n.isdigit())


def get(s3, model_env, rel):
    return s3.get_object(Bucket=model_env.serving, Key=f"{model_env.name}/{rel}")["Body"].read()


def put(s3, model_env, rel, body, **kw):
    s3.put_object(Bucket=model_env.serving, Key=f"{model_env.name}/{rel}", Body=body, **kw)


def write_by_hand(s3, model_env, n, *, from_version, changes=None, manifest_edit=None, signature_of=None):
    """What someone with write access but no key can do: version N's files (copies of
    ``from_version``'s, with ``changes`` {path: new bytes}), a consistent manifest (sha256s recomputed),
    and optionally a copied signature."""
    m = json.loads(get(s3, model_env, f"_manifests/{from_version}.json"))
    for f in m["files"]:
        body = (changes or {}).get(f["path"], get(s3, model_env, f"{from_version}/{f['path']}"))
        f["size"], f["sha256"] = len(body), hashlib.sha256(body).hexdigest()
        put(s3, model_env, f"{n}/{f['path']}", body, Metadata={"sha256": f["sha256"]})
    m["version"] = n
    if manifest_edit:
        manifest_edit(m)
    if signature_of is not None:
        put(s3, model_env, f"_signatures/{n}.sig", get(s3, model_env, f"_signatures/{signature_of}.sig"))
    put(s3, model_env, f"_manifests/{n}.json", json.dumps(m, indent=2, sort_keys=True).encode())
    touch(s3, model_env)


def touch(s3, model_env):
    """The bucket's change marker, as a writer with access would touch it (so replicas look now)."""
    from registry import index
    index.touch(s3, S3Uri(model_env.serving, f"{model_env.name}/"), "written by hand")


def test_signed_versions_are_served_and_show_their_signer(model_env, s3, staged, keys, tmp_path):
    priv, pub, kid = keys["a"]
    out = publish(model_env, staged, priv)
    assert out["version"] == 1 and out["signed_by"] == kid
    m = json.loads(get(s3, model_env, "_manifests/1.json"))
    assert m["signed_by"]["key_id"] == kid and m["signed_by"]["signature"].endswith("/_signatures/1.sig")
    bundle = json.loads(get(s3, model_env, "_signatures/1.sig"))   # a Sigstore bundle, DSSE + in-toto
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == kid
    statement = json.loads(__import__("base64").b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["subject"][0]["name"] == f"{model_env.name}/1"
    names = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert names.pop("../_manifests/1.json") == hashlib.sha256(get(s3, model_env, "_manifests/1.json")).hexdigest()
    assert names == {f["path"]: f["sha256"] for f in m["files"]}
    # versions shows the signer; verify checks it with the public key and says which key signed
    p = model_env.cli("versions", model_env.name, check=0)
    assert f"signed:{kid[:12]}" in p.stdout
    p = model_env.cli("verify", model_env.name, "--trusted-key", pub, check=0)
    assert f"version 1: signed by key {kid[:12]}, verified with {pub}" in p.stdout
    p = model_env.cli("verify", model_env.name, check=0)
    assert "(not checked: no --trusted-key)" in p.stdout
    # a replica trusting the key serves it
    dest = str(tmp_path / "mbp")
    rc, res, err = sync(model_env, dest, pub)
    assert rc == 0 and local(dest) == [1], err
    assert "serves only versions signed by: " + kid[:12] in err
    # a replica without trusted keys keeps today's behaviour, and says so
    rc, res, err = sync(model_env, str(tmp_path / "plain"))
    assert rc == 0 and "verifies no signatures" in err and local(str(tmp_path / "plain")) == [1]


def test_unsigned_tampered_replayed_and_untrusted_versions_never_reach_a_running_sidecar(
        model_env, s3, staged, keys, tmp_path):
    """A real sidecar (`tfs-release sync`, looping) trusting key a: each bad version is refused with
    its reason in the health file while version 1 keeps serving; a good signed version then lands."""
    priv, pub, kid = keys["a"]
    publish(model_env, staged, priv)
    dest = str(tmp_path / "mbp")
    env = dict(os.environ, **model_env.env, PYTHONPATH=ROOT)
    env.pop("TFS_RELEASE_TRUSTED_KEYS", None)
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "cli", "sync", model_env.name, "--dest", dest, "--interval", "0.3",
         "--trusted-key", pub, "--config", model_env.config], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    health = os.path.join(dest, HEALTH_FILE)

    def settled(expect_problem: str | None, versions, timeout=60):
        """Wait for a round that ran after now and shows ``versions`` and the problem."""
        t0, deadline = time.time(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = read_health(health) or {}
            probs = " ".join(h.get("problems") or [])
            if (h.get("last_round_unix") or 0) > t0 + 0.1 and h.get("versions") == versions and (
                    (expect_problem is None and h.get("ok")) or (expect_problem and expect_problem in probs)):
                return h
            assert sidecar.poll() is None, sidecar.stderr.read()
            time.sleep(0.2)
        raise AssertionError(f"no round with versions {versions} and problem {expect_problem!r}: {read_health(health)}")

    try:
        settled(None, [1])
        # 2: written by hand, every sha256 consistent, no signature
        write_by_hand(s3, model_env, 2, from_version=1, changes={"saved_model.pb": b"evil" * 512})
        h = settled("version 2 is not signed", [1])
        assert not h["ok"] and local(dest) == [1] and not os.path.exists(os.path.join(dest, ".tmp-2", "saved_model.pb"))
        assert model_env.cli("verify", model_env.name, "--trusted-key", pub).returncode == 1
        # 3: the same, with version 1's (valid) signature copied beside it
        write_by_hand(s3, model_env, 3, from_version=1, changes={"saved_model.pb": b"evil" * 512}, signature_of=1)
        settled("version 3: the manifest differs from the one that was signed", [1])
        # 4: version 1 replayed under a higher number: its files, manifest and signature copied as they are
        for f in json.loads(get(s3, model_env, "_manifests/1.json"))["files"]:
            put(s3, model_env, f"4/{f['path']}", get(s3, model_env, f"1/{f['path']}"))
        put(s3, model_env, "_signatures/4.sig", get(s3, model_env, "_signatures/1.sig"))
        put(s3, model_env, "_manifests/4.json", get(s3, model_env, "_manifests/1.json"))
        touch(s3, model_env)
        settled("is for shapes-detector version 1, not shapes-detector version 4", [1])
        # 5: signed by key c, which this replica does not trust
        publish(model_env, staged, keys["c"][0], seed=5)
        settled(f"version 5 is signed by key {keys['c'][2][:12]}, which this replica does not trust", [1])
        # a good version, signed with the trusted key, is served beside 1; the refused ones stay refused
        out = publish(model_env, staged, priv, seed=6)
        h = settled("version 5 is signed by key", [1, out["version"]])
        assert "version 2 is not signed" in " ".join(h["problems"]) and local(dest) == [1, out["version"]]
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.wait(timeout=30)
    assert sidecar.returncode == 0


def test_a_signed_version_changed_afterwards_is_never_served(model_env, s3, staged, keys, tmp_path):
    priv, pub, _ = keys["a"]
    publish(model_env, staged, priv)
    dest = str(tmp_path / "mbp")
    assert sync(model_env, dest, pub)[0] == 0 and local(dest) == [1]
    publish(model_env, staged, priv, seed=2)
    # one file changed after signing (same size, its sha256 metadata updated): the download's digest
    # is not the signed one
    body = bytearray(get(s3, model_env, "2/variables/variables.index"))
    body[0] ^= 0xFF
    put(s3, model_env, "2/variables/variables.index", bytes(body),
        Metadata={"sha256": hashlib.sha256(bytes(body)).hexdigest()})
    rc, res, err = sync(model_env, dest, pub)
    assert rc == 1 and local(dest) == [1] and "variables/variables.index: sha256" in err, err
    assert [f["version"] for f in res["failed"]] == [2]
    # ... and the manifest edited to match it: the manifest is no longer the signed one
    m = json.loads(get(s3, model_env, "_manifests/2.json"))
    for f in m["files"]:
        if f["path"] == "variables/variables.index":
            f["sha256"] = hashlib.sha256(bytes(body)).hexdigest()
    put(s3, model_env, "_manifests/2.json", json.dumps(m, indent=2, sort_keys=True).encode())
    rc, res, err = sync(model_env, dest, pub)
    assert rc == 1 and local(dest) == [1] and "version 2: the manifest differs from the one that was signed" in err
    # a verdict moved onto a version: an edited validation block is caught the same way
    publish(model_env, staged, priv, seed=3)
    m = json.loads(get(s3, model_env, "_manifests/3.json"))
    m["validation"] = {"verdict": "passed", "report": "s3://elsewhere/report.html"}
    put(s3, model_env, "_manifests/3.json", json.dumps(m, indent=2, sort_keys=True).encode())
    rc, res, err = sync(model_env, dest, pub)
    assert rc == 1 and local(dest) == [1] and "version 3: the manifest differs" in err
    health = read_health(os.path.join(dest, HEALTH_FILE))
    assert health["versions"] == [1] and {f["version"] for f in health["failed"]} == {2, 3}
    p = model_env.cli("verify", model_env.name, "--trusted-key", pub)
    assert p.returncode == 1 and "PROBLEM version 2: _signatures/2.sig" in p.stdout


def test_rotation_keeps_old_versions_serving_while_their_key_is_trusted(model_env, s3, staged, keys, tmp_path):
    (a, a_pub, a_id), (b, b_pub, b_id) = keys["a"], keys["b"]
    publish(model_env, staged, a)                     # signed with the old key
    publish(model_env, staged, b, seed=2)             # the new key
    publish(model_env, staged, b, seed=3)
    dest = str(tmp_path / "both")
    rc, _, err = sync(model_env, dest, a_pub, b_pub)  # during the rotation: both trusted
    assert rc == 0 and local(dest) == [1, 2, 3], err
    p = model_env.cli("verify", model_env.name, "--trusted-key", a_pub, "--trusted-key", b_pub, check=0)
    assert f"version 1: signed by key {a_id[:12]}, verified with {a_pub}" in p.stdout
    assert f"version 2: signed by key {b_id[:12]}, verified with {b_pub}" in p.stdout
    # the old key retired: its versions are refused (reason named), the new key's still serve
    dest = str(tmp_path / "new-only")
    rc, res, err = sync(model_env, dest, b_pub)
    assert rc == 1 and local(dest) == [2, 3]
    assert f"version 1 is signed by key {a_id[:12]}, which this replica does not trust" in err
    # sync-all verifies the same way (one TF Serving for several models)
    root = str(tmp_path / "root")
    p = model_env.cli("sync-all", "--root", root, "--once", "--json", "--trusted-key", b_pub)
    assert p.returncode == 1 and local(os.path.join(root, model_env.name)) == [2, 3]
    assert "version 1 is signed by key" in json.loads(p.stdout)["problems"][model_env.name]
    # TFS_RELEASE_TRUSTED_KEYS: the same list from the environment (how the compose sidecar gets it)
    p = model_env.cli("sync", model_env.name, "--dest", str(tmp_path / "env"), "--once",
                      env={"TFS_RELEASE_TRUSTED_KEYS": f"{a_pub}:{b_pub}"})
    assert p.returncode == 0 and local(str(tmp_path / "env")) == [1, 2, 3]
    # a private key given as a trusted key, or a missing file: a clear error before anything starts
    p = model_env.cli("sync", model_env.name, "--dest", dest, "--once", "--trusted-key", a)
    assert p.returncode == 2 and "is not a PEM public key" in p.stderr
    p = model_env.cli("sync", model_env.name, "--dest", dest, "--once", "--trusted-key", a + ".missing")
    assert p.returncode == 2 and "cannot read the trusted key" in p.stderr


def _config(model_env, tmp_path, name, **extra):
    cfg = yaml.safe_load(open(model_env.config))
    cfg["models"][model_env.name].update(extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_rollback_signs_its_copy_and_never_signs_an_unsigned_version(model_env, s3, staged, keys, tmp_path):
    (a, a_pub, a_id), (b, b_pub, b_id) = keys["a"], keys["b"]
    publish(model_env, staged, a)                         # 1 signed with a
    publish(model_env, staged, None, seed=2)              # 2 unsigned (before signing was turned on)
    publish(model_env, staged, b, seed=3)                 # 3 signed with b
    publish(model_env, staged, a, seed=4)                 # 4 signed with a: production serves it
    p = model_env.cli("rollback", model_env.name, "--to", "2", "--signing-key", a)
    assert p.returncode == 2 and "not rolling back to version 2: version 2 is not signed" in p.stderr
    p = model_env.cli("rollback", model_env.name, "--to", "3", "--signing-key", a)
    assert p.returncode == 2 and f"signed by key {b_id[:12]}, which this replica does not trust" in p.stderr
    assert json.loads(model_env.cli("versions", model_env.name, "--json").stdout)["versions"][-1]["version"] == 4
    p = model_env.cli("rollback", model_env.name, "--to", "3", "--signing-key", a, "--trusted-key", b_pub, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["copy"] == 5
    m5 = json.loads(get(s3, model_env, "_manifests/5.json"))
    assert m5["rollback_of"] == 3 and m5["signed_by"]["key_id"] == a_id
    dest = str(tmp_path / "mbp")
    rc, _, err = sync(model_env, dest, a_pub)             # a replica that trusts only a: 1, 4 and the copy 5
    assert local(dest) == [1, 4, 5] and "version 3 is signed by key" in err and "version 2 is not signed" in err
    # a model whose config says it is signed: no key, no rollback (nor publish)
    signed_cfg = _config(model_env, tmp_path, "signed.yaml", signing_conn_id="tfs_release_signing")
    p = model_env.cli("rollback", model_env.name, "--to", "1", "--config", signed_cfg)
    assert p.returncode == 2 and "versions are signed (config signing_conn_id" in p.stderr
    p = model_env.cli("publish", model_env.name, "--candidate", staged(seed=9), "--unvalidated", "--config", signed_cfg)
    assert p.returncode == 2 and "pass --signing-key FILE" in p.stderr
    assert json.loads(model_env.cli("versions", model_env.name, "--json").stdout)["versions"][-1]["version"] == 5


def test_a_canary_rollback_never_labels_an_unsigned_version(model_env, s3, staged, keys, tmp_path):
    a, a_pub, _ = keys["a"]
    cfg = _config(model_env, tmp_path, "canary.yaml", rollout="canary")
    for key, seed in ((None, 1), (a, 2)):   # 1 unsigned (stable), 2 signed (canary)
        p = model_env.cli("publish", model_env.name, "--candidate", staged(seed=seed), "--unvalidated", "--json",
                          "--config", cfg, *(("--signing-key", key) if key else ()))
        assert p.returncode == 0, p.stderr
    assert (json.loads(p.stdout)["labels"]["stable"], json.loads(p.stdout)["labels"]["canary"]) == (1, 2)
    p = model_env.cli("rollback", model_env.name, "--to", "1", "--signing-key", a, "--config", cfg)
    assert p.returncode == 2 and "not rolling back to version 1: version 1 is not signed" in p.stderr
    labels = json.loads(model_env.cli("labels", model_env.name, "--json", "--config", cfg).stdout)
    assert (labels["stable"], labels["canary"]) == (1, 2)   # nothing moved, nothing recorded


def test_a_lost_signature_write_is_recognised_and_an_orphan_signature_is_cleaned(model_env, s3, staged, keys):
    from registry import manifest
    from registry.errors import IntegrityError
    from registry.layout import SAVED_MODEL
    from registry.publish import claim_next, copy_version, write_signature
    from registry.signing import SigningKey
    from registry.staging import read_candidate
    from registry.versions import clean_orphans, verify
    serving = S3Uri(model_env.serving, f"{model_env.name}/")
    cand, body = read_candidate(s3, staged())
    n, _ = claim_next(s3, serving, "run-1")
    copy_version(s3, serving, n, cand.bucket, cand.prefix + SAVED_MODEL, body["files"])
    m = manifest.build(model=model_env.name, version=n, run_id="run-1", files=body["files"], candidate=body,
                       validation={"verdict": "not-validated"}, candidate_uri=str(cand))
    a, b = SigningKey.from_file(keys["a"][0]), SigningKey.from_file(keys["b"][0])
    write_signature(s3, serving, model_env.name, n, m, a)
    first = get(s3, model_env, f"_signatures/{n}.sig")
    write_signature(s3, serving, model_env.name, n, m, a)      # its response lost: the retry gets 412, accepts
    assert get(s3, model_env, f"_signatures/{n}.sig") == first  # never overwritten
    with pytest.raises(IntegrityError, match="is not this publish's signature"):
        write_signature(s3, serving, model_env.name, n, m, b)
    # killed before its commit: an orphan whose signature clean-orphans removes with its files
    assert [o["version"] for o in verify(s3, serving, grace_seconds=0).orphans] == [n]
    assert [o["version"] for o in clean_orphans(s3, serving, grace_seconds=0)] == [n]
    assert s3.list_objects_v2(Bucket=model_env.serving, Prefix=f"{model_env.name}/_signatures/")["KeyCount"] == 0


def test_keygen_never_overwrites_and_bad_keys_are_named(model_env, staged, keys, tmp_path):
    a, a_pub, _ = keys["a"]
    p = model_env.cli("keygen", a)
    assert p.returncode == 2 and "exists: not overwritten" in p.stderr
    p = model_env.cli("publish", model_env.name, "--candidate", staged(), "--unvalidated", "--signing-key", a_pub)
    assert p.returncode == 2 and "is not a PEM private key" in p.stderr
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa
    (tmp_path / "rsa.pem").write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    p = model_env.cli("publish", model_env.name, "--candidate", staged(), "--unvalidated",
                      "--signing-key", str(tmp_path / "rsa.pem"))
    assert p.returncode == 2 and "is not an ECDSA P-256/P-384/P-521 key" in p.stderr
    # the key as PEM text in the environment (how a DAG task hands it to the step): signs the same
    p = model_env.cli("publish", model_env.name, "--candidate", staged(), "--unvalidated", "--json",
                      env={"TFS_RELEASE_SIGNING_KEY": open(a).read()})
    assert p.returncode == 0 and json.loads(p.stdout)["signed_by"] == keys["a"][2]


def test_a_canary_label_never_names_a_refused_version_and_retention_retires_signatures(model_env, s3, staged, keys,
                                                                                       tmp_path):
    """sync-all's round for a canary model (stable v1 signed, canary v2 unsigned) with the key trusted:
    v2 is refused, so TF Serving's config names v1 only and the canary label waits; retention takes a
    retired version's signature with its manifest."""
    from registry.config import load
    from registry.serving_config import sync_root
    from registry.signing import trusted_keys
    a, a_pub, _ = keys["a"]
    cfg = _config(model_env, tmp_path, "canary.yaml", rollout="canary")
    for key, seed in ((a, 1), (None, 2)):
        p = model_env.cli("publish", model_env.name, "--candidate", staged(seed=seed), "--unvalidated", "--json",
                          "--config", cfg, *(("--signing-key", key) if key else ()))
        assert p.returncode == 0, p.stderr
    assert (json.loads(p.stdout)["labels"]["stable"], json.loads(p.stdout)["labels"]["canary"]) == (1, 2)
    model = load(cfg).model(model_env.name)
    root = tmp_path / "root"
    res = sync_root(s3, [model], str(root), config_file=str(root / "models.config"),
                    available=lambda name: {1, 2}, trusted=trusted_keys([a_pub]))
    assert [f["version"] for f in res[model_env.name].failed] == [2]
    [entry] = res["_config"]["models"]
    assert entry["versions"] == [1] and entry["labels"] == {"stable": 1}, entry
    assert res["_config"]["pending"] == [model_env.name]       # the canary label waits: rounds stay full
    # retention (rollout: all config) retires version 1 with its signature
    publish(model_env, staged, a, seed=3)
    p = model_env.cli("retention", model_env.name, "--keep", "2")
    assert p.returncode == 0, p.stderr
    keys_left = [o["Key"] for o in s3.list_objects_v2(Bucket=model_env.serving,
                                                       Prefix=f"{model_env.name}/_signatures/").get("Contents", [])]
    assert f"{model_env.name}/_signatures/1.sig" not in keys_left and f"{model_env.name}/_signatures/3.sig" in keys_left
