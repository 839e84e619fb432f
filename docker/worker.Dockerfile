# The worker image: the worker env (TensorFlow, Model Garden, great-expectations, docker SDK,
# boto3; requirements-worker.txt) + this project. Its entrypoint is the `tfs-release` command:
# the release DAG's export/validate steps run in it (DockerOperator), and so does the production
# `tfs-release sync` sidecar that fills TF Serving's model_base_path.
# BASE: python:3.11-slim by default; deploy/local_images.py passes a locally built Debian base that
# already holds the worker venv (no image registry is reachable there).
ARG BASE=python:3.11-slim
FROM ${BASE}
COPY requirements-worker.txt /opt/tfs-release/requirements-worker.txt
# INSTALL_REQUIREMENTS=0: the base already holds this environment (the local bases of
# deploy/local_images.py, whose Debian Python 3.11.2 needs a few pins relaxed)
ARG INSTALL_REQUIREMENTS=1
RUN if [ "$INSTALL_REQUIREMENTS" = 1 ]; then pip install --no-cache-dir -r /opt/tfs-release/requirements-worker.txt; fi
COPY cli.py /opt/tfs-release/cli.py
COPY registry /opt/tfs-release/registry
COPY tfs_api /opt/tfs-release/tfs_api
COPY exporters /opt/tfs-release/exporters
COPY serving /opt/tfs-release/serving
COPY validation /opt/tfs-release/validation
COPY production /opt/tfs-release/production
COPY standin /opt/tfs-release/standin
COPY config /opt/tfs-release/config
COPY demo/golden /opt/tfs-release/demo/golden
COPY docker/tfs-release.sh /usr/local/bin/tfs-release
COPY docker/create-buckets.py /usr/local/bin/tfs-release-create-buckets
RUN chmod 0755 /usr/local/bin/tfs-release /usr/local/bin/tfs-release-create-buckets
# The image the validator starts its temporary TF Serving from (config 'serving_image' and
# --image take precedence); the local build passes the TF-Serving stand-in's tag. Keep it the TF
# Serving release of the TensorFlow in requirements-worker.txt (validation checks the match).
ARG SERVING_IMAGE=tensorflow/serving:2.20.0
ENV PYTHONPATH=/opt/tfs-release \
    TFS_RELEASE_CONFIG=/opt/tfs-release/config/models.yaml \
    TFS_RELEASE_SERVING_IMAGE=${SERVING_IMAGE} \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /opt/tfs-release
ENTRYPOINT ["tfs-release"]
CMD ["--help"]
