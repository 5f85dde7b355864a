# mcp-fleet in a container: built with the Rust toolchain, run on Debian slim as a
# non-root user. One image serves every node; docker-compose.yml runs three behind HAProxy.
#
#   docker build -t mcp-fleet .
#   docker run --rm mcp-fleet serve --help
#
# Listeners (bind them to 0.0.0.0 in a container): 8080 public (MCP, /health, /ready),
# 7000 internal (Raft, forwarded writes, /cluster; reachable by the other nodes only).
# State lives in /data, a volume: one per node, never shared. The process writes nothing
# else, so the container can run with a read-only root file system (`--read-only`).
# The image holds the binary alone: no test, fixture or source.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /build

# The release binary without symbols (they are most of its size), set here and not in
# Cargo.toml so benchmarks and profiling keep theirs.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependencies first, in a layer of their own that only a change to Cargo.toml or
# Cargo.lock rebuilds; it also holds the downloaded crates, so building after a change to
# the sources needs no network. The manifest names targets by path (the binary, tests,
# benches), which the build context does not have: every one gets a stub, read from the
# manifest so that a target added later needs no change here (cargo 1.95 only looks for
# the targets it builds, but the manifest stays whole for any cargo). Targets cargo finds
# by itself (examples/, tests/*.rs) are not in the build context.
COPY Cargo.toml Cargo.lock ./
RUN sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' Cargo.toml \
    | while read -r target; do \
          mkdir -p "$(dirname "$target")" && echo 'fn main() {}' > "$target"; \
      done \
    && test -f src/main.rs \
    && cargo build --release --locked --bin mcp-fleet \
    && rm -rf src

# The sources. COPY keeps their modification times, which can be older than the stub
# build's output, so touch them or cargo would keep the stub binary. --offline: every
# crate is in the layer above.
COPY src src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --offline --bin mcp-fleet \
    && install -D -m 0755 target/release/mcp-fleet /out/mcp-fleet

FROM debian:${DEBIAN_RELEASE}-slim

# ca-certificates: nodes fetch issuers' metadata and key sets over https with the
# system's trust store. curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 mcp-fleet \
    && useradd --system --uid 10001 --gid mcp-fleet --home-dir /data --shell /usr/sbin/nologin mcp-fleet \
    && install -d -o mcp-fleet -g mcp-fleet -m 0700 /data

COPY --from=builder /out/mcp-fleet /usr/local/bin/mcp-fleet

USER mcp-fleet:mcp-fleet
WORKDIR /data
VOLUME ["/data"]
# The binary caps glibc's arenas at one per core (src/alloc.rs) and sled's cache defaults
# to 16 MiB (README, "Memory and disk under many sessions"). Two arenas here keep the
# image's memory the same on a host with many cores, whatever CPU limit the container has.
ENV MCP_FLEET_DATA_DIR=/data \
    MCP_FLEET_LOG__FORMAT=json \
    MALLOC_ARENA_MAX=2
EXPOSE 8080 7000

# Alive, not ready: a node that is catching up or has no leader is still healthy; the
# load balancer checks /ready to decide whether to send it requests.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"]

ENTRYPOINT ["mcp-fleet"]
CMD ["serve", "--help"]
