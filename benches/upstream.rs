//! What a `tools/call` of a tool that calls an upstream API costs the server, beyond the
//! upstream's own work: server CPU per call of `test_upstream_call` against a local
//! upstream, plain (`ctx.http()` only) and with a token from `ctx.token_for` (exchanged
//! once at the local issuer, then found in the fleet store), next to `echo` on the same
//! node for scale. The upstream and the issuer run in this process, so the node's CPU
//! (from `/proc/<pid>/stat`) holds none of theirs.
//!
//! `cargo bench --bench upstream` measures the release binary; without `--bench` (as
//! `cargo test --benches` runs it) it does a short smoke pass. It prints figures only.

#[path = "../tests/support/examples.rs"]
mod examples;
// Benches build with `cfg(test)`, which brings in the issuer's own tests' imports.
#[allow(unused_imports)]
#[path = "../tests/support/issuer.rs"]
mod issuer;
#[path = "../tests/support/upstream.rs"]
mod upstream;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ureq::Agent;

use issuer::{Issuer, Key, CLIENT_ID, CLIENT_SECRET};
use upstream::Upstream;

/// The resource the node names, and the audience of the callers' tokens.
const RESOURCE: &str = "https://mcp.bench.test/mcp";

/// A running `mcp-fleet dev --auth jwt` trusting `issuer`, killed on drop.
struct Node {
    child: Child,
    url: String,
    /// Held open: a node writing to a closed pipe would fail.
    _stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(binary: &str, issuer: &Issuer) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let issuers = format!(
            "[{{issuer=\"{}\", token_exchange={{client_id=\"{CLIENT_ID}\", \
             client_secret=\"{CLIENT_SECRET}\"}}}}]",
            issuer.url()
        );
        let mut child = Command::new(binary)
            .args(["dev", "--auth", "jwt", "--listen", "127.0.0.1:0"])
            .args(["--public-url", RESOURCE, "--data-dir"])
            .arg(dir.path().join("data"))
            .env("MCP_FLEET_AUTH__ISSUERS", issuers)
            .env("MCP_FLEET_LOG__FILTER", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mcp-fleet");
        let mut first = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut first).expect("the address line");
        let url = first
            .trim()
            .strip_prefix("mcp-fleet listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        Self {
            child,
            url,
            _stdout: stdout,
            _dir: dir,
        }
    }

    /// CPU time the process has used so far (user and system).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the process's stat");
        // Fields after the command name (which may hold spaces) start at its ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split(' ')
            .collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        // Linux reports in clock ticks of 1/100 s (USER_HZ).
        Duration::from_millis(ticks * 10)
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

/// p50, p99 and server CPU per call of `calls` sequential calls.
fn measure(
    agent: &Agent,
    node: &Node,
    token: &str,
    tool: &str,
    arguments: &Value,
    calls: usize,
) -> (Duration, Duration, Duration) {
    for _ in 0..calls / 10 {
        call(agent, node, token, tool, arguments);
    }
    let mut latencies = Vec::with_capacity(calls);
    let cpu = node.cpu();
    for _ in 0..calls {
        let started = Instant::now();
        call(agent, node, token, tool, arguments);
        latencies.push(started.elapsed());
    }
    let cpu = node.cpu().saturating_sub(cpu);
    latencies.sort();
    (
        latencies[calls / 2],
        latencies[calls * 99 / 100],
        cpu / calls as u32,
    )
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let calls = if full { 3000 } else { 30 };
    // The fixture tool calling the upstream lives in the conformance example.
    let binary = std::env::var("MCP_FLEET_CONFORMANCE_BIN").unwrap_or_else(|_| {
        examples::example("conformance")
            .to_string_lossy()
            .into_owned()
    });
    let issuer = Issuer::start();
    let upstream = Upstream::start();
    let node = Node::start(&binary, &issuer);
    let token = issuer.token(Key::Rsa1, RESOURCE).subject("alice").sign();
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    println!(
        "upstream: {calls} sequential 2026-07-28 tools/call per line, one connection, \
         --auth jwt, {binary}"
    );
    let echo = json!({ "text": "hi" });
    let plain = json!({ "url": upstream.url("/echo") });
    let exchanged = json!({ "url": upstream.url("/echo"), "audience": "https://api.bench.test" });
    for (name, tool, arguments) in [
        ("echo (no upstream)", "echo", &echo),
        ("upstream, ctx.http()", "test_upstream_call", &plain),
        (
            "upstream, + ctx.token_for",
            "test_upstream_call",
            &exchanged,
        ),
    ] {
        let (p50, p99, cpu) = measure(&agent, &node, &token, tool, arguments, calls);
        println!(
            "{name:<28} p50 {:>7.1} µs   p99 {:>7.1} µs   server CPU {:>6.1} µs/call",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            cpu.as_secs_f64() * 1e6,
        );
    }
    println!(
        "token exchanges at the issuer: {} (one, then the stored token)",
        issuer.exchanges()
    );
}
