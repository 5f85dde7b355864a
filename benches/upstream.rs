//! What a `tools/call` of a tool that calls the team's upstream API costs the server,
//! beyond the upstream's own work: server CPU per call of `examples/tenant_api`'s
//! `create_requirement` against a local upstream, next to `echo` on the same node, and
//! the difference. A `create_requirement` call reads the tenant's API key
//! (`ctx.secret`), finds the caller's exchanged token in the store (`ctx.token_for`: one
//! exchange at the local issuer before the first round, then the stored token), POSTs to
//! the upstream (`ctx.http()`), and reads and writes the caller's state (`ctx.state()`,
//! a write through Raft). The upstream and the issuer run in this process, so the node's
//! CPU (from `/proc/<pid>/stat`) holds none of theirs.
//!
//! Beside it, a node of `examples/conformance` breaks the cost down: its fixtures each
//! use one service (`test_secret`, `test_upstream_call` with a stored token,
//! `test_state` set), measured against that node's own `echo`. The lines take turns over
//! a few rounds; each figure is the median over the rounds, the difference the median of
//! each round's difference. `cargo bench --bench upstream` measures the release builds
//! (`TENANT_API_BIN=PATH` another build of the example); without
//! `--bench` (as `cargo test --benches` runs it) it does a short smoke pass. It prints
//! figures only.

#[path = "../tests/support/examples.rs"]
mod examples;
// Benches build with `cfg(test)`, which brings in the issuer's own tests' imports.
#[allow(unused_imports)]
#[path = "../tests/support/issuer.rs"]
mod issuer;
#[path = "../tests/support/upstream.rs"]
mod upstream;

#[path = "support/process.rs"]
mod process;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ureq::Agent;

use issuer::{Issuer, Key, CLIENT_ID, CLIENT_SECRET};
use upstream::Upstream;

/// The resource the node names, and the audience of the callers' tokens.
const RESOURCE: &str = "https://mcp.bench.test/mcp";
/// The audience the example asks tokens for.
const AUDIENCE: &str = "https://api.bench.test";
/// The node's cluster secret, for `secrets set`.
const CLUSTER_SECRET: &str = "bench-cluster-secret-0123456789";
/// Rounds each tool takes turns in.
const ROUNDS: usize = 5;

