"""Golden images in batches: which images may share one request, and each image's answer taken
back out of a batched answer. Used by the exporter (in-process reference answers) and by the
validator (REST and gRPC requests to the temporary TF Serving), so both batch the same way.

- ``image_tensor``: one uint8 [B, H, W, 3] tensor, so only images of one shape share a batch;
- ``image_bytes`` / ``tf_example``: a string tensor [B] of encoded images, any mix of sizes.

A batch holds at most ``size`` images and at most ``MAX_BATCH_BYTES`` of input (big images make
smaller batches: a REST body is JSON, several bytes per pixel). Images keep their order within
a shape; shapes come in the order they first appear.
"""
from __future__ import annotations

import numpy as np

from registry.config import DEFAULT_VALIDATION_BATCH_SIZE as DEFAULT_BATCH_SIZE  # noqa: F401 - re-exported
from registry.errors import BadInput

MAX_BATCH_BYTES = 16 * 2**20  # raw input bytes per request (uint8 pixels or encoded files)


class BatchError(BadInput):
    """A batched answer cannot be split back into one answer per image."""


def batch_key(input_type: str, image) -> tuple | None:
    """Images with equal keys may share a batch: their shape for image_tensor, else any."""
    return tuple(image.image.shape) if input_type == "image_tensor" else None


def input_bytes(input_type: str, image) -> int:
    return int(image.image.nbytes) if input_type == "image_tensor" else len(image.encoded)


def plan(keys: list, nbytes: list[int], size: int, max_bytes: int = MAX_BATCH_BYTES) -> list[list[int]]:
    """Indices of the items in each batch: equal keys only, at most ``size`` items and
    ``max_bytes`` (an item bigger than that goes alone). Every index appears exactly once."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out = []
    for members in groups.values():
        cur, cur_bytes = [], 0
        for i in members:
            if cur and (len(cur) >= size or cur_bytes + nbytes[i] > max_bytes):
                out.append(cur)
                cur, cur_bytes = [], 0
            cur.append(i)
            cur_bytes += nbytes[i]
        out.append(cur)
    return out


def plan_images(input_type: str, images, size: int, max_bytes: int = MAX_BATCH_BYTES) -> list[list[int]]:
    return plan([batch_key(input_type, g) for g in images], [input_bytes(input_type, g) for g in images],
                size, max_bytes)


def stack(inputs: list[np.ndarray]) -> np.ndarray:
    """Batch-of-one inputs ([1, ...] each) -> one [B, ...] input."""
    return inputs[0] if len(inputs) == 1 else np.concatenate(inputs, axis=0)


def split(outputs: dict, n: int, *, what: str = "the answer") -> list[dict]:
    """A batched answer {output: [n, ...]} -> n answers {output: [1, ...]}, as a batch of one
    would have been answered. ``n == 1`` returns the answer as it is."""
    if n == 1:
        return [outputs]
    bad = {k: list(np.shape(v)) for k, v in outputs.items() if np.ndim(v) == 0 or np.shape(v)[0] != n}
    if bad:
        raise BatchError(f"{what} to a batch of {n} images has outputs without a leading batch dimension of "
                         f"{n}: {bad}; they cannot be split per image. Set validation_batch_size: 1 for this "
                         "model (one image per request).")
    return [{k: v[i:i + 1] for k, v in outputs.items()} for i in range(n)]


def fixed_batch(shape) -> int | None:
    """The input's fixed batch dimension (a model exported with a batch_size), else None."""
    if not shape or shape[0] is None or shape[0] < 1:
        return None
    return int(shape[0])


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` in order (repeating them when n > len(items))."""
    if not items or n < 1:
        return []
    return [items[(i * len(items)) // n] for i in range(n)]
