"""Signature contracts per task kind, checked on the SavedModel (static) and on what the server
reports (served metadata). Signatures are compared in one normal form:

    {name: {"method": str, "inputs": {key: {"dtype": "uint8", "shape": [-1, -1, -1, 3]}},
            "outputs": {key: {"dtype": ..., "shape": [...]}}}}

(-1 = unknown dimension; shape None = unknown rank).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PREDICT = "tensorflow/serving/predict"
INPUT_KEY = "inputs"

# TF DataType enum names (metadata JSON, SignatureDef protos) -> numpy-style names
_DT = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_BFLOAT16": "bfloat16",
       "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
       "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_STRING": "string", "DT_BOOL": "bool"}
_DT_ENUM = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
            9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16"}

INPUTS = {"image_tensor": {"dtype": "uint8", "rank": 4, "last": 3},
          "image_bytes": {"dtype": "string", "rank": 1, "last": None},
          "tf_example": {"dtype": "string", "rank": 1, "last": None}}


@dataclass(frozen=True)
class OutputRule:
    dtypes: tuple[str, ...]
    rank: int


def outputs_for(task: str, class_dtype: str = "int32") -> dict[str, OutputRule]:
    if task == "detection":
        return {"detection_boxes": OutputRule(("float32",), 3),
                "detection_scores": OutputRule(("float32",), 2),
                "detection_classes": OutputRule((class_dtype,), 2),
                "num_detections": OutputRule(("int32",), 1)}
    if task == "segmentation":
        return {"logits": OutputRule(("float32",), 4)}
    if task == "classification":
        return {"logits": OutputRule(("float32",), 2), "probs": OutputRule(("float32",), 2)}
    raise ValueError(f"unknown task {task!r}")


@dataclass
class Contract:
    task: str
    input_types: dict[str, str]          # signature name -> input type
    class_dtype: str = "int32"
    outputs: dict[str, OutputRule] = field(default_factory=dict)

    @classmethod
    def for_model(cls, task: str, input_types: dict[str, str], class_dtype: str = "int32") -> "Contract":
        return cls(task, dict(input_types), class_dtype, outputs_for(task, class_dtype))

    def check(self, signatures: dict, *, where: str) -> list[str]:
        """Every way ``signatures`` breaks the contract, as readable sentences (empty = holds)."""
        problems = []
        for name, typ in self.input_types.items():
            sig = signatures.get(name)
            if sig is None:
                problems.append(f"{where}: signature {name!r} is missing (has {sorted(signatures)}); the "
                                f"contract wants {name!r} taking {typ}")
                continue
            if sig.get("method") and sig["method"] != PREDICT:
                problems.append(f"{where}: signature {name!r} method is {sig['method']!r}, not {PREDICT!r}")
            want = INPUTS[typ]
            inp = sig["inputs"].get(INPUT_KEY)
            if inp is None or len(sig["inputs"]) != 1:
                problems.append(f"{where}: signature {name!r} must take exactly one input {INPUT_KEY!r}, "
                                f"takes {sorted(sig['inputs'])}")
            else:
                if inp["dtype"] != want["dtype"]:
                    problems.append(f"{where}: signature {name!r} input {INPUT_KEY!r} is {inp['dtype']}, "
                                    f"the contract for {typ} requires {want['dtype']}")
                shape = inp.get("shape")
                if shape is not None and (len(shape) != want["rank"] or
                                          (want["last"] and shape[-1] not in (-1, want["last"]))):
                    problems.append(f"{where}: signature {name!r} input shape {shape} does not fit {typ} "
                                    f"(rank {want['rank']}{', 3 channels' if want['last'] else ''})")
            for key, rule in self.outputs.items():
                out = sig["outputs"].get(key)
                if out is None:
                    problems.append(f"{where}: signature {name!r} lacks output {key!r} required for "
                                    f"{self.task} (has {sorted(sig['outputs'])})")
                    continue
                if out["dtype"] not in rule.dtypes:
                    problems.append(f"{where}: signature {name!r} output {key!r} is {out['dtype']}, the "
                                    f"contract allows {'/'.join(rule.dtypes)}")
                if out.get("shape") is not None and len(out["shape"]) != rule.rank:
                    problems.append(f"{where}: signature {name!r} output {key!r} has shape {out['shape']}, "
                                    f"the contract wants rank {rule.rank}")
        return problems


def _shape_from_proto(shape) -> list[int] | None:
    if shape.unknown_rank:
        return None
    return [int(d.size) for d in shape.dim]


def signatures_from_saved_model(saved_model_dir: str) -> dict:
    """Static read of saved_model.pb's `serve` MetaGraph (protobuf only; nothing is loaded, and
    TensorFlow is not imported: the message comes from ``validation.tfs_protos``)."""
    import os

    from validation import tfs_protos
    sm = tfs_protos.message("tensorflow.SavedModel")()
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
    """A GetModelMetadataResponse (``validation.tfs_protos``' or tensorflow_serving's) -> normal form."""
    from validation import tfs_protos
    sdm = tfs_protos.message("tensorflow.serving.SignatureDefMap")()
    resp.metadata["signature_def"].Unpack(sdm)
    return {name: {"method": sd.method_name,
                   "inputs": {k: {"dtype": _DT_ENUM.get(v.dtype, str(v.dtype)), "shape": _shape_from_proto(v.tensor_shape)}
                              for k, v in sd.inputs.items()},
                   "outputs": {k: {"dtype": _DT_ENUM.get(v.dtype, str(v.dtype)), "shape": _shape_from_proto(v.tensor_shape)}
                               for k, v in sd.outputs.items()}}
            for name, sd in sdm.signature_def.items() if not name.startswith("__")}
