"""Tensor conversions of the TF-Serving stand-in.

JSON <-> numpy follows TensorFlow Serving's util/json_tensor.cc (row "instances" and columnar
"inputs" formats, ``{"b64": ...}`` binary strings, outputs named ``*_bytes`` written as b64, floats
written in their shortest round-trip form, NaN/Infinity tokens, the same error texts).
TensorProto <-> numpy follows Tensor::FromProto / Tensor::AsProtoField (typed ``*_val`` fields).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

import numpy as np

from .errors import INVALID_ARGUMENT, UNIMPLEMENTED, ServingError

ROW, COLUMNAR = "row", "columnar"

# DataType enum numbers (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_COMPLEX128, DT_HALF = 8, 9, 10, 14, 17, 18, 19
DT_UINT32, DT_UINT64 = 22, 23

_NP = {DT_FLOAT: np.float32, DT_DOUBLE: np.float64, DT_INT32: np.int32, DT_UINT8: np.uint8,
       DT_INT16: np.int16, DT_INT8: np.int8, DT_STRING: object, DT_INT64: np.int64, DT_BOOL: np.bool_,
       DT_UINT16: np.uint16, DT_UINT32: np.uint32, DT_UINT64: np.uint64, DT_HALF: np.float16,
       DT_COMPLEX64: np.complex64, DT_COMPLEX128: np.complex128}

# DataTypeString() spellings (tensorflow/core/framework/types.cc).
_TF_NAMES = {DT_FLOAT: "float", DT_DOUBLE: "double", DT_INT32: "int32", DT_UINT8: "uint8",
             DT_INT16: "int16", DT_INT8: "int8", DT_STRING: "string", DT_COMPLEX64: "complex64",
             DT_INT64: "int64", DT_BOOL: "bool", DT_BFLOAT16: "bfloat16", DT_UINT16: "uint16",
             DT_COMPLEX128: "complex128", DT_HALF: "half", DT_UINT32: "uint32", DT_UINT64: "uint64"}

_INT_RANGE = {DT_INT32: (-2**31, 2**31 - 1), DT_INT16: (-2**31, 2**31 - 1), DT_INT8: (-2**31, 2**31 - 1),
              DT_UINT8: (-2**31, 2**31 - 1), DT_INT64: (-2**63, 2**63 - 1),
              DT_UINT32: (0, 2**32 - 1), DT_UINT64: (0, 2**64 - 1)}


def dtype_name(dtype: int) -> str:
    return _TF_NAMES.get(dtype, f"type{dtype}")


def numpy_dtype(dtype: int):
    if dtype not in _NP:
        raise ServingError(UNIMPLEMENTED, f"Unsupported tensor type: {dtype_name(dtype)}")
    return _NP[dtype]


def dtype_of_array(arr: np.ndarray) -> int:
    if arr.dtype == object or arr.dtype.kind in "SU":
        return DT_STRING
    for k, v in _NP.items():
        if v is not object and arr.dtype == np.dtype(v):
            return k
    raise ServingError(UNIMPLEMENTED, f"Unsupported numpy dtype {arr.dtype}")


# ----------------------------------------------------------------------------------------- JSON in
def _dbg(val: Any) -> str:
    try:
        text = json.dumps(val, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(val)
    return text[:256]


def _json_type(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _type_error(val: Any, dtype: int) -> ServingError:
    return ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(val)} Type: {_json_type(val)} "
                                          f"is not of expected type: {dtype_name(dtype)}")


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _b64decode(val: Any) -> bytes:
    if not _is_b64(val):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(val)} not formatted correctly for base64 data")
    text = val["b64"]
    try:
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:  # absl::Base64Unescape also takes web-safe and unpadded input
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ServingError(INVALID_ARGUMENT, "Unable to base64 decode") from None


def _convert(val: Any, dtype: int) -> Any:
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise _type_error(val, dtype)
        return float(val)
    if dtype in _INT_RANGE:
        lo, hi = _INT_RANGE[dtype]
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            raise _type_error(val, dtype)
        return val
    if dtype == DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return val.encode("utf-8")
    if dtype == DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    raise ServingError(UNIMPLEMENTED, f"Conversion of JSON Value: {_dbg(val)} to type: {dtype_name(dtype)}")


def _dense_shape(val: Any) -> list[int]:
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(val)} found at incorrect level: {level + 1} "
                                                 f"in the JSON DOM. Expected at level: {rank}")
        if isinstance(val, dict):
            if dtype != DT_STRING:
                raise _type_error(val, dtype)
            out.append(_b64decode(val))
        else:
            out.append(_convert(val, dtype))
        return
    if level >= rank:
        raise ServingError(INVALID_ARGUMENT, f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise ServingError(INVALID_ARGUMENT, f"Encountered list at unexpected size: {len(val)} at level: "
                                             f"{level} expected size: {shape[level]}")
    for v in val:
        _fill(v, level + 1, shape, dtype, out)


def _to_array(flat: list, shape: list[int], dtype: int) -> np.ndarray:
    npd = numpy_dtype(dtype)
    if dtype == DT_STRING:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    elif dtype in _INT_RANGE and dtype not in (DT_UINT64,):
        arr = np.array(flat, dtype=np.int64).astype(npd)  # static_cast, like Tensor::FromProto
    else:
        arr = np.array(flat, dtype=npd)
    return arr.reshape(shape)


def _parse_value(val: Any, dtype: int) -> tuple[list, list[int]]:
    shape = _dense_shape(val)
    flat: list = []
    _fill(val, 0, shape, dtype, flat)
    return flat, shape


# Numeric types a columnar value may take the fast path for (see _fast_numeric).
_FAST = {DT_FLOAT, DT_DOUBLE, DT_INT8, DT_INT16, DT_INT32, DT_INT64, DT_UINT8, DT_UINT16, DT_UINT32}


def _fast_numeric(val: Any, dtype: int) -> np.ndarray | None:
    """The tensor ``_fill`` + ``_to_array`` would build, made by numpy in C (TF Serving parses in
    C++; element by element in Python, a batch of images costs ~10 ms per 64x64 image), or None
    when the value is anything but a rectangular list of plain JSON numbers that the exact path
    accepts: then the exact path runs and raises TF Serving's error. The caller makes sure the
    request holds no JSON ``true``/``false`` (numpy would take them for 1/0)."""
    if not isinstance(val, list) or dtype not in _FAST:
        return None
    try:
        arr = np.array(val)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.size == 0 or arr.dtype.kind not in "if":
        return None
    if dtype in (DT_FLOAT, DT_DOUBLE):  # ints and floats, each as float(v): via double, like the exact path
        return arr.astype(np.float64).astype(_NP[dtype])
    lo, hi = _INT_RANGE[dtype]
    if arr.dtype.kind != "i" or arr.min() < lo or arr.max() > hi:
        return None
    return arr.astype(np.int64).astype(_NP[dtype])  # static_cast, like _to_array


def _value_to_array(val: Any, dtype: int, fast: bool) -> np.ndarray:
    arr = _fast_numeric(val, dtype) if fast else None
    if arr is None:
        flat, shape = _parse_value(val, dtype)
        arr = _to_array(flat, shape, dtype)
    return arr


def parse_predict_json(body: bytes | str, get_input_dtypes) -> tuple[str, dict[str, np.ndarray], str]:
    """Parses a REST predict body. ``get_input_dtypes(signature_name)`` returns {alias: DataType}
    (ordered as the signature lists them) or raises. Returns (signature_name, inputs, format)."""
    if not body:
        raise ServingError(INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServingError(INVALID_ARGUMENT, f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(doc)} Is not object")
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(doc)} not formatted correctly. "
                                             "'signature_name' key must be a string value.")
    infos: Mapping[str, int] = get_input_dtypes(signature_name)
    if not infos:
        raise ServingError(INVALID_ARGUMENT, "Failed to get input map for signature: "
                                             + (signature_name or "DEFAULT"))
    if "instances" in doc and "inputs" in doc:
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(doc)} Not formatted correctly expecting only "
                                             "one of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(doc)} Expecting 'instances' to be an list/array")
        if not inst:
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_dbg(doc)} No values in 'instances' array")
        return signature_name, _from_instances(inst, infos), ROW
    if "inputs" in doc:
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "replace")
        fast = b"true" not in raw and b"false" not in raw  # no JSON booleans anywhere in the request
        return signature_name, _from_inputs(doc["inputs"], infos, fast), COLUMNAR
    raise ServingError(INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


def _from_instances(inst: list, infos: Mapping[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(inst[0], dict) and len(infos) > 1:
        raise ServingError(INVALID_ARGUMENT, "instances is a plain list, but expecting list of objects as "
                                             "multiple input tensors required as per tensorinfo_map")

    def is_obj(v):
        return isinstance(v, dict) and not _is_b64(v)

    objects = is_obj(inst[0])
    names = set(infos)
    flats: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item, name):
        if name not in infos:
            raise ServingError(INVALID_ARGUMENT, f"JSON object: does not have named input: {name}")
        flat, shape = _parse_value(item, infos[name])
        if name not in sizes:
            sizes[name], shapes[name], flats[name] = len(flat), shape, []
        elif sizes[name] != len(flat):
            raise ServingError(INVALID_ARGUMENT, f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        elif shapes[name] != shape:
            raise ServingError(INVALID_ARGUMENT, f"Expecting shape [{','.join(map(str, shapes[name]))}] "
                                                 f"but got: [{','.join(map(str, shape))}]")
        flats[name].extend(flat)

    for i, elem in enumerate(inst):
        if objects:
            if not is_obj(elem):
                raise ServingError(INVALID_ARGUMENT, f"Expecting object but got list at item {i} of input list")
            for name, v in elem.items():
                try:
                    add(v, name)
                except ServingError as exc:
                    raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {i} key: {name} of "
                                                         f"'instances' list. Error: {exc}") from None
            if set(elem) != names:
                raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {i} of 'instances' list. "
                                                     f"JSON object: {_dbg(elem)} keys must be equal to: "
                                                     f"{','.join(sorted(names))}")
        else:
            if is_obj(elem):
                raise ServingError(INVALID_ARGUMENT, f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, next(iter(infos)))
            except ServingError as exc:
                raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {i} of 'instances' list. "
                                                     f"Error: {exc}") from None
    return {n: _to_array(flats[n], [len(inst)] + shapes[n], infos[n]) for n in flats}


def _from_inputs(val: Any, infos: Mapping[str, int], fast: bool = False) -> dict[str, np.ndarray]:
    if not isinstance(val, dict) or _is_b64(val):
        if len(infos) > 1:
            raise ServingError(INVALID_ARGUMENT, "inputs is a plain value/list, but expecting an object as "
                                                 "multiple input tensors required as per tensorinfo_map")
        name, dtype = next(iter(infos.items()))
        return {name: _value_to_array(val, dtype, fast)}
    out = {}
    for name, dtype in infos.items():
        if name not in val:
            raise ServingError(INVALID_ARGUMENT, f"Missing named input: {name} in 'inputs' object.")
        out[name] = _value_to_array(val[name], dtype, fast)
    return out


# ---------------------------------------------------------------------------------------- JSON out
def _json_values(name: str, arr: np.ndarray) -> Any:
    """numpy -> nested Python values as TF Serving writes them."""
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype == np.float64:
            return arr.tolist()
        # shortest representation that round-trips in the tensor's own precision (no noise digits)
        strs = arr.astype(np.float32).astype(str)
        return np.vectorize(float, otypes=[object])(strs).tolist() if arr.ndim else float(strs)
    if kind in "iub":
        return arr.tolist()
    if kind in "OSU":
        as_b64 = name.endswith("_bytes")

        def conv(x):
            b = x if isinstance(x, bytes) else str(x).encode()
            return {"b64": base64.b64encode(b).decode("ascii")} if as_b64 else b.decode("utf-8", "replace")
        if arr.ndim == 0:
            return conv(arr.item())
        return np.vectorize(conv, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    raise ServingError(INVALID_ARGUMENT, f"Failed to write JSON value for tensor type: {arr.dtype}")


def outputs_to_json(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    if not outputs:
        raise ServingError(INVALID_ARGUMENT, "Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == ROW:
        batch = -1
        for n in names:
            a = outputs[n]
            if a.ndim == 0:
                raise ServingError(INVALID_ARGUMENT, f"Tensor name: {n} has no shape information ")
            if batch >= 0 and a.shape[0] != batch:
                raise ServingError(INVALID_ARGUMENT, f"Tensor name: {n} has inconsistent batch size: "
                                                     f"{a.shape[0]} expecting: {batch}")
            batch = a.shape[0]
        cols = {n: _json_values(n, outputs[n]) for n in names}
        if len(names) == 1:
            preds = cols[names[0]]
        else:
            preds = [{n: cols[n][i] for n in names} for i in range(batch)]
        return json.dumps({"predictions": preds})
    if len(names) == 1:
        return json.dumps({"outputs": _json_values(names[0], outputs[names[0]])})
    return json.dumps({"outputs": {n: _json_values(n, outputs[n]) for n in names}})


# ----------------------------------------------------------------------------------- TensorProto
def proto_to_array(proto) -> np.ndarray:
    """TensorProto -> numpy (Tensor::FromProto); raises ValueError/TypeError on malformed protos."""
    from tensorflow.python.framework import tensor_util  # core TF only
    return tensor_util.MakeNdarray(proto)


def array_to_proto(arr: np.ndarray, as_content: bool = False):
    """numpy -> TensorProto with typed *_val fields (Tensor::AsProtoField), or tensor_content."""
    from tensorflow.core.framework import tensor_pb2
    arr = np.asarray(arr)
    dtype = dtype_of_array(arr)
    if as_content or dtype in (DT_COMPLEX64, DT_COMPLEX128):
        from tensorflow.python.framework import tensor_util
        return tensor_util.make_tensor_proto(arr)
    p = tensor_pb2.TensorProto(dtype=dtype)
    for d in arr.shape:
        p.tensor_shape.dim.add().size = int(d)
    flat = arr.ravel()
    if dtype == DT_FLOAT:
        p.float_val.extend(flat.tolist())
    elif dtype == DT_DOUBLE:
        p.double_val.extend(flat.tolist())
    elif dtype in (DT_INT32, DT_INT16, DT_INT8, DT_UINT8, DT_UINT16):
        p.int_val.extend(flat.astype(np.int64).tolist())
    elif dtype == DT_INT64:
        p.int64_val.extend(flat.tolist())
    elif dtype == DT_UINT32:
        p.uint32_val.extend(flat.tolist())
    elif dtype == DT_UINT64:
        p.uint64_val.extend(flat.tolist())
    elif dtype == DT_BOOL:
        p.bool_val.extend(flat.tolist())
    elif dtype == DT_HALF:
        p.half_val.extend(flat.view(np.uint16).astype(np.int64).tolist())
    elif dtype == DT_STRING:
        p.string_val.extend([x if isinstance(x, bytes) else str(x).encode() for x in flat])
    return p
