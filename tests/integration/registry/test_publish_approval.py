"""Approval holds on the command line too (SeaweedFS): `tfs-release publish` and `release` refuse a
model whose config says ``approval: required`` (or ``on_regression`` with an accepted regression in the
candidate's verdict) unless given --approved-by and --reason (exit 2, a one-line reason saying what to
pass); given, the approval is recorded in the version's manifest (``validation.approval``)."""
import datetime as dt
import json
import sys
import types

import pytest
import yaml

from registry import layout
from registry.s3 import S3Uri

from .conftest import make_saved_model, put_checkpoint, put_state, write_verdict

ACCEPTED = {"status": "accepted", "accepted_reason": "new labels (TICKET-3)", "summary": "accuracy -0.03",
            "baseline": {"version": 1, "source": "registry"}, "metrics": [], "failures": []}


def with_approval(model_env, mode: str) -> None:
    cfg = yaml.safe_load(open(model_env.config))
    cfg["models"][model_env.name]["approval"] = mode
    with open(model_env.config, "w") as fh:
        yaml.safe_dump(cfg, fh)


def manifest(s3, model_env, n: int) -> dict:
    return json.loads(s3.get_object(Bucket=model_env.serving, Key=f"{model_env.name}/_manifests/{n}.json")["Body"].read())


def published(s3, model_env) -> list[int]:
    return sorted(layout.scan(s3, S3Uri(model_env.serving, model_env.serving_prefix)).manifests)


def test_publish_of_an_approval_required_model_needs_who_and_why(model_env, s3, staged):
    with_approval(model_env, "required")
    cand = staged()
    write_verdict(s3, model_env, cand)
    p = model_env.cli("publish", model_env.name, "--candidate", cand)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "tfs-release publish: shapes-detector needs an approval to publish (its config says approval: required): "
        "pass --approved-by NAME --reason TEXT (recorded in the version's manifest)")
    p = model_env.cli("publish", model_env.name, "--candidate", cand, "--approved-by", "alice")
    assert p.returncode == 2 and "--approved-by and --reason go together: pass both" in p.stderr
    assert published(s3, model_env) == []

    before = dt.datetime.now(dt.timezone.utc)
    out = json.loads(model_env.cli("publish", model_env.name, "--candidate", cand, "--approved-by", "alice",
                                   "--reason", "golden set reviewed (TICKET-7)", "--json", check=0).stdout)
    assert out["version"] == 1 and out["approval"]["approved_by"] == "alice"
    approval = manifest(s3, model_env, 1)["validation"]["approval"]
    assert (approval["approved_by"], approval["comment"]) == ("alice", "golden set reviewed (TICKET-7)")
    decided = dt.datetime.fromisoformat(approval["decided"])
    assert decided.utcoffset() == dt.timedelta(0) and before <= decided <= dt.datetime.now(dt.timezone.utc)


def test_on_regression_asks_only_for_an_accepted_regression(model_env, s3, staged):
    with_approval(model_env, "on_regression")
    plain = staged()
    write_verdict(s3, model_env, plain, regression={"status": "passed", "baseline": None})
    assert model_env.cli("publish", model_env.name, "--candidate", plain, check=0).stdout.strip() == "1"
    assert "approval" not in manifest(s3, model_env, 1)["validation"]

    regressed = staged()
    write_verdict(s3, model_env, regressed, regression=ACCEPTED)
    p = model_env.cli("publish", model_env.name, "--candidate", regressed)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        "tfs-release publish: shapes-detector needs an approval to publish this candidate (approval: on_regression, "
        "and its verdict accepts a regression: new labels (TICKET-3)): pass --approved-by NAME --reason TEXT "
        "(recorded in the version's manifest)")
    assert published(s3, model_env) == [1]
    assert model_env.cli("publish", model_env.name, "--candidate", regressed, "--approved-by", "bob",
                         "--reason", "the drop is the relabelled class", check=0).stdout.strip() == "2"
    v = manifest(s3, model_env, 2)["validation"]
    assert v["approval"]["approved_by"] == "bob" and v["approval"]["comment"] == "the drop is the relabelled class"
    assert v["regression"]["status"] == "accepted" and v["regression"]["accepted_reason"] == "new labels (TICKET-3)"


