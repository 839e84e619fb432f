"""A checkpoint named by a trigger parameter or --checkpoint must be inside the model's own
checkpoints prefix (pure logic: no storage is touched before the check)."""
import pytest

from registry.checkpoints import check_inside
from registry.errors import BadInput, CheckpointError
from registry.s3 import S3Uri

LOC = S3Uri("training", "shapes-detector/checkpoints/")


@pytest.mark.parametrize("uri, key", [
    ("s3://training/shapes-detector/checkpoints/ckpt-12", "shapes-detector/checkpoints/ckpt-12"),
    ("s3://training/shapes-detector/checkpoints/run-3/ckpt-5", "shapes-detector/checkpoints/run-3/ckpt-5"),
])
def test_inside_is_accepted(uri, key):
    assert check_inside(LOC, uri) == S3Uri("training", key)


@pytest.mark.parametrize("uri", [
    "s3://training/shapes-segmenter/checkpoints/ckpt-12",     # another model's checkpoints
    "s3://other-bucket/shapes-detector/checkpoints/ckpt-12",  # another bucket
    "s3://training/shapes-detector/checkpoints-old/ckpt-12",  # a sibling whose name starts the same
    "s3://training/shapes-detector/ckpt-12",                  # the model's folder, not its checkpoints
    "s3://training/shapes-detector/checkpoints/",             # the prefix itself, no checkpoint
    "s3://training/shapes-detector/checkpoints",
    "s3://serving/shapes-detector/1/variables/variables",     # a published version's variables
])
def test_outside_is_refused_with_the_prefix_named(uri):
    with pytest.raises(CheckpointError) as err:
        check_inside(LOC, uri)
    msg = str(err.value)
    assert uri in msg and "s3://training/shapes-detector/checkpoints/" in msg and "not inside" in msg


@pytest.mark.parametrize("uri", ["s3://training/shapes-detector/checkpoints/../../other/ckpt-1",
                                 "gs://training/shapes-detector/checkpoints/ckpt-1",
                                 "/train/shapes-detector/checkpoints/ckpt-1"])
def test_escapes_and_other_schemes_are_bad_input(uri):
    with pytest.raises(BadInput):  # CheckpointError is a BadInput too: exit 2 either way
        check_inside(LOC, uri)


def test_a_bucket_wide_location_takes_any_key_in_that_bucket_only():
    whole = S3Uri("training", "")
    assert check_inside(whole, "s3://training/ckpt-1") == S3Uri("training", "ckpt-1")
    with pytest.raises(CheckpointError):
        check_inside(whole, "s3://elsewhere/ckpt-1")
