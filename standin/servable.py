"""One loaded model version of the TF-Serving stand-in.

Loaded the way TensorFlow Serving's SavedModelBundle does it: the MetaGraph tagged ``serve`` is
imported into its own tf.Graph and restored in a TF1 Session
(``tf.compat.v1.saved_model.loader.load``); requests feed and fetch the signature_def's tensor
names. Only core TensorFlow is imported, so a SavedModel needing ops outside core TF (e.g.
tensorflow_text's) fails to load here exactly as it fails in TF Serving's binary.
Warmup replays ``assets.extra/tf_serving_warmup_requests`` (PredictionLog TFRecords, <= 1000).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Mapping

import numpy as np

from . import tensors
from .ops import check_graph_ops
from .errors import FAILED_PRECONDITION, INVALID_ARGUMENT, UNIMPLEMENTED, ServingError, from_exception

log = logging.getLogger("standin")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


class Servable:
    """A SavedModel version in its own Graph and Session; thread-safe for concurrent requests."""

    def __init__(self, name: str, version: int, path: str, *, tags=("serve",), intra_op: int = 0,
                 inter_op: int = 0, tensor_content: bool = False):
        self.name, self.version, self.path = name, version, path
        self.tags = list(tags)
        self.intra_op, self.inter_op = intra_op, inter_op
        self.tensor_content = tensor_content
        self.session = None
        self.meta_graph_def = None
        self._inflight = 0
        self._cv = threading.Condition()
        self.warmup_records = 0

    def id(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"

    # ------------------------------------------------------------------------------------- load
    def load(self) -> float:
        """Imports the MetaGraph and restores variables; returns seconds taken. Raises ServingError."""
        import tensorflow as tf
        from tensorflow.python.util import deprecation
        t0 = time.monotonic()
        graph = tf.Graph()
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=self.intra_op,
                                          inter_op_parallelism_threads=self.inter_op,
                                          allow_soft_placement=True)
        sess = tf.compat.v1.Session(graph=graph, config=config)
        try:
            with graph.as_default(), deprecation.silence():
                self.meta_graph_def = tf.compat.v1.saved_model.loader.load(sess, self.tags, self.path)
            check_graph_ops(self.meta_graph_def)
        except Exception as exc:  # noqa: BLE001 - every load failure becomes the version's status
            sess.close()
            raise from_exception(exc) from None
        graph.finalize()
        self.session = sess
        return time.monotonic() - t0

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    # -------------------------------------------------------------------------- usage counting
    def acquire(self) -> "Servable":
        with self._cv:
            self._inflight += 1
        return self

    def release(self) -> None:
        with self._cv:
            self._inflight -= 1
            self._cv.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._inflight == 0, timeout)

    # ------------------------------------------------------------------------------ signatures
    def signature_defs(self):
        return self.meta_graph_def.signature_def

    def _signature_for_rest(self, signature_name: str):
        name = signature_name or DEFAULT_SIGNATURE
        sigs = self.meta_graph_def.signature_def
        if name not in sigs:  # HttpRestApiHandler::GetInfoMap
            raise ServingError(INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def')
        return sigs[name]

    def input_dtypes(self, signature_name: str) -> dict[str, int]:
        sig = self._signature_for_rest(signature_name)
        return {k: sig.inputs[k].dtype for k in sorted(sig.inputs)}

    # --------------------------------------------------------------------------------- predict
    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter=(),
            timeout_ms: int | None = None) -> tuple[str, dict[str, np.ndarray]]:
        """internal::RunPredict: validate against the signature, Session.run, return outputs."""
        import tensorflow as tf
        name = signature_name or DEFAULT_SIGNATURE
        sigs = self.meta_graph_def.signature_def
        if name not in sigs:
            raise ServingError(FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        sig = sigs[name]
        want, got = set(sig.inputs), set(inputs)
        if len(got) > len(want) or (len(got) < len(want) and not sig.defaults):
            raise ServingError(INVALID_ARGUMENT,
                               f"input size does not match signature: {len(got)}!={len(want)} "
                               f"len({{{','.join(sorted(got))}}}) != len({{{','.join(sorted(want))}}}). "
                               f"Sent extra: {{{','.join(sorted(got - want))}}}. "
                               f"Missing but required: {{{','.join(sorted(want - got))}}}.")
        feeds = {}
        for i, alias in enumerate(sorted(want)):
            info = sig.inputs[alias]
            if alias in inputs:
                arr = inputs[alias]
            elif alias in sig.defaults:
                arr = tensors.proto_to_array(sig.defaults[alias])
            else:
                raise ServingError(INVALID_ARGUMENT, f"input tensor alias not found in signature: {alias}. "
                                                     f"Inputs expected to be in the set {{{','.join(sorted(want))}}}.")
            have = tensors.dtype_of_array(arr)
            if have != info.dtype:
                raise ServingError(INVALID_ARGUMENT, f"Expects arg[{i}] to be {tensors.dtype_name(info.dtype)} "
                                                     f"but {tensors.dtype_name(have)} is provided")
            feeds[info.name] = arr
        for alias in got - want:
            raise ServingError(INVALID_ARGUMENT, f"input tensor alias not found in signature: {alias}. "
                                                 f"Inputs expected to be in the set {{{','.join(sorted(want))}}}.")
        aliases = list(output_filter)
        seen = set()
        for alias in aliases:
            if alias not in sig.outputs:
                raise ServingError(INVALID_ARGUMENT, f"output tensor alias not found in signature: {alias} Outputs "
                                                     f"expected to be in the set {{{','.join(sorted(sig.outputs))}}}.")
            if alias in seen:
                raise ServingError(INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        if not aliases:
            aliases = sorted(sig.outputs)
        fetches = [sig.outputs[a].name for a in aliases]
        options = tf.compat.v1.RunOptions(timeout_in_ms=int(timeout_ms)) if timeout_ms else None
        try:
            values = self.session.run(fetches, feed_dict=feeds, options=options)
        except Exception as exc:  # noqa: BLE001 - OpError codes pass through, ValueError -> INVALID_ARGUMENT
            raise from_exception(exc) from None
        return name, {a: np.asarray(v) for a, v in zip(aliases, values)}

    def predict_proto(self, request, timeout_ms: int | None = None):
        """PredictRequest proto -> PredictResponse proto (gRPC Predict and warmup)."""
        from tensorflow_serving.apis import predict_pb2
        inputs = {}
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sigs = self.meta_graph_def.signature_def
        if sig_name not in sigs:
            raise ServingError(FAILED_PRECONDITION, f'Serving signature key "{sig_name}" not found.')
        for alias, proto in request.inputs.items():
            want = sigs[sig_name].inputs.get(alias)
            if want is not None and proto.dtype != want.dtype:
                idx = sorted(sigs[sig_name].inputs).index(alias)
                raise ServingError(INVALID_ARGUMENT, f"Expects arg[{idx}] to be {tensors.dtype_name(want.dtype)} "
                                                     f"but {tensors.dtype_name(proto.dtype)} is provided")
            try:
                inputs[alias] = tensors.proto_to_array(proto)
            except Exception:  # noqa: BLE001
                raise ServingError(INVALID_ARGUMENT, f"tensor parsing error: {alias}") from None
        name, outputs = self.run(request.model_spec.signature_name, inputs, list(request.output_filter), timeout_ms)
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = request.model_spec.name or self.name
        resp.model_spec.signature_name = name
        resp.model_spec.version.value = self.version
        for alias, arr in outputs.items():
            resp.outputs[alias].CopyFrom(tensors.array_to_proto(arr, self.tensor_content))
        return resp

    # ---------------------------------------------------------------------------------- warmup
    def warmup(self, iterations: int = 1) -> tuple[int, float]:
        """Replays the warmup file (if any); returns (records, seconds). Raises ServingError."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            log.info("[stand-in] No warmup data file found at %s", path)
            return 0, 0.0
        t0 = time.monotonic()
        count = 0
        try:
            for record in tf.compat.v1.io.tf_record_iterator(path):
                entry = prediction_log_pb2.PredictionLog()
                try:
                    entry.ParseFromString(record)
                except Exception:  # noqa: BLE001
                    raise ServingError(INVALID_ARGUMENT, f"Failed to parse warmup record: {record[:64]!r} "
                                                         f"from {path}") from None
                kind = entry.WhichOneof("log_type")
                for _ in range(max(1, iterations)):
                    if kind == "predict_log":
                        self.predict_proto(entry.predict_log.request)
                    else:
                        raise ServingError(UNIMPLEMENTED, f"Unsupported log_type for warmup by the TF-Serving "
                                                          f"stand-in: {kind}")
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise ServingError(INVALID_ARGUMENT, f"Number of warmup records exceeds the maximum "
                                                         f"({MAX_WARMUP_RECORDS}) at {path}")
        except ServingError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt TFRecord etc.
            raise from_exception(exc) from None
        self.warmup_records = count
        return count, time.monotonic() - t0
