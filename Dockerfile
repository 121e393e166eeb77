# The `flotilla` image: controller, agent and CLI in one binary.
#   docker build -t ghcr.io/flotilla-dev/flotilla:0.1.0 .
# The charts run it non-root (uid 65532) with a read-only root filesystem;
# the only writable path it needs is the git mirror directory, an emptyDir
# the chart mounts.

ARG RUST_VERSION=1.89
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p flotilla \
    && install -Dm755 target/release/flotilla /out/flotilla

# kubectl renders kustomize bundles; helm renders Helm bundles.
FROM debian:bookworm-slim AS tools
ARG KUBECTL_VERSION=v1.32.3
ARG HELM_VERSION=v3.17.3
ARG TARGETARCH=amd64
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
    && chmod 755 /usr/local/bin/kubectl \
    && curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz" \
       | tar -xz -C /usr/local/bin --strip-components=1 "linux-${TARGETARCH}/helm"

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=tools /usr/local/bin/kubectl /usr/local/bin/helm /usr/local/bin/
COPY --from=build /out/flotilla /usr/local/bin/flotilla
USER 65532:65532
ENV HOME=/tmp
ENTRYPOINT ["/usr/local/bin/flotilla"]
CMD ["controller"]
