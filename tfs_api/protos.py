"""TF Serving's and TensorFlow's protobuf messages without importing TensorFlow, and numpy arrays in
and out of ``TensorProto`` (what ``tf.make_tensor_proto`` / ``tf.make_ndarray`` do, for the dtypes a
TF Serving signature carries).

Why: ``tensorflow_serving.apis.*_pb2`` import ``tensorflow.core.framework.*_pb2``, and importing any
``tensorflow.*`` module runs ``tensorflow/__init__`` (all of TensorFlow: 3.5-7 s and ~600 MB for
a validation that only needs a few message classes).

How: the generated ``*_pb2.py`` files of the installed ``tensorflow`` and ``tensorflow-serving-api``
wheels are *read*, not imported: each holds its ``.proto`` file as a serialized
``FileDescriptorProto`` (the argument of ``AddSerializedFile``), and its ``from X import Y_pb2``
lines name the files it depends on. Those descriptors go into a private ``DescriptorPool`` and
the message classes come from it. The files are the installed ones, so the messages are exactly
the installed TensorFlow's (nothing to regenerate, nothing to keep in step); the pool is private,
so a process that imports the real ``tensorflow`` before or after gets its own classes in the
default pool, untouched (the wire format is the same: our requests go to TF Serving, TF's
classes parse what ours serialize). Not the default pool: it takes the same file name twice only
while the contents are identical (a differing copy is a "duplicate file name" error), and a class
made there first would be the one TensorFlow's modules get.

    PredictRequest = message("tensorflow.serving.PredictRequest")
    req = PredictRequest(); tensor_proto(x, into=req.inputs["inputs"])
    array = to_ndarray(resp.outputs["probs"])
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import threading

import numpy as np

# The .proto files the validator needs; their dependencies are followed from the generated files.
ROOT_MODULES = ("tensorflow_serving.apis.predict_pb2", "tensorflow_serving.apis.get_model_metadata_pb2",
                "tensorflow_serving.apis.get_model_status_pb2", "tensorflow.core.protobuf.saved_model_pb2",
                "tensorflow.core.example.example_pb2")


class ProtosUnavailable(RuntimeError):
    """The installed wheels' generated protobuf files could not be found or read."""


def _module_file(module: str) -> str:
    """The file of a generated module (``a.b.c_pb2``), found without importing any package of it:
    only the top-level package is looked up (which imports nothing), the rest is path joining."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = os.path.join(loc, *rest[:-1], rest[-1] + ".py")
        if os.path.isfile(path):
            return path
    raise ProtosUnavailable(
        f"the generated protobuf module {module} was not found (searched {locations or 'no installed package ' + top!r}); "
        "the validator reads TF Serving's messages from the installed tensorflow and tensorflow-serving-api "
        "wheels: run it in the worker environment (requirements-worker.txt)")


def _read_generated(path: str) -> tuple[bytes, list[str]]:
    """(serialized FileDescriptorProto, modules it imports) of one generated ``*_pb2.py``."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    serialized, deps = None, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            deps += [f"{node.module}.{a.name}" for a in node.names if a.name.endswith("_pb2")]
        elif isinstance(node, ast.Call) and serialized is None:
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            args = list(node.args) if name == "AddSerializedFile" else \
                [k.value for k in node.keywords if k.arg == "serialized_pb"]
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, bytes):
                serialized = args[0].value
    if serialized is None:
        raise ProtosUnavailable(f"{path} holds no serialized file descriptor (not a protoc-generated module?)")
    return serialized, deps


class _Protos:
    def __init__(self, roots=ROOT_MODULES):
        from google.protobuf import descriptor_pool
        self.pool = descriptor_pool.DescriptorPool()
        self._done: set[str] = set()
        for module in roots:
            self._add(module, ())

    def _add(self, module: str, chain: tuple) -> None:
        if module in self._done:
            return
        if module in chain:
            raise ProtosUnavailable(f"generated protobuf modules import each other in a cycle: {' -> '.join(chain)}")
        serialized, deps = _read_generated(_module_file(module))
        for dep in deps:
            self._add(dep, chain + (module,))
        self.pool.AddSerializedFile(serialized)
        self._done.add(module)


