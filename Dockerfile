# syntax=docker/dockerfile:1
# The opamp-gitops server image: built with the same `cargo build --release --locked` that the
# README documents and tests/deploy.rs checks, run as a non-root user on debian:bookworm-slim.
#
#   docker build \
#     --build-arg OPAMP_GITOPS_COMMIT="$(git rev-parse HEAD)" \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     -t opamp-gitops:"$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" .
#
# .dockerignore keeps .git out of the context, so the commit comes from the build argument (build.rs
# reads OPAMP_GITOPS_COMMIT first); SOURCE_DATE_EPOCH fixes the build date that `--version` and
# GET /api/version show.

FROM rust:1.95-bookworm AS build
# git2's HTTPS links the system OpenSSL, found through pkg-config (both usually in this image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG OPAMP_GITOPS_COMMIT=""
ARG SOURCE_DATE_EPOCH=""
RUN cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: HTTPS git remotes and PostgreSQL over TLS; git: for operators exec'ing in to
# look at the mirror; libssl3: git2's HTTPS links the system OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git libssl3 \
    && rm -rf /var/lib/apt/lists/*
ARG OPAMP_GITOPS_COMMIT=""
LABEL org.opencontainers.image.title="opamp-gitops" \
      org.opencontainers.image.revision="${OPAMP_GITOPS_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --gid 10001 opamp-gitops \
    && useradd --uid 10001 --gid 10001 --home-dir /var/cache/opamp-gitops --no-create-home \
       --shell /usr/sbin/nologin opamp-gitops \
    && mkdir -p /var/cache/opamp-gitops \
    && chown 10001:10001 /var/cache/opamp-gitops
COPY --from=build /src/target/release/opamp-gitops /usr/local/bin/opamp-gitops
# The example repository, so that the image serves something out of the box (`--repo` default).
COPY --from=build /src/example-config-repo /opt/opamp-gitops/example-config-repo
WORKDIR /opt/opamp-gitops
ENV HOME=/var/cache/opamp-gitops
USER 10001:10001
VOLUME ["/var/cache/opamp-gitops"]
# 4320: OpAMP (WebSocket and plain HTTP, /v1/opamp); 8080: admin API, dashboard, probes, metrics.
EXPOSE 4320 8080
ENTRYPOINT ["/usr/local/bin/opamp-gitops"]
CMD ["serve", "--listen", "0.0.0.0:4320", "--admin-listen", "0.0.0.0:8080", "--cache-dir", "/var/cache/opamp-gitops"]
