//! Fleet figures from three real `mcp-fleet serve` processes: session-create latency,
//! concurrent create throughput, and leader failover time.
//!
//! `cargo bench --bench fleet` runs it in full against the release binary. Without
//! `--bench` (as `cargo test --benches` runs it) it does a short smoke pass instead.
//!
//! After each create figure, every node's share of the writes is printed from its metrics:
//! its writes' mean time from proposal to applied, its log's fsyncs (mean time, appends
//! each covered) and, on the leader, the writes each log entry carried.
//! `FLEET_BENCH_BEFORE=/path/to/mcp-fleet` first runs the create figures on a cluster of
//! that build, for a before and after in one run.
//! `FLEET_BENCH_SET=KEY=VALUE,KEY=VALUE` gives every node those settings (e.g.
//! `MCP_FLEET_RAFT__HEARTBEAT_INTERVAL=150ms,MCP_FLEET_RAFT__ELECTION_TIMEOUT=750ms`): how
//! the trade-off between failover time and elections under load was measured. (Not an
//! `MCP_FLEET_` variable itself: the harness keeps those from the nodes.)
//! `FLEET_BENCH_FAILOVERS=N` runs N failover rounds instead of 5;
//! `FLEET_BENCH_PROGRAM=/path/to/mcp-fleet` runs every figure on that build instead of this
//! one (for failovers of two builds interleaved). A round slower than
//! [`SLOW_FAILOVER`] prints what the survivors logged during it: with
//! `FLEET_BENCH_SET=MCP_FLEET_LOG__FILTER=info`, openraft's account of every vote too.

// The cluster suite's harness and client, shared; the bench uses only part of them.
#[allow(dead_code)]
#[path = "../tests/cluster/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/cluster/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use client::Session;
use harness::Cluster;

/// How much work each figure takes.
struct Plan {
    sequential_creates: usize,
    threads: usize,
    concurrent_for: Duration,
    failovers: usize,
}

const FULL: Plan = Plan {
    sequential_creates: 2000,
    threads: 16,
    concurrent_for: Duration::from_secs(5),
    failovers: 5,
};

const SMOKE: Plan = Plan {
    sequential_creates: 20,
    threads: 4,
    concurrent_for: Duration::from_millis(500),
    failovers: 1,
};

/// A failover slower than this prints the survivors' log lines written during it.
const SLOW_FAILOVER: Duration = Duration::from_secs(1);
/// How long a failover may take before the bench gives up.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);
/// The `clientInfo` name of every session the bench makes.
const CLIENT: &str = "fleet-bench";

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let plan = if full { FULL } else { SMOKE };
    if !full {
        println!("fleet: smoke run (pass --bench, as `cargo bench` does, for the full run)");
    }
    if let Some(before) = std::env::var_os("FLEET_BENCH_BEFORE") {
        println!("--- before: {} ---", before.to_string_lossy());
        let cluster = Cluster::builder()
            .env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", "100000000")
            .program(PathBuf::from(before))
            .start(3);
        creates(&cluster, &plan);
        println!("--- this build ---");
    }
    // Every create is the one anonymous principal's, thousands of them: lift its cap.
    let mut builder = Cluster::builder().env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", "100000000");
    if let Some(program) = std::env::var_os("FLEET_BENCH_PROGRAM") {
        println!("fleet: program {}", program.to_string_lossy());
        builder = builder.program(PathBuf::from(program));
    }
    let settings = std::env::var("FLEET_BENCH_SET").unwrap_or_default();
    for setting in settings.split(',').filter(|s| !s.trim().is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .unwrap_or_else(|| panic!("FLEET_BENCH_SET: `{setting}` is not KEY=VALUE"));
        builder = builder.env(key.trim(), value.trim());
    }
    println!(
        "fleet: settings {}",
        if settings.trim().is_empty() {
            "default"
        } else {
            settings.trim()
        }
    );
    let mut cluster = builder.start(3);
    let before = elections(&cluster);
    creates(&cluster, &plan);
    let after = elections(&cluster);
    // With the leader alive throughout, any new term or leader is a spurious election.
    println!(
        "elections under the create load: {} new terms, {} leader changes seen by the 3 nodes",
        after.terms - before.terms,
        after.leader_changes - before.leader_changes
    );
    let rounds = std::env::var("FLEET_BENCH_FAILOVERS")
        .ok()
        .map(|n| {
            n.parse()
                .expect("FLEET_BENCH_FAILOVERS: a number of rounds")
        })
        .unwrap_or(plan.failovers);
    failover(&mut cluster, rounds);
}