_lock = threading.Lock()
_protos: _Protos | None = None
_classes: dict = {}


def pool():
    """The private descriptor pool holding TF Serving's and TensorFlow's messages (built once)."""
    global _protos
    with _lock:
        if _protos is None:
            _protos = _Protos()
        return _protos.pool


def message(full_name: str):
    """The message class of ``full_name`` (e.g. ``tensorflow.serving.PredictRequest``)."""
    cls = _classes.get(full_name)
    if cls is None:
        from google.protobuf import message_factory
        cls = _classes[full_name] = message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))
    return cls


def enum_value(enum: str, name: str) -> int:
    """The number of enum value ``name`` of ``enum`` (``enum_value("tensorflow.DataType", "DT_FLOAT")`` = 1)."""
    return pool().FindEnumTypeByName(enum).values_by_name[name].number


def enum_name(enum: str, number: int) -> str:
    return pool().FindEnumTypeByName(enum).values_by_number[number].name


# --- numpy <-> TensorProto --------------------------------------------------------------------------
# numpy dtype <-> TF DataType, and the typed repeated field a value goes into when it is not sent as
# tensor_content (tensorflow/python/framework/tensor_util.py: the same table)
_DTYPES = [  # (DataType name, numpy dtype, *_val field)
    ("DT_FLOAT", np.dtype(np.float32), "float_val"),
    ("DT_DOUBLE", np.dtype(np.float64), "double_val"),
    ("DT_INT32", np.dtype(np.int32), "int_val"),
    ("DT_UINT8", np.dtype(np.uint8), "int_val"),
    ("DT_INT16", np.dtype(np.int16), "int_val"),
    ("DT_INT8", np.dtype(np.int8), "int_val"),
    ("DT_UINT16", np.dtype(np.uint16), "int_val"),
    ("DT_INT64", np.dtype(np.int64), "int64_val"),
    ("DT_UINT32", np.dtype(np.uint32), "uint32_val"),
    ("DT_UINT64", np.dtype(np.uint64), "uint64_val"),
    ("DT_BOOL", np.dtype(np.bool_), "bool_val"),
    ("DT_HALF", np.dtype(np.float16), "half_val"),
    ("DT_COMPLEX64", np.dtype(np.complex64), "scomplex_val"),
    ("DT_COMPLEX128", np.dtype(np.complex128), "dcomplex_val"),
]
# sent as raw bytes when the tensor has more than one element (TF's _TENSOR_CONTENT_TYPES: not bool,
# complex or uint16)
_CONTENT = {"DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_UINT8", "DT_INT16", "DT_INT8", "DT_INT64", "DT_UINT32",
            "DT_UINT64", "DT_HALF", "DT_BFLOAT16"}


class TensorError(ValueError):
    """A tensor that cannot be converted (dtype not supported, sizes that do not fit)."""


def _bfloat16():
    try:
        import ml_dtypes  # TensorFlow's own numpy bfloat16 (a small package, no TensorFlow import)
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


@functools.lru_cache(maxsize=None)
def _table() -> tuple:
    rows = [(name, enum_value("tensorflow.DataType", name), dt, field) for name, dt, field in _DTYPES]
    bf16 = _bfloat16()
    if bf16 is not None:
        rows.append(("DT_BFLOAT16", enum_value("tensorflow.DataType", "DT_BFLOAT16"), bf16, "half_val"))
    return tuple(rows)


def _as_bytes(v) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytearray, memoryview, np.bytes_)):
        return bytes(v)
    raise TensorError(f"a string tensor holds a {type(v).__name__} ({v!r:.40}): only bytes and str can be sent")


