"""Bad input: a specific message, exit 2, and nothing written to the serving prefix.
Credentials never appear in any output."""
import json
import os

import pytest

from registry.s3 import list_objects

from .conftest import make_saved_model, put_checkpoint


def serving_keys(s3, model_env, exclude_staging=True):
    keys = [o["Key"] for o in list_objects(s3, model_env.serving, model_env.serving_prefix)]
    return [k for k in keys if not (exclude_staging and "/_staging/" in k)]


def test_no_checkpoints(model_env, s3):
    p = model_env.cli("checkpoints", model_env.name)
    assert p.returncode == 2 and "no checkpoints under" in p.stderr and "Check the 'checkpoints' URI" in p.stderr
    assert serving_keys(s3, model_env) == []


def test_only_incomplete_checkpoints(model_env, s3):
    put_checkpoint(s3, model_env.training, model_env.checkpoints_prefix, 7, shards=2, skip_shards={1})
    p = model_env.cli("checkpoints", model_env.name, "--json")
    assert p.returncode == 2
    out = json.loads(p.stdout)
    assert out["newest"] is None and "ckpt-7: missing data shard(s) [1] of 2" in out["error"]
    assert serving_keys(s3, model_env) == []


@pytest.mark.parametrize("args", [
    ("publish", "shapes-detector", "--candidate", "s3://{serving}/shapes-detector/_staging/../../x/", "--unvalidated"),
    ("publish", "shapes-detector", "--candidate", "s3://{serving}//etc/", "--unvalidated"),
])
def test_key_with_dotdot_or_empty_segment(model_env, s3, args):
    p = model_env.cli(*[a.format(serving=model_env.serving) for a in args])
    assert p.returncode == 2 and "refusing prefix" in p.stderr
    assert serving_keys(s3, model_env) == []


def test_config_uri_with_dotdot(model_env, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"models:\n  m:\n    serving: s3://{model_env.serving}/m/../other/\n")
    p = model_env.cli("versions", "m", "--config", str(cfg))
    assert p.returncode == 2 and "'..'" in p.stderr


def test_wrong_credentials(model_env, s3):
    p = model_env.cli("versions", model_env.name, env={"AWS_SECRET_ACCESS_KEY": "not-the-secret-42"})
    assert p.returncode == 2
    assert "credentials are wrong or lack permission" in p.stderr
    assert "not-the-secret-42" not in p.stderr + p.stdout


def test_missing_bucket(model_env, tmp_path):
    cfg = tmp_path / "nobucket.yaml"
    cfg.write_text("models:\n  m:\n    serving: s3://no-such-bucket-xyz/m/\n")
    p = model_env.cli("versions", "m", "--config", str(cfg))
    assert p.returncode == 2 and "bucket 'no-such-bucket-xyz' does not exist" in p.stderr


def test_staged_candidate_without_saved_model_pb(model_env, s3, tmp_path):
    # a folder without saved_model.pb cannot even be staged
    d = make_saved_model(tmp_path / "sm")
    os.unlink(os.path.join(d, "saved_model.pb"))
    p = model_env.cli("stage", model_env.name, "--dir", d)
    assert p.returncode == 2 and "has no saved_model.pb" in p.stderr
    # a candidate someone staged by hand without it cannot be published
    prefix = f"{model_env.name}/_staging/by-hand/"
    s3.put_object(Bucket=model_env.serving, Key=prefix + "saved_model/variables/variables.index", Body=b"x")
    s3.put_object(Bucket=model_env.serving, Key=prefix + "candidate.json",
                  Body=json.dumps({"files": [{"path": "variables/variables.index", "size": 1, "sha256": "0"}]}).encode())
    p = model_env.cli("publish", model_env.name, "--candidate", f"s3://{model_env.serving}/{prefix}", "--unvalidated")
    assert p.returncode == 2 and "has no saved_model.pb" in p.stderr
    assert serving_keys(s3, model_env) == []


def test_candidate_that_does_not_exist(model_env, s3):
    p = model_env.cli("publish", model_env.name, "--candidate",
                      f"s3://{model_env.serving}/{model_env.name}/_staging/nope/", "--unvalidated")
    assert p.returncode == 2 and "nothing is staged there" in p.stderr
    assert serving_keys(s3, model_env) == []


def test_rollback_to_missing_version(model_env, s3, staged):
    model_env.cli("publish", model_env.name, "--candidate", staged(), "--unvalidated", check=0)
    before = serving_keys(s3, model_env)
    p = model_env.cli("rollback", model_env.name, "--to", "5")
    assert p.returncode == 2 and "not a published version (published: 1)" in p.stderr
    assert serving_keys(s3, model_env) == before


def test_unknown_model_and_missing_config(model_env):
    p = model_env.cli("versions", "nope")
    assert p.returncode == 2 and "model 'nope' is not in" in p.stderr
    p = model_env.cli("versions", model_env.name, "--config", "/nonexistent/models.yaml")
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_credentials_never_in_output(model_env, s3, staged, tmp_path):
    """Every command, verbose, with right and wrong credentials: neither key appears anywhere."""
    secret, key_id = model_env.env["AWS_SECRET_ACCESS_KEY"], model_env.env["AWS_ACCESS_KEY_ID"]
    cand = staged()
    outputs = []
    for extra in ({}, {"AWS_SECRET_ACCESS_KEY": secret[::-1]}):
        for args in (("checkpoints", model_env.name), ("versions", model_env.name),
                     ("publish", model_env.name, "--candidate", cand, "--unvalidated"),
                     ("verify", model_env.name, "--deep"), ("rollback", model_env.name, "--to", "1"),
                     ("sync", model_env.name, "--dest", str(tmp_path / "d"), "--once")):
            p = model_env.cli(*args, "-v", "--json", env=extra)
            outputs.append(p.stdout + p.stderr)
    text = "\n".join(outputs)
    assert "published" in text or '"version"' in text  # the commands really ran
    for needle in (secret, key_id, secret[::-1]):
        assert needle not in text
