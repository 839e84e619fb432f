"""The TF-Serving stand-in: a small server that speaks TensorFlow Serving's REST and gRPC APIs.

TensorFlow Serving's binary and images cannot be had on this project's machines, so tests and the
offline demo run this *stand-in* instead (see standin/README.md for what it is and how it differs
from the real ``tensorflow_model_server``). Production uses the real ``tensorflow/serving`` image.

Modules: ``server`` (entry point, flags, config-file polling), ``config`` (TF Serving's model config
file and its checks), ``core`` (ServerCore: config reloads, version labels, request lookup),
``manager`` (version polling and policies, load/unload, states),
``servable`` (the TF1 Session loader, predict, warmup), ``rest`` and ``grpc_api`` (the two APIs),
``tensors`` (JSON and TensorProto conversions), ``errors`` (status codes).
This package imports only core TensorFlow (never Model Garden, tensorflow_text or Keras models).
"""
