"""Status codes of the TF-Serving stand-in: one error type, mapped to gRPC codes and HTTP statuses
the way TensorFlow Serving's http_server.cc (ToHTTPStatusCode) does."""
from __future__ import annotations

import grpc

# TF / absl status codes (same numbers as grpc.StatusCode and tensorflow/core/protobuf/error_codes).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS = 0, 1, 2, 3, 4, 5, 6
PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE = 7, 8, 9, 10, 11
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED = 12, 13, 14, 15, 16

_HTTP = {OK: 200, CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400, DEADLINE_EXCEEDED: 504,
         NOT_FOUND: 404, ALREADY_EXISTS: 409, PERMISSION_DENIED: 403, RESOURCE_EXHAUSTED: 429,
         FAILED_PRECONDITION: 400, ABORTED: 409, OUT_OF_RANGE: 400, UNIMPLEMENTED: 501,
         INTERNAL: 500, UNAVAILABLE: 503, DATA_LOSS: 500, UNAUTHENTICATED: 401}

_GRPC = {c.value[0]: c for c in grpc.StatusCode}

CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


class ServingError(Exception):
    """An error with a TF status code (what TF Serving's absl::Status carries)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = int(code)
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP.get(self.code, 500)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _GRPC.get(self.code, grpc.StatusCode.UNKNOWN)

    def __str__(self) -> str:  # like absl::Status::ToString()
        return f"{CODE_NAMES.get(self.code, 'UNKNOWN')}: {self.message}"


def from_exception(exc: BaseException) -> ServingError:
    """Maps an exception raised by TensorFlow (or Python) to a ServingError."""
    if isinstance(exc, ServingError):
        return exc
    code = getattr(exc, "error_code", None)  # tf.errors.OpError
    if isinstance(code, int):
        return ServingError(code, getattr(exc, "message", str(exc)))
    text = str(exc)
    if isinstance(exc, ValueError):  # e.g. "Cannot feed value of shape ..."
        return ServingError(INVALID_ARGUMENT, text)
    if isinstance(exc, OSError) and ("does not exist" in text or "No such file" in text):
        return ServingError(NOT_FOUND, text)
    if "parse" in text.lower():
        return ServingError(DATA_LOSS, text)
    return ServingError(UNKNOWN, f"{type(exc).__name__}: {text}")
