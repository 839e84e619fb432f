"""Pure rules behind the sync and publish guarantees: the candidate digest, when a listing is too
uncertain to delete anything, and when the sync's health record is stale."""
import hashlib
import json

import pytest

from registry import manifest
from registry.errors import CandidateError
from registry.staging import candidate_digest
from registry.sync import check_health, uncertainty

FILES = [{"path": "variables/variables.index", "size": 512, "sha256": "b" * 64},
         {"path": "saved_model.pb", "size": 2048, "sha256": "a" * 64}]


def test_candidate_digest_is_sha256_of_sorted_path_size_sha_lines():
    text = f"saved_model.pb\t2048\t{'a' * 64}\nvariables/variables.index\t512\t{'b' * 64}\n"
    assert candidate_digest(FILES) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert candidate_digest(list(reversed(FILES))) == candidate_digest(FILES)      # order does not matter
    assert candidate_digest([{**f, "extra": 1} for f in FILES]) == candidate_digest(FILES)


@pytest.mark.parametrize("change", [
    lambda fs: fs[:1],                                                      # a file removed
    lambda fs: fs + [{"path": "assets/x", "size": 1, "sha256": "c" * 64}],  # a file added
    lambda fs: [{**fs[0], "size": 513}, fs[1]],                             # resized
    lambda fs: [{**fs[0], "sha256": "d" * 64}, fs[1]],                      # changed bytes
    lambda fs: [{**fs[0], "path": "variables/other.index"}, fs[1]],         # renamed
])
def test_candidate_digest_changes_with_the_files(change):
    assert candidate_digest(change([dict(f) for f in FILES])) != candidate_digest(FILES)


def test_candidate_digest_refuses_a_malformed_file_list():
    with pytest.raises(CandidateError, match="lacks a path, size or sha256"):
        candidate_digest([{"path": "saved_model.pb", "size": 3}])


def test_lineage_keeps_where_a_version_came_from():
    m = manifest.build(model="m", version=4, run_id="r", files=FILES, validation={},
                       candidate={"source_checkpoint": {"uri": "s3://t/m/checkpoints/ckpt-9"}},
                       candidate_uri="s3://s/m/_staging/r/", candidate_digest="sha256:x")
    assert manifest.lineage(m) == {
        "model": "m", "version": 4, "run_id": "r", "created": m["created"], "candidate": "s3://s/m/_staging/r/",
        "candidate_digest": "sha256:x", "source_checkpoint": {"uri": "s3://t/m/checkpoints/ckpt-9"},
        "rollback_of": None}


@pytest.mark.parametrize("committed,tombstones,have,uncertain", [
    (set(), set(), set(), False),            # nothing published, nothing here: a fresh deployment
    ({1, 2}, set(), set(), False),           # nothing here yet
    (set(), set(), {1}, True),               # empty listing while serving: never trust it
    (set(), {1}, {1}, True),                 # even with a tombstone: an empty listing deletes nothing
    ({2, 3}, {1}, {1, 2, 3}, False),         # 1 retired (tombstone): fine
    ({2, 3}, set(), {1, 2, 3}, True),        # 1 vanished without a tombstone
    ({3}, {1}, {1, 2, 3}, True),             # 2 vanished without a tombstone
    ({1, 2, 3, 4}, set(), {1, 2}, False),    # more committed than local: fine
])
def test_uncertainty(committed, tombstones, have, uncertain):
    why = uncertainty(committed, tombstones, have, "s3://b/m/", "/models/m")
    assert (why is not None) == uncertain
    if uncertain:
        assert "deleting nothing" in why


def _record(tmp_path, **kw):
    rec = {"interval_s": 5.0, "heartbeat_unix": 1000.0, "last_success_unix": 1000.0, "round_started_unix": None,
           "versions": [3], "problems": []}
    rec.update(kw)
    path = tmp_path / "h.json"
    path.write_text(json.dumps(rec))
    return str(path)


@pytest.mark.parametrize("kw,now,max_age,healthy,says", [
    ({}, 1010.0, None, True, "last successful round 10s ago"),
    ({}, 1121.0, None, False, "wrote no heartbeat for 121s (> 120s)"),          # default: max(3*5, 120) = 120
    ({}, 1119.0, None, True, "last successful round 119s ago"),
    ({"interval_s": 60.0}, 1179.0, None, True, "last successful round 179s ago"),  # 3*60 = 180
    ({}, 1010.0, 5.0, False, "wrote no heartbeat for 10s (> 5s)"),
    ({"heartbeat_unix": 1009.0, "problems": ["listing empty"]}, 1010.0, 5.0, False,
     "no successful sync round within 5s (last: 10s ago); versions [3]; problems: listing empty"),
    ({"heartbeat_unix": 1009.0, "last_success_unix": None}, 1010.0, 5.0, False, "(last: never)"),
    ({"heartbeat_unix": 1009.0, "round_started_unix": 990.0}, 1010.0, 5.0, True, "a round is running since 20s"),
    ({"heartbeat_unix": None}, 1001.0, None, False, "no heartbeat"),
])
def test_check_health(tmp_path, kw, now, max_age, healthy, says):
    ok, why = check_health(_record(tmp_path, **kw), max_age, now=now)
    assert ok == healthy and says in why, why


def test_check_health_without_a_file(tmp_path):
    ok, why = check_health(str(tmp_path / "missing.json"), 60, now=0)
    assert not ok and "no readable health file" in why