def test_rollback_needs_no_approval(model_env, s3, staged):
    """The emergency path: a copy of an earlier, already approved version."""
    with_approval(model_env, "required")
    for _ in range(2):
        cand = staged()
        write_verdict(s3, model_env, cand)
        model_env.cli("publish", model_env.name, "--candidate", cand, "--approved-by", "alice", "--reason", "ok",
                      check=0)
    p = model_env.cli("rollback", model_env.name, "--to", "1", "--reason", "v2 misbehaves")
    assert p.returncode == 0, p.stderr
    assert len(published(s3, model_env)) == 3


def test_release_of_an_approval_required_model_is_refused_before_any_work(model_env, s3):
    with_approval(model_env, "required")
    put_checkpoint(s3, model_env.training, model_env.checkpoints_prefix, 5)
    put_state(s3, model_env.training, model_env.checkpoints_prefix, "ckpt-5")
    p = model_env.cli("release", model_env.name, "--launcher", "process")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        "tfs-release release: shapes-detector needs an approval to publish (its config says approval: required): "
        "pass --approved-by NAME --reason TEXT (recorded in the version's manifest)")
    # nothing exported (no staged candidate), nothing published
    staging = s3.list_objects_v2(Bucket=model_env.serving, Prefix=f"{model_env.name}/_staging/").get("KeyCount")
    assert staging == 0 and published(s3, model_env) == []


@pytest.fixture
def release_in_process(model_env, s3, tmp_path, monkeypatch):
    """cli.release() in this process against SeaweedFS, with export and validation replaced by a staged
    candidate and the verdict written for it (no TensorFlow): what publishing does with the approval."""
    import cli
    from registry import config as config_mod
    put_checkpoint(s3, model_env.training, model_env.checkpoints_prefix, 5)
    put_state(s3, model_env.training, model_env.checkpoints_prefix, "ckpt-5")

    def run(mode: str, verdict_fields: dict, **flags):
        with_approval(model_env, mode)
        model = config_mod.load(model_env.config).model(model_env.name)
        src = make_saved_model(tmp_path / f"sm-{len(list(tmp_path.iterdir()))}")
        cand = model_env.cli("stage", model_env.name, "--dir", src, check=0).stdout.strip()
        verdict = {**write_verdict(s3, model_env, cand, **verdict_fields), "checks": []}
        monkeypatch.setitem(sys.modules, "exporters.export", types.SimpleNamespace(
            export_candidate=lambda client, model, checkpoint_uri=None, **kw: {"candidate": cand}))
        monkeypatch.setitem(sys.modules, "validation.validate", types.SimpleNamespace(
            validate_candidate=lambda *a, **kw: verdict))
        monkeypatch.setattr(cli, "_baseline", lambda *a, **kw: None)
        args = types.SimpleNamespace(checkpoint=None, force=True, dry_run=False, launcher="process", image=None,
                                     accept_regression="new labels (TICKET-3)", baseline="production",
                                     approved_by=flags.get("by"), reason=flags.get("reason"))
        return cand, cli.release(args, model)
    return run


def test_release_records_the_approval_and_refuses_an_unapproved_accepted_regression(release_in_process, s3,
                                                                                    model_env):
    from registry.errors import BadInput
    with pytest.raises(BadInput) as exc:
        release_in_process("on_regression", {"regression": ACCEPTED})
    assert str(exc.value).startswith(
        "shapes-detector needs an approval to publish this candidate (approval: on_regression, and its verdict "
        "accepts a regression: new labels (TICKET-3)): pass --approved-by NAME --reason TEXT")
    assert "can be published so with `tfs-release publish`" in str(exc.value) and published(s3, model_env) == []
    _, out = release_in_process("on_regression", {"regression": ACCEPTED}, by="carol", reason="relabelled")
    assert out["version"] == 1 and out["approval"]["approved_by"] == "carol"
    assert manifest(s3, model_env, 1)["validation"]["approval"]["comment"] == "relabelled"
    _, out = release_in_process("required", {}, by="dave", reason="reviewed")
    assert out["version"] == 2 and manifest(s3, model_env, 2)["validation"]["approval"]["approved_by"] == "dave"
