"""Signature contracts per task kind, checked on the SavedModel (static) and on what the server
reports (served metadata). Signatures are compared in tfs_api/signatures.py's normal form:

    {name: {"method": str, "inputs": {key: {"dtype": "uint8", "shape": [-1, -1, -1, 3]}},
            "outputs": {key: {"dtype": ..., "shape": [...]}}}}

(-1 = unknown dimension; shape None = unknown rank).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tfs_api.signatures import INPUT_KEY, PREDICT  # noqa: F401 - part of a contract's vocabulary

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
