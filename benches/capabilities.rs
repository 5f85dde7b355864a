//! What a legacy `tools/call` costs when the session's capabilities fill
//! `sessions.max_client_bytes` (16 KiB), against one whose capabilities are empty. Each
//! call's context used to deep-copy the session's capabilities; it now shares them.
//!
//! `cargo bench --bench capabilities` measures the release binary built with it;
//! `MCP_FLEET_BIN=PATH cargo bench --bench capabilities` measures another binary (an older
//! build, to compare) the same way; `CAPABILITIES_BENCH_BEFORE=PATH` (not an `MCP_FLEET_`
//! variable: the nodes would read it as configuration) measures that binary too, each
//! line right after this build's, so the two runs share the machine's load (`scripts/bench
//! before-after REV` builds REV and does this). Without `--bench` (as `cargo test --benches`
//! runs it) it does a short smoke pass. It prints figures only.

#[path = "support/process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ureq::Agent;

/// The sessions measured: a name and the capabilities `initialize` declares.
fn shapes() -> Vec<(&'static str, Value)> {
    // About 16 KiB of JSON text either way. Small objects are the costliest to copy (one
    // allocation each); one long string is the cheapest.
    let objects: serde_json::Map<String, Value> = (0..950)
        .map(|i| (format!("k{i:05}"), json!({ "a": 1 })))
        .collect();
    vec![
        ("empty capabilities", json!({})),
        (
            "16 KiB, one string",
            json!({ "experimental": { "note": "x".repeat(16_000) } }),
        ),
        (
            "16 KiB, 950 small objects",
            json!({ "experimental": objects }),
        ),
    ]
}

/// A running `mcp-fleet dev`, killed on drop.
struct Node {
    child: Child,
    url: String,
    /// Held open: the node prints a second line, which fails (and stops it) on a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(binary: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut child = Command::new(binary)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
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
        process::cpu_time(self.child.id())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(
    agent: &Agent,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (Option<String>, Value) {
    let mut request = agent
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body.to_string()).expect("a response");
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.body_mut().read_to_string().expect("a body");
    (session, serde_json::from_str(&text).expect("a JSON answer"))
}

fn measure(
    agent: &Agent,
    node: &Node,
    capabilities: &Value,
    calls: usize,
) -> (Duration, Duration, Duration) {
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities,
            "clientInfo": { "name": "capabilities-bench", "version": "0" },
        },
    });
    let (session, answer) = post(agent, &node.url, &[], &init);
    let session = session.unwrap_or_else(|| panic!("no session: {answer}"));
    let headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": "hi" } },
    });
    for _ in 0..calls / 10 {
        post(agent, &node.url, &headers, &call);
    }
    let mut latencies = Vec::with_capacity(calls);
    let cpu = node.cpu();
    for _ in 0..calls {
        let started = Instant::now();
        let (_, answer) = post(agent, &node.url, &headers, &call);
        latencies.push(started.elapsed());
        assert_eq!(answer["result"]["content"][0]["text"], "hi", "{answer}");
    }
    let cpu = node.cpu().saturating_sub(cpu);
    latencies.sort();
    let p50 = latencies[calls / 2];
    let p99 = latencies[calls * 99 / 100];
    (p50, p99, cpu / calls as u32)
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let calls = if full { 5000 } else { 50 };
    let binary = std::env::var("MCP_FLEET_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mcp-fleet").to_owned());
    println!("capabilities: {calls} sequential legacy tools/call (echo) per line, one connection, {binary}");
    let mut nodes = vec![("", Node::start(&binary))];
    if let Ok(before) = std::env::var("CAPABILITIES_BENCH_BEFORE") {
        println!("before: {before}");
        nodes.push(("before", Node::start(&before)));
    }
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    for (name, capabilities) in shapes() {
        let size = capabilities.to_string().len();
        for (label, node) in &nodes {
            let (p50, p99, cpu) = measure(&agent, node, &capabilities, calls);
            println!(
                "{name:<28} {label:<6} {size:>6} B   p50 {:>7.1} µs   p99 {:>7.1} µs   server CPU {:>6.1} µs/call",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                cpu.as_secs_f64() * 1e6,
            );
        }
    }
}
