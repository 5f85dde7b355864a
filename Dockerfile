# mcp-fleet in a container: built with the Rust toolchain, run on Debian slim as a
# non-root user. One image serves every node; docker-compose.yml runs three behind HAProxy.
#
#   docker build -t mcp-fleet .
#   docker run --rm mcp-fleet serve --help
#
# Listeners (bind them to 0.0.0.0 in a container): 8080 public (MCP, /health, /ready),
# 7000 internal (Raft, forwarded writes, /cluster; reachable by the other nodes only).
# State lives in /data, a volume: one per node, never shared.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /build

# Dependencies first, in a layer of their own that only a change to Cargo.toml or
# Cargo.lock rebuilds. The manifest names test and bench targets besides the binary, so
# stubs stand in for every target while the dependencies compile; the test and bench
# stubs stay (the build context has no tests/ or benches/, see .dockerignore).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/http tests/cluster benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for target in tests/http/main.rs tests/cluster/main.rs benches/fleet.rs benches/auth.rs; do \
           echo 'fn main() {}' > "$target"; \
       done \
    && cargo build --release --locked --bin mcp-fleet \
    && rm -rf src

# The sources. COPY keeps their modification times, which can be older than the stub
# build's output, so touch them or cargo would keep the stub binary.
COPY src src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin mcp-fleet \
    && install -D -m 0755 target/release/mcp-fleet /out/mcp-fleet

FROM debian:${DEBIAN_RELEASE}-slim

# ca-certificates: nodes fetch issuers' metadata and key sets over https with the
# system's trust store. curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 mcp-fleet \
    && useradd --system --uid 10001 --gid mcp-fleet --home-dir /data --shell /usr/sbin/nologin mcp-fleet \
    && install -d -o mcp-fleet -g mcp-fleet -m 0700 /data

COPY --from=builder /out/mcp-fleet /usr/local/bin/mcp-fleet

USER mcp-fleet:mcp-fleet
WORKDIR /data
VOLUME ["/data"]
ENV MCP_FLEET_DATA_DIR=/data \
    MCP_FLEET_LOG__FORMAT=json
EXPOSE 8080 7000

# Alive, not ready: a node that is catching up or has no leader is still healthy; the
# load balancer checks /ready to decide whether to send it requests.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"]

ENTRYPOINT ["mcp-fleet"]
CMD ["serve", "--help"]
