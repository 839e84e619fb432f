"""validate -> publish for real (SeaweedFS; a tiny TensorFlow classifier; the `process` launcher
runs the TF-Serving stand-in as a subprocess, so no Docker engine is needed): the verdict carries
the candidate's digest and publish checks it; the contract is the config's input_types, never
the ones a candidate declares for itself."""
import json
import os

import pytest

from registry.s3 import S3Uri
from registry.staging import candidate_digest
from tests.conftest import ROOT
from tests.integration.validation import candidates

GOLDEN_CLS = os.path.join(ROOT, "demo", "golden", "shapes-classifier")
NAME = "shapes-classifier"




def _verdict(s3, env, cand):
    run = cand.rstrip("/").rsplit("/", 1)[-1]
    return json.loads(s3.get_object(Bucket=env.serving, Key=f"{NAME}/_reports/{run}/verdict.json")["Body"].read())


def test_verdict_carries_the_candidate_digest_and_publish_accepts_it(cls_env, s3, tmp_path):
    sm = candidates.save(candidates.classifier_module(), str(tmp_path / "sm"))
    cand = candidates.stage_candidate(s3, S3Uri(cls_env.serving, f"{NAME}/"), sm, GOLDEN_CLS, str(tmp_path))
    p = cls_env.cli("validate", NAME, "--candidate", cand, "--launcher", "process", "--json", timeout=600)
    # the tiny model serves and passes the contract, but answers the golden images badly
    assert p.returncode == 1 and "golden: " in p.stderr, p.stderr[-3000:]
    body = json.loads(s3.get_object(Bucket=cls_env.serving, Key=S3Uri.parse(cand).prefix + "candidate.json")["Body"].read())
    v = _verdict(s3, cls_env, cand)
    assert v["model"] == NAME and v["candidate_digest"] == candidate_digest(body["files"])
    # bound to this candidate, so publish refuses it for its result, not for its binding
    p = cls_env.cli("publish", NAME, "--candidate", cand)
    assert p.returncode == 2 and "failed validation" in p.stderr, p.stderr
    # the same verdict, had it passed: publish accepts the validator's own digest
    run = cand.rstrip("/").rsplit("/", 1)[-1]
    s3.put_object(Bucket=cls_env.serving, Key=f"{NAME}/_reports/{run}/verdict.json",
                  Body=json.dumps({**v, "passed": True, "reason": None}).encode())
    out = json.loads(cls_env.cli("publish", NAME, "--candidate", cand, "--json", check=0).stdout)
    assert out["version"] == 1
    m = json.loads(s3.get_object(Bucket=cls_env.serving, Key=f"{NAME}/_manifests/1.json")["Body"].read())
    assert m["candidate_digest"] == v["candidate_digest"] and m["validation"]["verdict"] == "passed"


def test_candidate_cannot_declare_its_own_input_types(cls_env, s3, tmp_path):
    """The SavedModel serves under 'predict' and its candidate.json declares exactly that; the
    config's contract wants 'serving_default', so validation fails (and publish refuses)."""
    sm = candidates.save(candidates.classifier_module(), str(tmp_path / "sm"), signature_name="predict")
    cand = candidates.stage_candidate(s3, S3Uri(cls_env.serving, f"{NAME}/"), sm, GOLDEN_CLS, str(tmp_path),
                                      input_types={"predict": "image_tensor"})
    p = cls_env.cli("validate", NAME, "--candidate", cand, "--launcher", "process", "--json", timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]
    v = _verdict(s3, cls_env, cand)
    failed = {c["name"]: c["detail"] for c in v["checks"] if not c["passed"]}
    assert "signature 'serving_default' is missing (has ['predict'])" in failed["contract: SavedModel signatures"]
    p = cls_env.cli("publish", NAME, "--candidate", cand)
    assert p.returncode == 2 and "failed validation" in p.stderr
