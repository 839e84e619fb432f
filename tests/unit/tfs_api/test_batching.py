"""Batching golden images: which images share a request, and each image's answer split back out."""
import os

import numpy as np
import pytest

from tfs_api import batching
from exporters.golden import GoldenImage, GoldenSet
from exporters.reference import WARMUP_RECORDS, warmup_images


def img(name, h, w, encoded=b"x" * 10):
    return GoldenImage(name=name, encoded=encoded, image=np.zeros((h, w, 3), np.uint8))


def test_plan_groups_equal_keys_in_order_of_first_appearance():
    keys = ["a", "b", "a", "a", "b", "c", "a"]
    assert batching.plan(keys, [1] * 7, size=2) == [[0, 2], [3, 6], [1, 4], [5]]


def test_plan_batch_size_one_is_one_request_per_item():
    assert batching.plan([None] * 3, [1] * 3, size=1) == [[0], [1], [2]]


def test_plan_byte_cap_closes_a_batch_and_a_huge_item_goes_alone():
    # sizes 6, 6, 6, 20, 3 with a 12-byte cap: [6+6] [6] [20 alone] [3]
    assert batching.plan([None] * 5, [6, 6, 6, 20, 3], size=10, max_bytes=12) == [[0, 1], [2], [3], [4]]


def test_plan_refuses_a_zero_batch_size():
    with pytest.raises(ValueError):
        batching.plan(["a"], [1], size=0)


def test_image_tensor_batches_only_same_shapes_bytes_batch_freely():
    images = [img("a", 8, 8), img("b", 4, 6), img("c", 8, 8), img("d", 4, 6), img("e", 8, 8)]
    assert batching.plan_images("image_tensor", images, 2) == [[0, 2], [4], [1, 3]]
    assert batching.plan_images("image_bytes", images, 2) == [[0, 1], [2, 3], [4]]
    assert batching.plan_images("tf_example", images, 32) == [[0, 1, 2, 3, 4]]


def test_image_tensor_byte_cap_counts_pixels():
    images = [img(str(i), 100, 100) for i in range(5)]  # 30000 bytes each
    assert batching.plan_images("image_tensor", images, 32, max_bytes=65000) == [[0, 1], [2, 3], [4]]


def test_split_gives_batch_of_one_answers():
    out = {"probs": np.arange(6.0).reshape(3, 2), "n": np.array([7, 8, 9], np.int32)}
    parts = batching.split(out, 3)
    assert [p["probs"].tolist() for p in parts] == [[[0.0, 1.0]], [[2.0, 3.0]], [[4.0, 5.0]]]
    assert [p["n"].tolist() for p in parts] == [[7], [8], [9]]
    assert parts[1]["n"].dtype == np.int32


def test_split_of_one_returns_the_answer_unchanged():
    out = {"scalar": np.float32(3.0)}
    assert batching.split(out, 1)[0] is out


def test_split_refuses_outputs_without_the_batch_dimension():
    with pytest.raises(batching.BatchError, match=r"outputs without a leading batch dimension of 2: \{'total': \[\]\}") as e:
        batching.split({"probs": np.zeros((2, 3)), "total": np.float32(1)}, 2)
    assert "Set validation_batch_size: 1" in str(e.value)
    with pytest.raises(batching.BatchError, match=r"'probs': \[1, 3\]"):
        batching.split({"probs": np.zeros((1, 3))}, 2)


def test_stack_concatenates_batches_of_one():
    x = batching.stack([np.full((1, 2, 2, 3), i, np.uint8) for i in range(3)])
    assert x.shape == (3, 2, 2, 3) and x[2].min() == 2
    s = batching.stack([np.array([b"a"], dtype=object), np.array([b"bc"], dtype=object)])
    assert s.dtype == object and list(s) == [b"a", b"bc"]


@pytest.mark.parametrize("shape,fixed", [([-1, -1, -1, 3], None), ([None, 8, 8, 3], None), ([1, -1, -1, 3], 1),
                                         ([4], 4), (None, None), ([], None)])
def test_fixed_batch(shape, fixed):
    assert batching.fixed_batch(shape) == fixed


def test_spread_is_even_and_repeats_when_asked_for_more():
    assert batching.spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert batching.spread([0, 1, 2], 7) == [0, 0, 0, 1, 1, 2, 2]
    assert batching.spread([], 3) == [] and batching.spread([1], 0) == []


def test_warmup_is_capped_whatever_the_golden_set_size():
    big = GoldenSet("classification", {0: "a"}, [img(f"{i}", 4, 4) for i in range(500)], "x")
    pairs = warmup_images(big, {"serving_default": "image_tensor", "bytes": "image_bytes"})
    assert len(pairs) == WARMUP_RECORDS == 32
    assert [s for s, _ in pairs].count("bytes") == 16
    assert len({g.name for _, g in pairs}) == 16  # spread: distinct images
    small = GoldenSet("classification", {0: "a"}, [img(f"{i}", 4, 4) for i in range(3)], "x")
    assert len(warmup_images(small, {"serving_default": "image_tensor"})) == 3  # no repeats
    many_sigs = {f"s{i}": "image_bytes" for i in range(40)}
    assert len(warmup_images(big, many_sigs)) == 40  # one per signature even past the cap


def test_reference_archive_round_trip_and_the_older_per_image_layout(tmp_path):
    """One answers.npz per signature, written batch by batch; load_reference reads it and the
    per-image layout of candidates staged before it. (A fake signature function: numpy in, numpy out.)"""
    import json

    from exporters.reference import load_reference, reference_answers

    class Fn:  # stands in for a concrete function: returns per-image sums and the batch size seen
        structured_input_signature = ((), {})
        calls = []

        def __call__(self, inputs):
            x = np.asarray(inputs)
            self.calls.append(len(x))
            return {"sum": _Np(x.reshape(len(x), -1).sum(axis=1).astype(np.float32)[:, None]),
                    "name_bytes": _Np(np.array([b"x"] * len(x), dtype=object))}

    images = [img(str(i), 2 + i % 2, 3) for i in range(5)]
    for i, g in enumerate(images):
        g.image[:] = i
    gs = GoldenSet("classification", {0: "a"}, images, "x")
    fn = Fn()
    idx = reference_answers({"serving_default": fn}, gs, {"serving_default": "image_tensor"}, str(tmp_path / "r"),
                            batch_size=2)
    assert sorted(fn.calls) == [1, 2, 2] and idx["calls"] == 3  # shapes 2x3 (0,2,4) and 3x3 (1,3)
    ref = load_reference(str(tmp_path / "r"))["serving_default"]
    assert [float(ref[str(i)]["sum"][0, 0]) for i in range(5)] == [i * (2 + i % 2) * 3 * 3 for i in range(5)]
    assert ref["3"]["sum"].shape == (1, 1) and ref["3"]["name_bytes"].tolist() == [b"x"]
    assert os.listdir(tmp_path / "r" / "serving_default") == ["answers.npz"]
    # the layout before the archive: one npz per image
    old = tmp_path / "old"
    (old / "sig").mkdir(parents=True)
    np.savez(old / "sig" / "a.npz", probs=np.ones((1, 3)))
    (old / "index.json").write_text(json.dumps({"signatures": {"sig": {"input_type": "image_tensor",
                                                                        "files": {"a.png": "a.npz"}}}}))
    assert load_reference(str(old))["sig"]["a.png"]["probs"].tolist() == [[1.0, 1.0, 1.0]]


class _Np:
    """What a TF function's output tensor offers: .numpy()."""
    def __init__(self, a):
        self.a = a

    def numpy(self):
        return self.a
