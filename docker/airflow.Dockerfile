# The Airflow image of the compose stack: Airflow 3 + the pinned providers (requirements.txt) + this
# project's DAGs, plugins, registry/ and config. No TensorFlow: export and validation run in the
# worker image (DockerOperator, TFS_RELEASE_STEP_IMAGE).
# BASE: the official image by default; deploy/local_images.py passes a locally built Debian base
# (a venv with requirements.txt, user airflow 50000:0) where no image registry is reachable.
ARG BASE=apache/airflow:3.3.2
FROM ${BASE}
USER 0
COPY requirements.txt /opt/tfs-release/requirements.txt
USER 50000
# INSTALL_REQUIREMENTS=0: the base already holds this environment (the local bases of
# deploy/local_images.py, whose Debian Python 3.11.2 needs a few pins relaxed)
ARG INSTALL_REQUIREMENTS=1
RUN if [ "$INSTALL_REQUIREMENTS" = 1 ]; then pip install --no-cache-dir -r /opt/tfs-release/requirements.txt; fi
USER 0
COPY cli.py /opt/tfs-release/cli.py
COPY registry /opt/tfs-release/registry
# whole packages the DAGs and plugins reach (no TensorFlow is imported from them here: the container
# reaper, TF Serving's API and endpoint credentials, what production serves); a unit test
# (tests/unit/deploy/test_airflow_image.py) checks this list against the plugins' and DAGs' imports
COPY tfs_api /opt/tfs-release/tfs_api
COPY serving /opt/tfs-release/serving
COPY validation /opt/tfs-release/validation
COPY production /opt/tfs-release/production
COPY config /opt/tfs-release/config
COPY dags /opt/tfs-release/dags
COPY plugins /opt/tfs-release/plugins
COPY docker/airflow-init.sh /usr/local/bin/tfs-release-airflow-init
# the dag-processor's and triggerer's compose health check (one query, no Airflow import)
COPY docker/airflow-job-alive.py /usr/local/bin/tfs-release-job-alive
RUN chmod -R a+rX /opt/tfs-release \
 && chmod 0755 /usr/local/bin/tfs-release-airflow-init /usr/local/bin/tfs-release-job-alive \
 && mkdir -p /opt/airflow/logs /opt/airflow/auth && chown -R 50000:0 /opt/airflow
ENV AIRFLOW_HOME=/opt/airflow \
    TFS_RELEASE_CONFIG=/opt/tfs-release/config/models.yaml \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/tfs-release/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/tfs-release/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
USER 50000
WORKDIR /opt/airflow
# compose gives each service its full command (airflow api-server, airflow scheduler, ...)
ENTRYPOINT []
CMD ["airflow", "version"]
