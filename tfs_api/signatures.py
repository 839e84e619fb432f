"""TF Serving's signatures in one normal form, read from a SavedModel (static, protobuf only), from
TF Serving's REST metadata JSON or from its gRPC GetModelMetadataResponse:

    {name: {"method": str, "inputs": {key: {"dtype": "uint8", "shape": [-1, -1, -1, 3]}},
            "outputs": {key: {"dtype": ..., "shape": [...]}}}}

(-1 = unknown dimension; shape None = unknown rank). No TensorFlow: the messages come from
``tfs_api.protos``. What the signatures must look like is validation's business
(validation/contracts.py).
"""
from __future__ import annotations

import os

from tfs_api import protos

PREDICT = "tensorflow/serving/predict"
INPUT_KEY = "inputs"

# TF DataType enum names (metadata JSON, SignatureDef protos) -> numpy-style names
_DT = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_BFLOAT16": "bfloat16",
       "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
       "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_STRING": "string", "DT_BOOL": "bool"}
_DT_ENUM = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
            9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16"}

def _shape_from_proto(shape) -> list[int] | None:
    if shape.unknown_rank:
        return None
    return [int(d.size) for d in shape.dim]


def signatures_from_saved_model(saved_model_dir: str) -> dict:
    """Static read of saved_model.pb's `serve` MetaGraph (protobuf only; nothing is loaded, and
    TensorFlow is not imported: the message comes from ``tfs_api.protos``)."""
    sm = protos.message("tensorflow.SavedModel")()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as fh:
        sm.ParseFromString(fh.read())
    metas = [m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags]
    if not metas:
        return {}
    out = {}
    for name, sd in metas[0].signature_def.items():
        if name.startswith("__"):
            continue
        out[name] = {"method": sd.method_name,
                     "inputs": {k: {"dtype": _DT_ENUM.get(v.dtype, str(v.dtype)),
                                    "shape": _shape_from_proto(v.tensor_shape)} for k, v in sd.inputs.items()},
                     "outputs": {k: {"dtype": _DT_ENUM.get(v.dtype, str(v.dtype)),
                                     "shape": _shape_from_proto(v.tensor_shape)} for k, v in sd.outputs.items()}}
    return out


def _json_tensor(info: dict) -> dict:
    shape = info.get("tensor_shape") or {}
    dims = None if shape.get("unknown_rank") else [int(d.get("size", -1)) for d in shape.get("dim", [])]
    return {"dtype": _DT.get(info.get("dtype", ""), str(info.get("dtype", "")).lower()), "shape": dims}


def signatures_from_rest_metadata(meta: dict) -> dict:
    """TF Serving's GET /v1/models/<m>/metadata JSON -> normal form."""
    sigs = meta.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    return {name: {"method": sd.get("method_name", ""),
                   "inputs": {k: _json_tensor(v) for k, v in sd.get("inputs", {}).items()},
                   "outputs": {k: _json_tensor(v) for k, v in sd.get("outputs", {}).items()}}
            for name, sd in sigs.items() if not name.startswith("__")}


def signatures_from_grpc_metadata(resp) -> dict:
    """A GetModelMetadataResponse (``tfs_api.protos``' or tensorflow_serving's) -> normal form."""
    sdm = protos.message("tensorflow.serving.SignatureDefMap")()
    resp.metadata["signature_def"].Unpack(sdm)
    return {name: {"method": sd.method_name,
                   "inputs": {k: {"dtype": _DT_ENUM.get(v.dtype, str(v.dtype)), "shape": _shape_from_proto(v.tensor_shape)}
                              for k, v in sd.inputs.items()},
                   "outputs": {k: {"dtype": _DT_ENUM.get(v.dtype, str(v.dtype)), "shape": _shape_from_proto(v.tensor_shape)}
                               for k, v in sd.outputs.items()}}
            for name, sd in sdm.signature_def.items() if not name.startswith("__")}
