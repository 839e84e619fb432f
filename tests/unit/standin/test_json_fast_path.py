"""The stand-in's fast path for columnar numeric inputs builds exactly the tensor the exact,
element-by-element path (TF Serving's json_tensor.cc rules) builds, and leaves every value it
cannot take to the exact path, so errors keep TF Serving's texts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from standin import tensors
from standin.errors import ServingError


def both(value, dtype):
    """(fast, exact) tensors for one columnar value; fast is None when the fast path declined."""
    fast = tensors._fast_numeric(json.loads(json.dumps(value)), dtype)
    flat, shape = tensors._parse_value(json.loads(json.dumps(value)), dtype)
    return fast, tensors._to_array(flat, shape, dtype)


@pytest.mark.parametrize("value,dtype", [
    (np.arange(2 * 3 * 4 * 3).reshape(2, 3, 4, 3).tolist(), tensors.DT_UINT8),
    ([[300, -1, 255]], tensors.DT_UINT8),                      # static_cast wraps, as TF Serving does
    ([[1, 2.5], [3, -4e10]], tensors.DT_FLOAT),                # ints and floats mixed
    ([16777217, 2**53 + 1], tensors.DT_FLOAT),                 # rounding via double, like float(v)
    ([[0.1, 1e-45]], tensors.DT_DOUBLE),
    ([2**40, -5], tensors.DT_INT64),
    ([[7, -8]], tensors.DT_INT16),
    ([4000000000], tensors.DT_UINT32),
])
def test_fast_path_equals_the_exact_path(value, dtype):
    fast, exact = both(value, dtype)
    assert fast is not None
    assert fast.dtype == exact.dtype and fast.shape == exact.shape
    assert np.array_equal(fast, exact)


@pytest.mark.parametrize("value,dtype", [
    ([[1, 2], [3]], tensors.DT_UINT8),          # ragged
    ([1, [2]], tensors.DT_UINT8),               # scalar and list at one level
    ([1.5, 2], tensors.DT_UINT8),               # a float for an int type
    ([2**31], tensors.DT_INT32),                # out of the JSON int range of the type
    ([-1], tensors.DT_UINT32),
    ([2**70], tensors.DT_INT64),
    (["1", 2], tensors.DT_FLOAT),               # a string
    ([None, 1], tensors.DT_FLOAT),
    ([{"b64": "AA=="}], tensors.DT_UINT8),
    ([], tensors.DT_FLOAT),                     # empty: shape [0] by the exact path
    ([1, 2], tensors.DT_STRING),
    ([1, 2], tensors.DT_UINT64),
    (5, tensors.DT_INT32),                      # a scalar
])
def test_fast_path_declines_what_it_cannot_take_exactly(value, dtype):
    assert tensors._fast_numeric(json.loads(json.dumps(value)), dtype) is None


@pytest.mark.parametrize("inputs,text", [
    ([[[[1.5, 2, 3]]]], "is not of expected type: uint8"),
    ([[[[True, 2, 3]]]], "Type: True is not of expected type: uint8"),
    ([[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]], "Encountered list at unexpected size"),
    ([[[1], 2]], "found at incorrect level"),
])
def test_columnar_errors_keep_tf_serving_texts(inputs, text):
    with pytest.raises(ServingError) as info:
        tensors.parse_predict_json(json.dumps({"inputs": {"images": inputs}}), lambda sig: {"images": tensors.DT_UINT8})
    assert info.value.code == 3 and text in info.value.message


def test_a_boolean_anywhere_in_the_request_takes_the_exact_path():
    # numpy would read [true, 2] as [1, 2]; TF Serving refuses the boolean
    with pytest.raises(ServingError, match="Type: True is not of expected type: int32"):
        tensors.parse_predict_json('{"inputs": {"x": [true, 2]}}', lambda sig: {"x": tensors.DT_INT32})
    _, t, _ = tensors.parse_predict_json('{"inputs": {"x": [1, 2]}}', lambda sig: {"x": tensors.DT_INT32})
    assert t["x"].dtype == np.int32 and t["x"].tolist() == [1, 2]
