//! Cold start of one `mcp-fleet dev` node: from spawning the process to its listener
//! accepting a connection, and to the first `initialize` answered 200 (a session written
//! through Raft), on a fresh data directory and on a restart of a node holding 1000
//! sessions. Prints the median, minimum and maximum of N starts of each; figures only.
//!
//! `cargo bench --bench coldstart` runs 21 starts of each against the release binary;
//! `COLDSTART_BENCH_STARTS=N` runs N. `MCP_FLEET_BIN=PATH` measures another binary (an
//! older build, to compare). Without `--bench` (as `cargo test --benches` runs it) it
//! does a short smoke pass. Each start polls every millisecond, as a supervisor or a
//! balancer's health check would; the node runs with `--auth none`, so what is measured is
//! the node's own start, not a first fetch of an issuer's keys.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use ureq::Agent;

/// Sessions the restarted node holds.
const SESSIONS: usize = 1000;
/// How long one start may take before the bench gives up.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How often a start is probed.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// What one start took.
struct Start {
    /// Until a TCP connection to the public listener was accepted.
    listening: Duration,
    /// Until the first `initialize` was answered 200.
    initialized: Duration,
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let starts = std::env::var("COLDSTART_BENCH_STARTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 21 } else { 2 });
    let sessions = if full { SESSIONS } else { 20 };
    let binary = std::env::var("MCP_FLEET_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mcp-fleet").to_owned());
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    println!("coldstart: {starts} starts of each, `dev --auth none`, {binary}");

    let fresh: Vec<Start> = (0..starts)
        .map(|_| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            start(&binary, &agent, &dir.path().join("data"))
        })
        .collect();
    report("fresh data directory", fresh);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    fill(&binary, &agent, &data, sessions);
    let restarts: Vec<Start> = (0..starts).map(|_| start(&binary, &agent, &data)).collect();
    report(&format!("restart holding {sessions} sessions"), restarts);
}

/// A node on `data`, listening on a port known before it starts (so that the probe can
/// begin at once), with the per-principal session cap lifted: under `--auth none` every
/// session is the one anonymous principal's.
fn spawn(binary: &str, data: &Path) -> (Child, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MCP_FLEET_") {
            command.env_remove(key);
        }
    }
    let child = command
        .args(["dev", "--auth", "none", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", "100000000")
        .stdin(Stdio::null())
        // Kept open with the child: the node's announcements must not meet a closed pipe.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mcp-fleet");
    (child, format!("127.0.0.1:{port}"))
}

/// Starts a node on `data` and times it until it answers `initialize`; then stops it.
fn start(binary: &str, agent: &Agent, data: &Path) -> Start {
    let began = Instant::now();
    let (mut child, addr) = spawn(binary, data);
    let url = format!("http://{addr}/mcp");
    let mut listening = None;
    let initialized = loop {
        assert!(
            began.elapsed() < START_DEADLINE,
            "no initialize answered within {START_DEADLINE:?}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the node exited with {status}");
        }
        if listening.is_none() && TcpStream::connect(&addr).is_ok() {
            listening = Some(began.elapsed());
        }
        if listening.is_some() && initialize(agent, &url) {
            break began.elapsed();
        }
        std::thread::sleep(PROBE_EVERY);
    };
    stop(child);
    Start {
        listening: listening.expect("listening before answering"),
        initialized,
    }
}

/// Whether `initialize` at `url` was answered 200 with a session.
fn initialize(agent: &Agent, url: &str) -> bool {
    let body = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "coldstart-bench", "version": "0" },
        },
    });
    agent
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .send(body.to_string())
        .is_ok_and(|r| r.status() == 200 && r.headers().contains_key("mcp-session-id"))
}

/// Creates `sessions` sessions on a node on `data`, then stops it.
fn fill(binary: &str, agent: &Agent, data: &Path, sessions: usize) {
    let (child, addr) = spawn(binary, data);
    let url = format!("http://{addr}/mcp");
    let until = Instant::now() + START_DEADLINE;
    while !initialize(agent, &url) {
        assert!(Instant::now() < until, "the node to fill did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 1..sessions {
        assert!(initialize(agent, &url), "session {i} was not created");
    }
    stop(child);
}

/// Stops a node with SIGTERM (it flushes its replica) and waits for it.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + START_DEADLINE;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not stop within {START_DEADLINE:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn report(what: &str, mut starts: Vec<Start>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let summary = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        format!(
            "median {:.1} ms [{:.1}–{:.1}]",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1])
        )
    };
    let mut listening: Vec<Duration> = starts.iter().map(|s| s.listening).collect();
    let mut initialized: Vec<Duration> = starts.drain(..).map(|s| s.initialized).collect();
    let n = initialized.len();
    println!(
        "coldstart {what}: listening {}; first initialize 200 {} (n={n})",
        summary(&mut listening),
        summary(&mut initialized)
    );
}
