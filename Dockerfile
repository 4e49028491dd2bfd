# couchdb-cluster-init image: one static binary in an empty (FROM scratch) image, run as nobody.
#
# Build from source (needs the official Rust image; the default target):
#   docker build -t couchdb-cluster-init:local .
# Package a binary built on this machine (pulls nothing; see scripts/build-image):
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu -p couchdb-cluster-init
#   cp target/x86_64-unknown-linux-gnu/release/couchdb-cluster-init dist/
#   docker build --target host -t couchdb-cluster-init:local .
#
# The `host` stage comes first on purpose: the legacy builder (DOCKER_BUILDKIT=0, docker-compose
# 1.29) builds every stage up to the target, so `--target host` then touches neither the Rust image
# nor the network. A default build with the legacy builder also builds `host`: it copies the
# dist/ directory, which always exists (empty but for its .gitignore, which .dockerignore leaves out).

ARG RUST_VERSION=1.95

# --- what both final images share: labels, the non-root user, the entrypoint -----------------
FROM scratch AS base
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="couchdb-cluster-init" \
      org.opencontainers.image.description="Forms and verifies a CouchDB 3.4.2 cluster, then exits with a documented status code" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# nobody:nogroup. No passwd file is needed: the binary never looks its user up.
USER 65534:65534
ENTRYPOINT ["/couchdb-cluster-init"]

# --- host: package dist/couchdb-cluster-init, a static binary built on this machine -----------
FROM base AS host
COPY dist/ /

# --- builder: build the static binary in the official Rust image -------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# A static glibc binary (resolves names through /etc/hosts and /etc/resolv.conf, which Docker
# provides). An explicit --target keeps crt-static away from build scripts and proc macros.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" -p couchdb-cluster-init \
 && cp "target/$target/release/couchdb-cluster-init" /couchdb-cluster-init

# --- the image users get (default target) ------------------------------------------------------
FROM base AS image
COPY --from=builder /couchdb-cluster-init /couchdb-cluster-init
