"""TF Serving's API without TensorFlow: its protos, signatures, request inputs, batching, REST/gRPC
clients, model status and endpoint credentials. Used by exporters/, validation/ and production/; imports no
higher layer (tests/unit/test_layers.py)."""
