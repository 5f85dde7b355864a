//! AppendEntries round trips by size, idle and on a loaded machine: the figures behind the
//! defaults of `raft.max_append_bytes` and `raft.heartbeat_interval` (README, "Running a
//! fleet").
//!
//! For each budget, three release-build nodes start with that `raft.max_append_bytes`.
//! A follower is paused while sessions with a 16 KiB `clientInfo` commit through the
//! other two, then resumed: the leader sends it the backlog in budget-sized appends. Each
//! append's round trip (send, decode, append and fsync on the follower, answer) is read
//! from the leader's debug log; those carrying at least 3/4 of the budget are reported.
//! "Loaded" adds one CPU spinner per core and a writer that fsyncs 4 MiB at a time to
//! whatever else runs on the machine ("as is"); the last column is the load average.
//!
//! `cargo bench --bench append` runs it in full (`APPEND_BENCH_BUDGETS=512,1024` for
//! only those budgets, in KiB). Without `--bench` (as `cargo test --benches` runs it) it
//! does a short smoke pass.

#[allow(dead_code)]
#[path = "../tests/cluster/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/cluster/harness.rs"]
mod harness;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use client::Session;
use harness::{Cluster, READY_DEADLINE};

const KIB: usize = 1024;
/// `clientInfo` of each session: the largest a caller can store.
const CLIENT_INFO_BYTES: usize = 16 * KIB - 256;
/// Threads creating sessions.
const THREADS: usize = 16;

struct Plan {
    budgets: Vec<usize>,
    /// Backlog per round, in budgets.
    backlog_budgets: usize,
    rounds: usize,
    loaded: &'static [bool],
}

fn full_plan() -> Plan {
    Plan {
        budgets: vec![256 * KIB, 512 * KIB, 1024 * KIB, 2048 * KIB],
        backlog_budgets: 24,
        rounds: 3,
        loaded: &[false, true],
    }
}

