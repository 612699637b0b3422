# Local stand-ins for the compose file's third-party images, for sites (and this project's tests) that reach
# the Debian mirror and the npm registry but no image registry. One image, three roles, picked by entrypoint:
#   nats-server      Debian's nats-server           (stands in for nats:2.10-alpine)
#   postgres-standin Debian's PostgreSQL 15, with the official image's POSTGRES_* / PGPORT contract
#                    (stands in for postgres:16-bookworm)
#   s3rver           the S3-compatible test server from npm (stands in for MinIO, which neither Debian nor
#                    npm packages; it accepts only the key pair S3RVER/S3RVER)
# infra/compose.test.yaml wires them in; docs/self-host.md says how to use them offline.
ARG BASE_IMAGE=unimoe-local-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server postgresql-15 wget \
 && rm -rf /var/lib/apt/lists/*
RUN npm install -g s3rver@3.7.1 >/dev/null
COPY infra/docker/postgres-standin.sh /usr/local/bin/postgres-standin
