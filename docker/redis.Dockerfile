# Local stand-in for the `redis` image of the "celery" profile (no image registry is reachable
# here): Debian's redis-server, listening on 6379 on every interface, no persistence (the broker
# only carries task messages; Airflow keeps state in Postgres). Production uses redis:7.2-bookworm.
# BASE: deploy/local_images.py passes its locally built Debian bookworm base.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
# the official image's default: not protected-mode (the port is only on the compose network)
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
