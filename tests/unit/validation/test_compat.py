"""Signature and label-map compatibility of a candidate with its baseline, on hand-built cases."""
import copy

from validation.compat import compare_labels, compare_signatures, compatibility

P = "tensorflow/serving/predict"
BASE = {
    "serving_default": {
        "method": P,
        "inputs": {"inputs": {"dtype": "uint8", "shape": [-1, -1, -1, 3]}},
        "outputs": {"logits": {"dtype": "float32", "shape": [-1, 3]},
                    "probs": {"dtype": "float32", "shape": [-1, 3]}}},
    "serving_bytes": {
        "method": P,
        "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
        "outputs": {"probs": {"dtype": "float32", "shape": [-1, 3]}}},
}


def changed(fn):
    c = copy.deepcopy(BASE)
    fn(c)
    return c


def test_identical_is_compatible_with_nothing_added():
    r = compatibility(BASE, copy.deepcopy(BASE), {"1": "square"}, {"1": "square"})
    assert r == {"compatible": True, "breaking": [], "additions": [],
                 "detail": "compatible: same signatures and label map"}


def test_removed_signature_names_the_new_one_as_a_possible_rename():
    cand = changed(lambda c: c.update(serving_b64=c.pop("serving_bytes")))
    breaking, additions = compare_signatures(BASE, cand)
    assert breaking == ["signature 'serving_bytes' removed (the candidate has 'serving_b64' instead: renamed?)"]
    assert additions == ["signature 'serving_b64'"]


def test_input_dtype_change_breaks():
    cand = changed(lambda c: c["serving_default"]["inputs"]["inputs"].update(dtype="float32"))
    assert compare_signatures(BASE, cand)[0] == ["signature 'serving_default': input 'inputs' dtype uint8 -> float32"]


def test_free_dimension_that_becomes_fixed_breaks_but_fixed_to_free_does_not():
    narrower = changed(lambda c: c["serving_default"]["inputs"]["inputs"].update(shape=[-1, 64, 64, 3]))
    assert compare_signatures(BASE, narrower)[0] == [
        "signature 'serving_default': input 'inputs' dimension 1 ? -> 64 ([?, ?, ?, 3] -> [?, 64, 64, 3])"]
    assert compare_signatures(narrower, BASE) == ([], [])  # accepts more: compatible


def test_rank_change_of_an_input_breaks():
    cand = changed(lambda c: c["serving_default"]["inputs"]["inputs"].update(shape=[-1, -1, 3]))
    assert compare_signatures(BASE, cand)[0] == [
        "signature 'serving_default': input 'inputs' rank 4 -> 3 ([?, ?, ?, 3] -> [?, ?, 3])"]


def test_renamed_input_and_removed_output_break():
    def edit(c):
        c["serving_default"]["inputs"]["images"] = c["serving_default"]["inputs"].pop("inputs")
        del c["serving_default"]["outputs"]["probs"]
    breaking, _ = compare_signatures(BASE, changed(edit))
    assert breaking == [
        "signature 'serving_default': input 'inputs' removed or renamed (candidate inputs: images)",
        "signature 'serving_default': new required input 'images' (uint8 [?, ?, ?, 3]): today's requests do not send it",
        "signature 'serving_default': output 'probs' removed or renamed (candidate outputs: logits)",
    ]


def test_output_class_count_change_breaks_but_added_output_is_an_addition():
    def edit(c):
        c["serving_default"]["outputs"]["probs"]["shape"] = [-1, 4]
        c["serving_default"]["outputs"]["embedding"] = {"dtype": "float32", "shape": [-1, 128]}
    r = compatibility(BASE, changed(edit))
    assert r["breaking"] == ["signature 'serving_default': output 'probs' dimension 1 3 -> 4 ([?, 3] -> [?, 4])"]
    assert r["additions"] == ["signature 'serving_default': output 'embedding'"]
    assert not r["compatible"] and r["detail"].startswith("incompatible with the baseline: ")


def test_additions_only_say_compatible_adds():
    cand = changed(lambda c: c.update(serving_example={"method": P, "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
                                                       "outputs": {}}))
    r = compatibility(BASE, cand)
    assert r["compatible"] and r["detail"] == "compatible, adds signature 'serving_example'"


def test_label_map_meaning_change_and_removal_break_new_class_is_added():
    breaking, additions = compare_labels({"1": "square", "2": "circle", 3: "triangle"},
                                         {"1": "circle", "3": "triangle", "4": "star"})
    assert breaking == ["label map: class 1 changed meaning: 'square' -> 'circle'",
                        "label map: class 2 ('circle') removed"]
    assert additions == ["label map: class 4 ('star')"]


def test_unknown_label_maps_are_not_compared():
    assert compare_labels(None, {"1": "a"}) == ([], [])
    assert compare_labels({"1": "a"}, None) == ([], [])
