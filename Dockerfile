# syntax=docker/dockerfile:1
# The ozform image: the release binary on a distroless base, as a non-root user (uid 65532).
# Not built by this repository's CI (it has no Docker engine); tests/testsuite/ecosystem.rs lints this
# file with hadolint.
#
#   docker build -t ozform .
#   docker run --rm -v "$PWD:/work" -w /work -e OZ_API_URL -e OZ_ADMIN_EMAIL -e OZ_ADMIN_PASSWORD \
#       ozform plan manifests/
#   docker run --rm -p 8080:8080 ozform emulator --listen 0.0.0.0:8080   # the emulator as a sidecar
#   docker build --target ci -t ozform-ci .   # with bash, curl and jq, for contrib/ci/gitlab/.gitlab-ci.yml
#   docker build --target kubernetes -t ozform-kubernetes .   # with python3 and kubectl, for contrib/kubernetes/

# Build stage: the toolchain matches `rust-version` or newer; `--locked` builds exactly Cargo.lock.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# `ozform demo` embeds the basic example's manifests.
COPY examples/basic ./examples/basic
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin ozform

# CI stage (`docker build --target ci -t ozform-ci .`): the binary with bash, curl, jq and CA
# roots, for the GitLab recipe in contrib/ci/ (its jobs run a shell script in the image).
FROM debian:bookworm-slim AS ci
# Unpinned on purpose: bookworm's security updates replace pinned versions from its archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash ca-certificates curl jq \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ozform /usr/local/bin/ozform
RUN useradd --uid 10001 --create-home ozform
USER 10001:10001
WORKDIR /home/ozform

# Kubernetes stage (`docker build --target kubernetes -t ozform-kubernetes .`): the binary with
# Python 3, kubectl and the Kubernetes token store recipe, for the manifests in
# contrib/kubernetes/ (`reconcile` with `--token-store exec:/usr/local/lib/ozform/token-stores/kubernetes`).
FROM debian:bookworm-slim AS kubernetes
# Unpinned on purpose, as in the ci stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates kubernetes-client python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ozform /usr/local/bin/ozform
COPY contrib/token-stores/kubernetes /usr/local/lib/ozform/token-stores/kubernetes
RUN useradd --uid 10001 --no-create-home --home-dir /tmp ozform
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/ozform"]
CMD ["--help"]

# Runtime stage (the default): glibc and CA roots, no shell, no package manager; uid 65532 (`nonroot`).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ozform /usr/local/bin/ozform
USER 65532:65532
WORKDIR /work
# The emulator's port when it runs as a sidecar (`emulator --listen 0.0.0.0:8080`).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ozform"]
CMD ["--help"]
