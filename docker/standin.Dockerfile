# The TF-Serving stand-in image (tests and the offline demo only; production uses tensorflow/serving).
# BASE is the locally debootstrapped Debian + TensorFlow venv built by standin/image.py.
ARG BASE
FROM ${BASE}
COPY standin /opt/tfs-release/standin
ENV PYTHONPATH=/opt/tfs-release MODEL_NAME=model MODEL_BASE_PATH=/models TF_CPP_MIN_LOG_LEVEL=1
EXPOSE 8500 8501
# Same contract as tensorflow/serving's tf_serving_entrypoint.sh: extra arguments are appended.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m standin.server --port=8500 --rest_api_port=8501 --model_name=\"${MODEL_NAME}\" --model_base_path=\"${MODEL_BASE_PATH}/${MODEL_NAME}\" \"$@\"", "--"]
