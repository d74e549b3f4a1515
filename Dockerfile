# The stub backend image: `meshcheck-stub` (src/bin/meshcheck-stub.rs), the app behind
# every fixture Deployment on the cluster targets. The kind target builds it with
#   docker build -t meshcheck/stub:<content hash> -f Dockerfile .
# and `kind load`s it; the fixtures' `meshcheck/stub:latest` is rewritten to that tag.
# The build context is only Cargo.toml, Cargo.lock and src/ (see .dockerignore).

# ---- build ------------------------------------------------------------------------
# The official Rust image: 1.95 >= the crate's rust-version (1.89, Cargo.toml) and reads the v4
# Cargo.lock. Debian bookworm, as the runtime image below, so the glibc the binary is
# linked against is the one it runs on. (ring needs a C compiler: slim images have gcc.)
FROM rust:1.95-slim-bookworm AS build
WORKDIR /build

# Dependencies first, in their own layer: the manifest and lockfile with placeholder
# sources for every target Cargo.toml names (the lib at src/lib.rs, the bins
# `meshcheck` at src/main.rs and `meshcheck-stub` at src/bin/meshcheck-stub.rs).
# This layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
    && : > src/lib.rs \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/meshcheck-stub.rs \
    && cargo build --release --locked --bin meshcheck-stub \
    && rm -rf src

# The real sources. COPY keeps their modification times from the build context, older
# than the placeholder build, and cargo decides freshness by mtime: without the touch
# it would keep the placeholder build.
COPY src ./src
RUN touch src/lib.rs src/main.rs src/bin/meshcheck-stub.rs \
    && cargo build --release --locked --bin meshcheck-stub \
    && install -D -m 0755 target/release/meshcheck-stub /out/meshcheck-stub

# ---- runtime ----------------------------------------------------------------------
# distroless cc: glibc and libgcc of Debian 12 (bookworm), no shell, no package
# manager. The readiness probes are httpGet, so nothing else is needed in the image.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshcheck-stub /usr/local/bin/meshcheck-stub
# Numeric, so that `runAsNonRoot: true` can be verified by the kubelet; not 1337
# (Istio's proxy UID, whose traffic the sidecar's iptables rules do not capture).
USER 65532:65532
# Listens on 0.0.0.0:8080 (LISTEN_ADDR, a comma-separated list, or --listen to change); identity from
# SERVICE_NAME, VERSION, POD_NAME, NAMESPACE.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/meshcheck-stub"]