/// The create figures, each followed by the nodes' share of its writes.
fn creates(cluster: &Cluster, plan: &Plan) {
    let urls: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.node(id).mcp_url())
        .collect();
    let start = Shares::read(cluster);
    sequential_latency(cluster, &urls, plan.sequential_creates);
    let sequential = Shares::read(cluster);
    sequential.since(&start).print();
    concurrent_throughput(cluster, &urls, plan.threads, plan.concurrent_for);
    Shares::read(cluster).since(&sequential).print();
}

/// What each node's metrics say of its writes so far, by node id.
struct Shares(BTreeMap<u64, Share>);

/// One node's counters; see [`Shares`].
#[derive(Default, Clone)]
struct Share {
    state: String,
    commit_seconds: f64,
    commits: f64,
    flush_seconds: f64,
    flushes: f64,
    flushed_appends: f64,
    entry_writes: f64,
    entries: f64,
}

impl Shares {
    fn read(cluster: &Cluster) -> Self {
        let shares = cluster
            .ids()
            .into_iter()
            .map(|id| {
                let text = cluster.try_metrics(id).unwrap_or_default();
                let value = |name: &str| {
                    text.lines()
                        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0.0)
                };
                let state = cluster
                    .try_status(id)
                    .and_then(|s| s["state"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let share = Share {
                    state,
                    commit_seconds: value("mcp_fleet_raft_commit_seconds_sum"),
                    commits: value("mcp_fleet_raft_commit_seconds_count"),
                    flush_seconds: value("mcp_fleet_raft_log_flush_seconds_sum"),
                    flushes: value("mcp_fleet_raft_log_flush_seconds_count"),
                    flushed_appends: value("mcp_fleet_raft_log_flush_appends_sum"),
                    entry_writes: value("mcp_fleet_raft_entry_writes_sum"),
                    entries: value("mcp_fleet_raft_entry_writes_count"),
                };
                (id, share)
            })
            .collect();
        Self(shares)
    }

    /// What changed since `earlier`.
    fn since(&self, earlier: &Shares) -> Shares {
        let shares = self
            .0
            .iter()
            .map(|(id, now)| {
                let then = earlier.0.get(id).cloned().unwrap_or_default();
                let share = Share {
                    state: now.state.clone(),
                    commit_seconds: now.commit_seconds - then.commit_seconds,
                    commits: now.commits - then.commits,
                    flush_seconds: now.flush_seconds - then.flush_seconds,
                    flushes: now.flushes - then.flushes,
                    flushed_appends: now.flushed_appends - then.flushed_appends,
                    entry_writes: now.entry_writes - then.entry_writes,
                    entries: now.entries - then.entries,
                };
                (*id, share)
            })
            .collect();
        Shares(shares)
    }

    fn print(&self) {
        let mean = |sum: f64, count: f64| if count > 0.0 { sum / count } else { 0.0 };
        for (id, s) in &self.0 {
            println!(
                "  node {id} ({}): {:.0} writes, proposal to applied mean {:.2} ms; \
                 {:.0} log fsyncs, mean {:.2} ms, {:.1} appends each; {:.0} entries proposed, \
                 {:.1} writes each",
                s.state,
                s.commits,
                mean(s.commit_seconds, s.commits) * 1000.0,
                s.flushes,
                mean(s.flush_seconds, s.flushes) * 1000.0,
                mean(s.flushed_appends, s.flushes),
                s.entries,
                mean(s.entry_writes, s.entries),
            );
        }
    }
}

/// Session creates one after another, round-robin over the nodes: p50 and p99.
fn sequential_latency(cluster: &Cluster, urls: &[String], creates: usize) {
    let mut took: Vec<Duration> = (0..creates)
        .map(|i| {
            let url = &urls[i % urls.len()];
            let start = Instant::now();
            if let Err(e) = Session::open(url, CLIENT) {
                panic!("create {i}: {e}\n{}", cluster.logs());
            }
            start.elapsed()
        })
        .collect();
    took.sort_unstable();
    let percentile = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
    println!("session-create sequential: {creates} creates round-robin over 3 nodes");
    println!("session-create latency p50: {:.2} ms", ms(percentile(50)));
    println!("session-create latency p99: {:.2} ms", ms(percentile(99)));
}

/// Session creates from `threads` threads at once for `duration`: creates per second.
fn concurrent_throughput(cluster: &Cluster, urls: &[String], threads: usize, duration: Duration) {
    let made = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let start = Instant::now();
    let end = start + duration;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (made, failed) = (&made, &failed);
            scope.spawn(move || {
                let mut i = t;
                while Instant::now() < end {
                    match Session::open(&urls[i % urls.len()], CLIENT) {
                        Ok(_) => made.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let made = made.into_inner();
    let failed = failed.into_inner();
    println!(
        "session-create concurrent: {threads} threads for {:.1} s, {made} created, {failed} failed",
        elapsed.as_secs_f64()
    );
    println!(
        "session-create throughput: {:.0} creates/s",
        made as f64 / elapsed.as_secs_f64()
    );
    assert!(made > 0, "no session was created\n{}", cluster.logs());
}

/// What the nodes have seen of elections so far.
struct Elections {
    /// The highest term any node is in.
    terms: u64,
    /// `mcp_fleet_raft_leader_changes_total`, summed over the nodes.
    leader_changes: u64,
}

fn elections(cluster: &Cluster) -> Elections {
    let ids = cluster.live();
    let terms = ids
        .iter()
        .filter_map(|&id| cluster.status(id)["term"].as_u64())
        .max()
        .unwrap_or(0);
    let leader_changes = ids
        .iter()
        .map(|&id| {
            let text = cluster.try_metrics(id).unwrap_or_default();
            text.lines()
                .find_map(|line| line.strip_prefix("mcp_fleet_raft_leader_changes_total "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("node {id}: no leader changes in /metrics"))
        })
        .sum();
    Elections {
        terms,
        leader_changes,
    }
}

/// SIGKILLs the leader and times until a survivor creates a session; restarts the killed
/// node before the next round.
fn failover(cluster: &mut Cluster, rounds: usize) {
    let mut took_all = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let leader = cluster.leader();
        let term = cluster.status(leader)["term"].as_u64().unwrap_or(0);
        let survivor_ids: Vec<u64> = cluster
            .live()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let survivors: Vec<String> = survivor_ids
            .iter()
            .map(|&id| cluster.node(id).mcp_url())
            .collect();
        let logged: Vec<usize> = survivor_ids
            .iter()
            .map(|&id| cluster.node(id).log_tail(usize::MAX).lines().count())
            .collect();
        cluster.kill(leader);
        let killed = Instant::now();
        let cluster_now: &Cluster = cluster;
        let (took, elected) = std::thread::scope(|scope| {
            // When a survivor first calls itself leader, and in which term: a term more
            // than one past the old leader's means a split vote.
            let elected = scope.spawn(|| {
                while killed.elapsed() < FAILOVER_DEADLINE {
                    for &id in &survivor_ids {
                        let Some(status) = cluster_now.try_status(id) else {
                            continue;
                        };
                        if status["state"] == "Leader" {
                            return Some((killed.elapsed(), status["term"].as_u64()));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                None
            });
            let mut attempt = 0;
            let took = loop {
                let url = &survivors[attempt % survivors.len()];
                if Session::open(url, CLIENT).is_ok() {
                    break killed.elapsed();
                }
                assert!(
                    killed.elapsed() < FAILOVER_DEADLINE,
                    "no survivor created a session within {FAILOVER_DEADLINE:?}\n{}",
                    cluster_now.logs()
                );
                attempt += 1;
                // Paces the retries so they do not starve the election of CPU.
                std::thread::sleep(Duration::from_millis(2));
            };
            (took, elected.join().ok().flatten())
        });
        took_all.push(took);
        let elected = elected.map_or_else(
            || "no leader seen".to_owned(),
            |(at, new_term)| {
                format!(
                    "a survivor led after {:.0} ms, term {term} to {}",
                    ms(at),
                    new_term.unwrap_or(0)
                )
            },
        );
        println!(
            "failover {round}: {:.1} ms from SIGKILL of leader node {leader} to a session created by a survivor ({elected})",
            ms(took)
        );
        if took > SLOW_FAILOVER {
            for (&id, &from) in survivor_ids.iter().zip(&logged) {
                let log = cluster.node(id).log_tail(usize::MAX);
                let lines: Vec<&str> = log.lines().skip(from).collect();
                println!(
                    "--- node {id}, the {} lines it logged since the kill ---\n{}",
                    lines.len(),
                    lines.join("\n")
                );
            }
        }
        cluster.restart(leader);
        cluster.wait_ready(leader);
        cluster.leader();
    }
    let list: Vec<String> = took_all.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    took_all.sort_unstable();
    println!(
        "failover ms per round: {}; median {:.1} ms",
        list.join(" "),
        ms(took_all[took_all.len() / 2])
    );
    println!(
        "failover max: {:.1} ms over {rounds} rounds",
        ms(took_all[took_all.len() - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
