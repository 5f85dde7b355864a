//! What fleet-wide resource updates cost a `tools/call`: server CPU per call on the node
//! that runs it and on its two peers, for a plain call (`echo`, which announces nothing)
//! and for one that announces an update (`test_update_resource`), which the node relays to
//! its peers over the internal listener; and the same announcing call on a fleet of one,
//! where there is no peer to relay to.
//!
//! `cargo bench --bench notify` measures release builds of `examples/conformance` on
//! three (and one) real `serve` processes; `NOTIFY_BENCH_BIN=PATH` measures another build
//! of it (an older one, to compare) the same way. Without `--bench` (as
//! `cargo test --benches` runs it) it does a short smoke pass. It prints figures only.

#[allow(dead_code)]
#[path = "../tests/cluster/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/support/examples.rs"]
mod examples;
#[allow(dead_code)]
#[path = "../tests/cluster/harness.rs"]
mod harness;
#[path = "support/process.rs"]
mod process;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use harness::Cluster;

/// Every node's CPU time so far, by id.
fn cpus(cluster: &Cluster) -> Vec<Duration> {
    cluster
        .ids()
        .into_iter()
        .map(|id| process::cpu_time(cluster.node(id).pid()))
        .collect()
}

/// `calls` sequential calls of `tool` on node 1; the CPU per call of node 1 and of all
/// the other nodes together.
fn measure(cluster: &Cluster, tool: &str, calls: usize) -> (Duration, Duration) {
    let url = cluster.node(1).mcp_url();
    let arguments = match tool {
        "echo" => json!({ "text": "hi" }),
        _ => json!({ "uri": "test://bench/resource" }),
    };
    let call = || {
        let reply = client::modern_call(&url, None, tool, arguments.clone()).expect("a reply");
        assert_eq!(reply.status, 200, "{reply:?}");
    };
    for _ in 0..calls / 10 {
        call();
    }
    let before = cpus(cluster);
    for _ in 0..calls {
        call();
    }
    let used: Vec<Duration> = cpus(cluster)
        .iter()
        .zip(&before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let peers: Duration = used[1..].iter().sum();
    (used[0] / calls as u32, peers / calls as u32)
}

fn line(fleet: &str, what: &str, (here, peers): (Duration, Duration)) {
    println!(
        "{fleet:<10} {what:<34} node 1 {:>7.1} µs/call   peers together {:>7.1} µs/call",
        here.as_secs_f64() * 1e6,
        peers.as_secs_f64() * 1e6,
    );
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let calls = if full { 5000 } else { 50 };
    let program = std::env::var_os("NOTIFY_BENCH_BIN")
        .map_or_else(|| examples::example("conformance"), PathBuf::from);
    println!(
        "notify: {calls} sequential 2026-07-28 tools/call on node 1 per line, {}",
        program.display()
    );
    let three = Cluster::builder().program(program.clone()).start(3);
    line(
        "3 nodes",
        "echo (announces nothing)",
        measure(&three, "echo", calls),
    );
    line(
        "3 nodes",
        "test_update_resource (relayed)",
        measure(&three, "test_update_resource", calls),
    );
    drop(three);
    let one = Cluster::builder().program(program).start(1);
    line(
        "1 node",
        "echo (announces nothing)",
        measure(&one, "echo", calls),
    );
    line(
        "1 node",
        "test_update_resource (no peer)",
        measure(&one, "test_update_resource", calls),
    );
}