/// A running `tenant_api dev --auth jwt` trusting `issuer` and calling `upstream`, killed
/// on drop.
struct Node {
    child: Child,
    url: String,
    /// The internal listener, `HOST:PORT`.
    internal: String,
    /// Held open: a node writing to a closed pipe would fail.
    _stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(binary: &str, issuer: &Issuer, upstream: &Upstream) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // `workos`: a token's org_id is its tenant, whose API key the tool reads.
        let issuers = format!(
            "[{{issuer=\"{}\", preset=\"workos\", token_exchange={{client_id=\"{CLIENT_ID}\", \
             client_secret=\"{CLIENT_SECRET}\"}}}}]",
            issuer.url()
        );
        let mut child = Command::new(binary)
            .args(["dev", "--auth", "jwt", "--listen", "127.0.0.1:0"])
            .args(["--public-url", RESOURCE, "--data-dir"])
            .arg(dir.path().join("data"))
            .env("MCP_FLEET_AUTH__ISSUERS", issuers)
            .env("MCP_FLEET_CLUSTER_SECRET", CLUSTER_SECRET)
            .env("MCP_FLEET_LOG__FILTER", "warn")
            .env("ACME_API_URL", upstream.url(""))
            .env("ACME_API_AUDIENCE", AUDIENCE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tenant_api");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = |prefix: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("a line on stdout");
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .to_owned()
        };
        let url = line("mcp-fleet listening on ");
        let internal = line("mcp-fleet internal listener on http://");
        Self {
            child,
            url,
            internal,
            _stdout: stdout,
            _dir: dir,
        }
    }

    /// Sets `tenant`'s secret `name` with the program's `secrets set`, the value on stdin.
    fn set_secret(&self, binary: &str, tenant: &str, name: &str, value: &str) {
        let mut child = Command::new(binary)
            .args(["secrets", "set", "--via", &self.internal])
            .args(["--tenant", tenant, "--name", name])
            .env("MCP_FLEET_CLUSTER_SECRET", CLUSTER_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run secrets set");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(value.as_bytes()).expect("write the value");
        drop(stdin);
        let out = child.wait_with_output().expect("secrets set");
        assert!(
            out.status.success(),
            "secrets set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// CPU time the process has used so far (user and system).
    fn cpu(&self) -> Duration {
        process::cpu_time(self.child.id())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stateless 2026-07-28 `tools/call`; returns the result's text.
fn call(agent: &Agent, node: &Node, token: &str, tool: &str, arguments: &Value) -> String {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    });
    let mut response = agent
        .post(&node.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .header("authorization", &format!("Bearer {token}"))
        .send(body.to_string())
        .expect("a response");
    let text = response.body_mut().read_to_string().expect("a body");
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let result = &answer["result"];
    assert_ne!(result["isError"], true, "{answer}");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {answer}"))
        .to_owned()
}

/// Latencies of `calls` sequential calls, and the server CPU per call.
fn measure(
    agent: &Agent,
    node: &Node,
    token: &str,
    tool: &str,
    arguments: &Value,
    calls: usize,
) -> (Vec<Duration>, Duration) {
    let mut latencies = Vec::with_capacity(calls);
    let cpu = node.cpu();
    for _ in 0..calls {
        let started = Instant::now();
        call(agent, node, token, tool, arguments);
        latencies.push(started.elapsed());
    }
    let cpu = node.cpu().saturating_sub(cpu);
    (latencies, cpu / calls as u32)
}

/// The middle value (the upper one of an even count).
fn median<T: Ord + Copy>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The middle value of floats (the upper one of an even count).
fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One line of the table: a tool called on one of the nodes, measured against that
/// node's `echo`.
struct Row {
    name: &'static str,
    node: usize,
    tool: &'static str,
    arguments: Value,
    cpu: Vec<Duration>,
    /// µs per call beyond the node's `echo` in each round (negative in noise).
    extra: Vec<f64>,
    latencies: Vec<Duration>,
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let calls = if full { 600 } else { 10 };
    let tenant_api = std::env::var("TENANT_API_BIN").unwrap_or_else(|_| {
        examples::example("tenant_api")
            .to_string_lossy()
            .into_owned()
    });
    // The conformance fixtures call one context service each: the breakdown.
    let conformance = examples::example("conformance")
        .to_string_lossy()
        .into_owned();
    let issuer = Issuer::start();
    let upstream = Upstream::start();
    let nodes = [
        Node::start(&tenant_api, &issuer, &upstream),
        Node::start(&conformance, &issuer, &upstream),
    ];
    for (node, binary) in nodes.iter().zip([&tenant_api, &conformance]) {
        node.set_secret(binary, "acme", "api_key", "bench-acme-key");
    }
    let token = issuer
        .token(Key::Rsa1, RESOURCE)
        .subject("alice")
        .set("org_id", "acme")
        .sign();
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let row = |name, node, tool, arguments| Row {
        name,
        node,
        tool,
        arguments,
        cpu: Vec::new(),
        extra: Vec::new(),
        latencies: Vec::new(),
    };
    let echo = json!({ "text": "hi" });
    let mut rows = [
        row("tenant_api: echo", 0, "echo", echo.clone()),
        row(
            "tenant_api: create_requirement",
            0,
            "create_requirement",
            json!({ "title": "Bench requirement", "description": "from cargo bench" }),
        ),
        row("conformance: echo", 1, "echo", echo),
        row(
            "conformance: test_secret (ctx.secret)",
            1,
            "test_secret",
            json!({ "name": "api_key" }),
        ),
        row(
            "conformance: test_upstream_call (http + token)",
            1,
            "test_upstream_call",
            json!({ "url": upstream.url("/echo"), "audience": AUDIENCE }),
        ),
        row(
            "conformance: test_state set (ctx.state)",
            1,
            "test_state",
            json!({ "op": "set", "key": "filed", "value": { "count": 1, "last_id": "REQ-1" } }),
        ),
    ];
    println!(
        "upstream: {ROUNDS} rounds of {calls} sequential 2026-07-28 tools/call per line, one \
         connection, --auth jwt; node 0 {tenant_api}, node 1 {conformance}"
    );
    // Warm up, and exchange the caller's token once on each node.
    for row in &rows {
        for _ in 0..(calls / 10).max(1) {
            call(&agent, &nodes[row.node], &token, row.tool, &row.arguments);
        }
    }
    for _ in 0..ROUNDS {
        let mut baseline = [Duration::ZERO; 2];
        for row in &mut rows {
            let node = &nodes[row.node];
            let (latencies, cpu) = measure(&agent, node, &token, row.tool, &row.arguments, calls);
            if row.tool == "echo" {
                baseline[row.node] = cpu;
            }
            row.latencies.extend(latencies);
            row.cpu.push(cpu);
            row.extra.push(micros(cpu) - micros(baseline[row.node]));
        }
    }
    println!(
        "{:<48} {:>8} {:>8} {:>12} {:>15}",
        "node: tool", "p50 µs", "p99 µs", "CPU µs/call", "- echo µs/call"
    );
    for row in &mut rows {
        row.latencies.sort();
        let n = row.latencies.len();
        println!(
            "{:<48} {:>8.1} {:>8.1} {:>12.1} {:>15.1}",
            row.name,
            micros(row.latencies[n / 2]),
            micros(row.latencies[n * 99 / 100]),
            micros(median(&row.cpu)),
            median_f64(&row.extra),
        );
    }
    println!(
        "CPU: median over the rounds; - echo: median of each round's difference from its \
         node's echo. Each round's CPU per call: {}",
        rows.iter()
            .map(|r| format!(
                "{} {:?}",
                r.name,
                r.cpu.iter().map(|d| micros(*d).round()).collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let reached = upstream
        .received()
        .iter()
        .filter(|r| r.path == "/requirements" && r.api_key.as_deref() == Some("bench-acme-key"))
        .count();
    println!(
        "create_requirement requests the upstream received with the tenant's key: {reached}; \
         token exchanges at the issuer: {} (one per node, then the stored token)",
        issuer.exchanges()
    );
}
