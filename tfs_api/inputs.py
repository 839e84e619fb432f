"""What a client sends TF Serving for one golden image, per input type (the Model Garden export's
``inputs`` key): ``image_tensor`` a uint8 [1,H,W,3] array, ``image_bytes`` the encoded PNG/JPEG,
``tf_example`` a serialized tf.Example. The exporter's reference answers, the validator and the
rollout smoke test all build their requests here, so the model and the server see the same bytes.
No TensorFlow: the Example message comes from ``tfs_api.protos``.
"""
from __future__ import annotations

import numpy as np


def example_bytes(encoded: bytes) -> bytes:
    """A serialized tf.Example as Model Garden's tf_example signature parses it."""
    # TF's Example message without importing TensorFlow (the validator's clients do not either)
    from tfs_api.protos import message
    fmt = b"png" if encoded[:8] == b"\x89PNG\r\n\x1a\n" else b"jpeg"
    ex = message("tensorflow.Example")()
    ex.features.feature["image/encoded"].bytes_list.value.append(encoded)
    ex.features.feature["image/format"].bytes_list.value.append(fmt)
    return ex.SerializeToString()


def model_input(input_type: str, image) -> np.ndarray:
    """The batch-of-one input a client sends for ``image`` (a GoldenImage) to a signature of
    ``input_type``: uint8 [1,H,W,3] or a [1] array of bytes."""
    if input_type == "image_tensor":
        return image.image[np.newaxis]
    if input_type == "image_bytes":
        return np.array([image.encoded], dtype=object)
    if input_type == "tf_example":
        return np.array([example_bytes(image.encoded)], dtype=object)
    raise ValueError(f"unknown input type {input_type!r}")