def tensor_proto(x: np.ndarray, into=None):
    """``x`` as a TensorProto, field for field what ``tf.make_tensor_proto(x)`` builds (object and
    bytes arrays: a DT_STRING tensor in ``string_val``, like ``tf.make_tensor_proto(list(x),
    dtype=tf.string, shape=x.shape)``). Numbers go into ``tensor_content`` (little-endian bytes,
    C order) when there is more than one, else into the typed ``*_val`` field. ``into``: an empty
    TensorProto to fill (a request's map entry: saves copying a large batch once more)."""
    x = np.asarray(x)
    proto = message("tensorflow.TensorProto")() if into is None else into
    proto.tensor_shape.SetInParent()  # present even for a scalar (no dims), as TF writes it
    for n in x.shape:
        proto.tensor_shape.dim.add().size = int(n)
    if x.dtype == object or x.dtype.kind in "SU":
        proto.dtype = enum_value("tensorflow.DataType", "DT_STRING")
        proto.string_val.extend(_as_bytes(v) for v in x.ravel())
        return proto
    native = x.dtype.newbyteorder("=")
    for name, number, dt, field in _table():
        if native == dt:
            break
    else:
        raise TensorError(f"numpy dtype {x.dtype} has no TF Serving tensor type the validator sends "
                          f"(supported: {', '.join(str(r[2]) for r in _table())}, bytes/str)")
    proto.dtype = number
    if name in _CONTENT and x.size > 1:
        if x.nbytes >= 1 << 31:
            raise TensorError(f"a tensor of {x.nbytes} bytes is over TensorProto's 2 GB limit: send smaller batches")
        proto.tensor_content = np.ascontiguousarray(x, dtype=dt.newbyteorder("<")).tobytes()
        return proto
    flat = x.ravel()
    if field == "half_val":
        getattr(proto, field).extend(int(v) for v in flat.view(np.uint16))
    elif field in ("scomplex_val", "dcomplex_val"):
        getattr(proto, field).extend(float(p) for v in flat for p in (v.real, v.imag))
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def to_ndarray(proto) -> np.ndarray:
    """A TensorProto as a numpy array, as ``tf.make_ndarray`` reads it: ``tensor_content`` bytes, or
    the typed ``*_val`` field, a short field padded with its last value to the shape (TF's rule for
    repeated values); DT_STRING as an object array of bytes."""
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == enum_value("tensorflow.DataType", "DT_STRING"):
        if proto.tensor_content:
            raise TensorError("a DT_STRING tensor in tensor_content (TensorFlow's own reader cannot read it either); "
                              "the server must send strings in string_val")
        values = list(proto.string_val)
        if count > len(values):
            values += [values[-1] if values else b""] * (count - len(values))
        return np.array(values, dtype=object).reshape(shape)
    for name, number, dt, field in _table():
        if proto.dtype == number:
            break
    else:
        raise TensorError(f"the answer holds a tensor of type {_dtype_name(proto.dtype)}, which the validator "
                          "cannot read (numbers, bool and strings only)")
    if proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype=dt.newbyteorder("<")).astype(dt)
        if values.size != count:
            raise TensorError(f"a {_dtype_name(proto.dtype)} tensor of shape {shape} carries {values.size} values "
                              f"in tensor_content ({len(proto.tensor_content)} bytes), not {count}")
        return values.reshape(shape)
    raw = getattr(proto, field)
    if field == "half_val":
        values = np.fromiter(raw, dtype=np.uint16, count=len(raw)).view(dt)
    elif field in ("scomplex_val", "dcomplex_val"):
        pairs = np.fromiter(raw, dtype=np.float32 if field == "scomplex_val" else np.float64, count=len(raw))
        pairs = pairs[:pairs.size - pairs.size % 2]  # (real, imaginary) pairs; TF drops an unpaired last one
        values = (pairs[0::2] + 1j * pairs[1::2]).astype(dt)
    else:
        values = np.fromiter(raw, dtype=dt, count=len(raw))
    if values.size == 0:
        return np.zeros(shape, dt)
    if values.size > count:
        raise TensorError(f"a {_dtype_name(proto.dtype)} tensor of shape {shape} carries {values.size} values in "
                          f"{field}, more than its {count} elements")
    if values.size < count:
        values = np.pad(values, (0, count - values.size), "edge")
    return values.reshape(shape)


def _dtype_name(number: int) -> str:
    try:
        return enum_name("tensorflow.DataType", number)
    except KeyError:
        return f"DataType {number}"
