"""The op set of the TF-Serving stand-in, made to match TF Serving's binary.

TF Serving's model server links core TensorFlow's ops plus TF Text's op library and TF Decision
Forests' inference ops (SUPPORTED_TENSORFLOW_OPS in tensorflow_serving/model_servers/BUILD). So:
- when the tensorflow_text / tensorflow_decision_forests wheels are installed, their compiled op
  libraries are registered with ``tf.load_op_library`` (their Python packages are NOT imported);
- ops that exist only in TensorFlow's *Python* runtime (PyFunc, EagerPyFunc, ...) are not in the
  binary: a SavedModel using them is refused at load time, as TF Serving refuses it.
Anything else outside core TF (Model Garden never adds ops; other custom op libraries) is simply
not registered here, so such a model fails to load, as in TF Serving.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os

from .errors import NOT_FOUND, ServingError

log = logging.getLogger("standin")

PYTHON_ONLY_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_EXTRA = {
    "tensorflow_text": "python/ops/_*.so",
    "tensorflow_decision_forests": "tensorflow/ops/inference/*.so",
}
_registered: list[str] | None = None


def register_serving_ops() -> list[str]:
    """Loads the op libraries TF Serving's binary has (if their wheels are installed); idempotent."""
    global _registered
    if _registered is not None:
        return _registered
    import tensorflow as tf
    _registered = []
    for package, pattern in _EXTRA.items():
        spec = importlib.util.find_spec(package)  # locates without importing
        if spec is None or not spec.submodule_search_locations:
            continue
        root = list(spec.submodule_search_locations)[0]
        libs = sorted(glob.glob(os.path.join(root, pattern)))
        ok = 0
        for lib in libs:
            try:
                tf.load_op_library(lib)
                ok += 1
            except Exception as exc:  # noqa: BLE001 - a mismatched wheel must not stop the server
                log.warning("[stand-in] could not register op library %s: %s", lib, exc)
        if ok:
            _registered.append(f"{package} ({ok} op libraries)")
    return _registered


def check_graph_ops(meta_graph_def) -> None:
    """Refuses graphs using Python-runtime-only ops (not registered in TF Serving's binary)."""
    ops = {n.op for n in meta_graph_def.graph_def.node}
    for fn in meta_graph_def.graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
    bad = sorted(ops & PYTHON_ONLY_OPS)
    if bad:
        raise ServingError(NOT_FOUND, f"Op type not registered '{bad[0]}' in binary running in the TF-Serving "
                                      f"stand-in (TensorFlow Serving's model server has no Python runtime ops: "
                                      f"{', '.join(bad)})")