fn smoke_plan() -> Plan {
    Plan {
        budgets: vec![256 * KIB],
        backlog_budgets: 2,
        rounds: 1,
        loaded: &[false],
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let mut plan = if full { full_plan() } else { smoke_plan() };
    // APPEND_BENCH_BUDGETS=512,1024 (KiB) measures only those.
    if let Ok(list) = std::env::var("APPEND_BENCH_BUDGETS") {
        plan.budgets = list
            .split(',')
            .filter_map(|kib| kib.trim().parse::<usize>().ok())
            .map(|kib| kib * KIB)
            .collect();
    }
    if !full {
        println!("append: smoke run (pass --bench, as `cargo bench` does, for the full run)");
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let heartbeat = mcp_fleet::internals::raft::Config::default().heartbeat_interval;
    println!(
        "append: {cores} cores; heartbeat_interval {heartbeat:?}, so {:?} per append",
        heartbeat * 3 / 4
    );
    println!(
        "{:<7} {:>7} | {:>7} {:>6} {:>6} {:>6} {:>6} | {:>7} {:>6} {:>6} {:>6} | {:>8} {:>7}",
        "load",
        "budget",
        "full",
        "p50",
        "p90",
        "p99",
        "max",
        "single",
        "p50",
        "p99",
        "max",
        "timeouts",
        "loadavg"
    );
    for &loaded in plan.loaded {
        let load = loaded.then(|| Load::start(cores));
        for &budget in &plan.budgets {
            let mut figures = measure(budget, &plan);
            figures.full.sort_by(f64::total_cmp);
            figures.single.sort_by(f64::total_cmp);
            let pct = |v: &[f64], p: usize| {
                v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
                    .map_or("-".to_owned(), |v| format!("{v:.1}"))
            };
            let (full, single) = (&figures.full, &figures.single);
            println!(
                "{:<7} {:>5}Ki | {:>7} {:>6} {:>6} {:>6} {:>6} | {:>7} {:>6} {:>6} {:>6} | {:>8} {:>7}",
                if loaded { "loaded" } else { "as is" },
                budget / KIB,
                full.len(),
                pct(full, 50),
                pct(full, 90),
                pct(full, 99),
                pct(full, 100),
                single.len(),
                pct(single, 50),
                pct(single, 99),
                pct(single, 100),
                figures.timeouts,
                loadavg()
            );
        }
        drop(load);
    }
    println!(
        "full: appends carrying at least 3/4 of the budget to the follower catching up; \
         single: appends of one entry (about 16 KiB) to either follower; times in ms, \
         leader to follower and back (send, decode, append, fsync); timeouts: multi-entry \
         appends that timed out while the follower caught up"
    );
}

/// What one budget measured.
struct Figures {
    /// Round trips, in ms, of appends to the resumed follower carrying at least 3/4 of the
    /// budget.
    full: Vec<f64>,
    /// Round trips, in ms, of single-entry appends to either follower.
    single: Vec<f64>,
    /// Multi-entry appends that timed out while the follower caught up.
    timeouts: u64,
}

/// Appends measured with `budget`.
fn measure(budget: usize, plan: &Plan) -> Figures {
    let entry_cap = (256 * KIB).min(budget - 2 * KIB);
    let mut cluster = Cluster::builder()
        .env("MCP_FLEET_RAFT__MAX_APPEND_BYTES", &budget.to_string())
        .env("MCP_FLEET_RAFT__MAX_ENTRY_BYTES", &entry_cap.to_string())
        // Snapshots of a store this size stall every node for a while (issue 9, seen 9)
        // and are not what this measures.
        .env("MCP_FLEET_RAFT__SNAPSHOT_AFTER", "1000000")
        .env("MCP_FLEET_LOG__FORMAT", "json")
        .env(
            "MCP_FLEET_LOG__FILTER",
            "info,openraft=error,mcp_fleet::raft::network=debug",
        )
        .start(3);
    let leader = cluster.leader();
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let url = cluster.node(leader).mcp_url();
    let sessions = plan.backlog_budgets * budget / (CLIENT_INFO_BYTES + 512);
    // Timeouts while the follower is paused are expected; count those of the catch-up.
    let mut timeouts = 0;
    for _ in 0..plan.rounds {
        cluster.pause(follower);
        create(&url, sessions);
        let before = timeouts_of(&cluster, leader);
        cluster.resume(follower);
        let last = cluster.status(leader)["last_log_index"]
            .as_u64()
            .expect("an index");
        cluster.wait_applied(last);
        timeouts += timeouts_of(&cluster, leader) - before;
    }
    let log = cluster.node(leader).log_tail(usize::MAX);
    if std::env::var_os("APPEND_BENCH_VERBOSE").is_some() {
        // Every append to the follower: entries, bytes and round trip, in order.
        for line in log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            if line["peer"] == follower {
                eprintln!(
                    "{} {} entries={} bytes={} ms={} hint={}",
                    line["timestamp"],
                    line["message"],
                    line["entries"],
                    line["bytes"],
                    line["ms"],
                    line["hint"]
                );
            }
        }
    }
    let sent: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "append sent")
        .collect();
    let ms = |line: &Value| line["ms"].as_f64();
    let full = sent
        .iter()
        .filter(|line| line["peer"] == follower)
        .filter(|line| {
            line["bytes"]
                .as_u64()
                .is_some_and(|b| b as usize * 4 >= budget * 3)
        })
        .filter_map(ms)
        .collect();
    let single = sent
        .iter()
        .filter(|line| line["entries"] == 1)
        .filter_map(ms)
        .collect();
    Figures {
        full,
        single,
        timeouts,
    }
}

/// The machine's one-minute load average: other work shares it too.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

/// Multi-entry appends from `leader` that timed out so far.
fn timeouts_of(cluster: &Cluster, leader: u64) -> u64 {
    let page = cluster.try_metrics(leader).unwrap_or_default();
    page.lines()
        .find_map(|l| {
            l.strip_prefix("mcp_fleet_raft_append_splits_total{reason=\"timeout\"}")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0) as u64
}

/// Creates `count` sessions through `url` from [`THREADS`] threads.
fn create(url: &str, count: usize) {
    let next = AtomicUsize::new(0);
    let info = json!({ "name": "append-bench", "version": "1", "description": "d".repeat(CLIENT_INFO_BYTES) });
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let deadline = std::time::Instant::now() + READY_DEADLINE;
                    while Session::open_described(url, info.clone(), None, json!({}))
                        .map_or(true, |r| r.status != 200)
                    {
                        assert!(std::time::Instant::now() < deadline, "no session in time");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
    });
}

/// CPU spinners, one per core, and a writer that fsyncs 4 MiB at a time, until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Load {
    fn start(cores: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut threads: Vec<_> = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..100_000u64 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        let path = dir.path().join("load");
        let writer_stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let chunk = vec![0x5a; 4 * 1024 * 1024];
            while !writer_stop.load(Ordering::Relaxed) {
                let mut file = std::fs::File::create(&path).expect("the load file");
                file.write_all(&chunk).expect("write");
                file.sync_all().expect("fsync");
            }
        }));
        Self {
            stop,
            threads,
            _dir: dir,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
