//! Read-your-writes across nodes for tool state (and tenant secrets): the figures behind
//! acknowledging these writes once every member has applied them rather than putting a
//! read barrier on every read (README, "Tool state and tenant secrets").
//!
//! Three release-build nodes with the conformance fixtures. Each round writes a value
//! through one node with `test_state` and reads it back through the next, in both designs:
//!
//! - **applied everywhere** (what ships): the write returns once every member confirmed
//!   it applied it; the read is local.
//! - **read barrier**: the write returns once a majority has it; the read first asks the
//!   leader for a read index and waits until the local replica reaches it.
//!
//! For each it prints the write, the read and the write+read latency (p50, p99), and
//! checks that the read saw the value just written. Reads outnumber writes in real tools
//! (a secret is read on every call, set by an operator now and then), so the read column
//! weighs most. `cargo bench --bench state` runs it in full; without `--bench` (as
//! `cargo test --benches` runs it) a short smoke pass.

#[allow(dead_code)]
#[path = "../tests/cluster/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/support/examples.rs"]
mod examples;
#[allow(dead_code)]
#[path = "../tests/cluster/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::Cluster;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds = if full { 400 } else { 20 };
    if !full {
        println!("state: smoke run (pass --bench, as `cargo bench` does, for the full run)");
    }
    let cluster = Cluster::builder()
        .program(examples::example("conformance"))
        .start(3);
    let urls: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.node(id).mcp_url())
        .collect();
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "design", "write p50", "write p99", "read p50", "read p99", "both p50", "both p99"
    );
    for (design, set, get) in [
        ("applied everywhere", "set", "get"),
        ("read barrier", "set_majority", "get_barrier"),
    ] {
        let (mut writes, mut reads, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (writer, reader) = (&urls[round % 3], &urls[(round + 1) % 3]);
            let key = format!("k{}", round % 10);
            let started = Instant::now();
            call(
                &cluster,
                writer,
                json!({ "op": set, "key": key, "value": round }),
            );
            let written = started.elapsed();
            let read = call(&cluster, reader, json!({ "op": get, "key": key }));
            let total = started.elapsed();
            assert_eq!(
                read,
                round.to_string(),
                "{design}: round {round} read stale"
            );
            writes.push(written);
            reads.push(total - written);
            both.push(total);
        }
        let [w, r, b] = [&mut writes, &mut reads, &mut both].map(|v| {
            v.sort();
            (percentile(v, 50), percentile(v, 99))
        });
        println!(
            "{design:<20} {:>12.2?} {:>12.2?} {:>12.2?} {:>12.2?} {:>12.2?} {:>12.2?}",
            w.0, w.1, r.0, r.1, b.0, b.1
        );
    }
}

/// A `test_state` call through `url`; the answer's text. Panics on any failure.
fn call(cluster: &Cluster, url: &str, args: Value) -> String {
    let reply = client::modern_call(url, None, "test_state", args.clone())
        .unwrap_or_else(|e| panic!("test_state {args}: {e}\n{}", cluster.logs()));
    let message = reply.message().expect("a JSON-RPC answer");
    let result = &message["result"];
    assert_ne!(
        result["isError"],
        json!(true),
        "test_state {args}: {message}"
    );
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
