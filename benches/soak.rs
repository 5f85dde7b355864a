//! Soak: an abuse mix beside well-behaved clients, through a real HAProxy, against three
//! real `mcp-fleet serve` nodes on 127.0.0.1, for a bounded time.
//!
//! `scripts/soak` (or `cargo bench --bench soak`) runs it for 60 s against the release
//! binary; `SOAK_SECONDS` changes that (at most 100, so a run stays under two minutes).
//! Without `--bench` (as `cargo test --benches` runs it) it does a 5 s smoke pass.
//!
//! The abuse, each on its own thread(s), all through the balancer:
//! - `initialize` with a ~3.9 MB `clientInfo` (under the 4 MiB body limit);
//! - one token creating legacy sessions until its cap, then going on trying;
//! - `subscriptions/listen` floods: streams held open up to the cap and past it, and
//!   URI lists over the cap;
//! - slow bodies: POSTs whose body trickles a byte every two seconds;
//! - random bearers: opaque strings and JWT-shaped tokens with unknown key ids;
//! - malformed JSON and JSON-RPC.
//!
//! Beside them, well-behaved clients (their own tokens) create legacy sessions, call tools
//! on them and make 2026-07-28 calls. It prints each node's peak RSS (`VmHWM`) and
//! data-directory size, the well-behaved clients' success rate and latency percentiles,
//! what each abuser got back, and whether every node is still the process it started as.
//! It exits non-zero when a goal is missed: well-behaved success 100%, peak RSS under
//! 200 MB per node, no node restarted.

#[allow(dead_code)]
#[path = "../tests/cluster/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/support/examples.rs"]
mod examples;
#[allow(dead_code)]
#[path = "../tests/cluster/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "../tests/cluster/harness.rs"]
mod harness;
// Benches build with `cfg(test)`, which brings in the issuer's own tests' imports.
#[allow(unused_imports)]
#[path = "../tests/support/issuer.rs"]
mod issuer;
#[allow(dead_code)]
#[path = "../tests/cluster/lb.rs"]
mod lb;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use client::Session;
use fleet::Fleet;

/// Goal: peak RSS of every node, in MB.
const RSS_GOAL_MB: f64 = 200.0;
/// Longest run allowed, so that start, soak and report stay within two minutes.
const MAX_SECONDS: u64 = 100;
/// Well-behaved client threads.
const GOOD_CLIENTS: usize = 4;

/// Counts of what one kind of traffic got back, by HTTP status (0: no answer).
#[derive(Default)]
struct Tally(Mutex<BTreeMap<u16, u64>>);

impl Tally {
    fn add(&self, status: u16) {
        *self.0.lock().unwrap().entry(status).or_default() += 1;
    }

    fn line(&self) -> String {
        let map = self.0.lock().unwrap();
        if map.is_empty() {
            return "nothing sent".to_owned();
        }
        map.iter()
            .map(|(status, n)| match status {
                0 => format!("{n} × no answer"),
                s => format!("{n} × {s}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let seconds = if full {
        std::env::var("SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60)
            .min(MAX_SECONDS)
    } else {
        println!("soak: smoke run (pass --bench, as `cargo bench` does, for the full run)");
        5
    };
    let Some(fleet) = Fleet::builder().start(3) else {
        return;
    };
    let url = fleet.url();
    let pids: BTreeMap<u64, u32> = fleet
        .cluster
        .ids()
        .into_iter()
        .map(|id| (id, fleet.cluster.node(id).pid()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(seconds);
    println!("soak: {seconds} s through HAProxy at {url}, 3 nodes");

    let sampler = sample_data_dirs(&fleet, stop.clone());
    let abuse: Vec<(&str, Arc<Tally>)> = [
        "large initialize",
        "sessions past the cap",
        "listen streams",
        "listen, URIs over the cap",
        "slow bodies",
        "random bearers",
        "malformed",
    ]
    .into_iter()
    .map(|name| (name, Arc::new(Tally::default())))
    .collect();
    let tally = |name: &str| {
        abuse
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .expect("a known tally")
    };
    std::thread::scope(|scope| {
        let good: Vec<_> = (0..GOOD_CLIENTS)
            .map(|i| {
                let token = fleet.token(&format!("good-{i}"));
                let url = url.clone();
                scope.spawn(move || well_behaved(&url, &token, until))
            })
            .collect();
        let big = tally("large initialize");
        let token = fleet.token("big");
        let u = url.clone();
        scope.spawn(move || large_initialize(&u, &token, until, &big));
        let hog = tally("sessions past the cap");
        let token = fleet.token("hog");
        let u = url.clone();
        scope.spawn(move || session_hog(&u, &token, until, &hog));
        let streams = tally("listen streams");
        let wide = tally("listen, URIs over the cap");
        let token = fleet.token("listener");
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .parse()
            .expect("the balancer's address");
        scope.spawn(move || listen_flood(addr, &token, until, &streams, &wide));
        let slow = tally("slow bodies");
        let token = fleet.token("slow");
        scope.spawn(move || slow_bodies(addr, &token, until, &slow));
        let bearers = tally("random bearers");
        let u = url.clone();
        scope.spawn(move || random_bearers(&u, until, &bearers));
        let malformed = tally("malformed");
        let token = fleet.token("malformed");
        let u = url.clone();
        scope.spawn(move || malformed_bodies(&u, &token, until, &malformed));

        let mut latencies = Vec::new();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut failures = BTreeMap::<String, u64>::new();
        for handle in good {
            let report = handle.join().expect("a well-behaved client panicked");
            ok += report.ok;
            failed += report.failed;
            latencies.extend(report.latencies);
            for (why, n) in report.failures {
                *failures.entry(why).or_default() += n;
            }
        }
        stop.store(true, Ordering::Release);
        let dir_peaks = sampler.join().expect("the data-dir sampler panicked");
        report(
            &fleet, &pids, &dir_peaks, ok, failed, &failures, latencies, &abuse,
        );
    });
}

/// What one well-behaved client saw.
#[derive(Default)]
struct GoodReport {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    failures: BTreeMap<String, u64>,
}

impl GoodReport {
    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        self.latencies.push(started.elapsed());
        match outcome {
            Ok(()) => self.ok += 1,
            Err(why) => {
                self.failed += 1;
                *self.failures.entry(why).or_default() += 1;
            }
        }
    }
}

/// A client as a person's MCP client behaves: a legacy session (renewed every 50 calls),
/// tool calls on it, and 2026-07-28 calls between them.
fn well_behaved(url: &str, token: &str, until: Instant) -> GoodReport {
    let mut report = GoodReport::default();
    let mut session: Option<Session> = None;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let started = Instant::now();
        if session.is_none() || n % 50 == 0 {
            if let Some(old) = session.take() {
                let _ = old.delete(url);
            }
            let outcome = Session::create_as(url, "soak-good", token).map(|s| session = Some(s));
            report.record(started, outcome);
            continue;
        }
        let started = Instant::now();
        let outcome = if n % 2 == 0 {
            let text = format!("hello {n}");
            match session.as_ref().expect("a session").echo(url, &text) {
                Ok(echoed) if echoed == text => Ok(()),
                Ok(other) => Err(format!("echo returned {other:?}")),
                Err(e) => Err(first_words(&e)),
            }
        } else {
            match client::modern_call(url, Some(token), "echo", json!({ "text": "hi" })) {
                Ok(reply) if reply.status == 200 && reply.body.contains("\"hi\"") => Ok(()),
                Ok(reply) => Err(format!("modern call: HTTP {}", reply.status)),
                Err(e) => Err(format!("modern call: {}", first_words(&e.to_string()))),
            }
        };
        report.record(started, outcome);
    }
    if let Some(old) = session {
        let _ = old.delete(url);
    }
    report
}

fn first_words(text: &str) -> String {
    text.chars().take(80).collect()
}

fn status_of(result: Result<client::Reply, ureq::Error>) -> u16 {
    result.map_or(0, |reply| reply.status)
}

fn initialize_body(client_info: serde_json::Value) -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": client::VERSION,
            "capabilities": {},
            "clientInfo": client_info,
        },
    })
    .to_string()
}

/// `initialize` with a `clientInfo` of ~3.9 MB: under the body limit, over the session cap.
fn large_initialize(url: &str, token: &str, until: Instant, tally: &Tally) {
    let padding = "x".repeat(3_900_000);
    let body = initialize_body(json!({ "name": "big", "version": "1", "padding": padding }));
    let bearer = format!("Bearer {token}");
    while Instant::now() < until {
        tally.add(status_of(client::post(
            url,
            &[("authorization", &bearer)],
            &body,
        )));
    }
}

/// One token creating sessions as fast as it can, never ending them.
fn session_hog(url: &str, token: &str, until: Instant, tally: &Tally) {
    let body = initialize_body(json!({ "name": "hog", "version": "1" }));
    let bearer = format!("Bearer {token}");
    while Instant::now() < until {
        tally.add(status_of(client::post(
            url,
            &[("authorization", &bearer)],
            &body,
        )));
    }
}

/// Opens a connection to `addr` and writes the head of a POST to `/mcp` announcing
/// `length` bytes of body.
fn raw_head(addr: SocketAddr, headers: &[(&str, &str)], length: usize) -> Option<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let mut head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    Some(stream)
}

/// A raw HTTP/1.1 POST to `/mcp` on `addr`; returns the open socket after the request is
/// written.
fn raw_post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Option<TcpStream> {
    let mut stream = raw_head(addr, headers, body.len())?;
    stream.write_all(body).ok()?;
    Some(stream)
}

/// The status of the response on `stream`, read from its status line (0: none).
fn read_status(stream: &mut TcpStream, timeout: Duration) -> u16 {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") && got.len() < 64 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn listen_body(uris: &[String]) -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
        "params": {
            "notifications": { "resourceSubscriptions": uris },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": client::MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    })
    .to_string()
}

/// Opens `subscriptions/listen` streams and holds them, past the per-principal cap, and
/// sends listens whose URI lists are over the per-stream cap.
fn listen_flood(addr: SocketAddr, token: &str, until: Instant, streams: &Tally, wide: &Tally) {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("MCP-Protocol-Version", client::MODERN),
        ("Mcp-Method", "subscriptions/listen"),
    ];
    let few: Vec<String> = (0..8).map(|i| format!("test://soak/{i}")).collect();
    let many: Vec<String> = (0..100_000).map(|i| format!("test://soak/{i}")).collect();
    let (few, many) = (listen_body(&few), listen_body(&many));
    let mut held = Vec::new();
    while Instant::now() < until {
        // Only this many at a time per node: the rest is over the cap and refused.
        if held.len() < 200 {
            if let Some(mut stream) = raw_post(addr, &headers, few.as_bytes()) {
                let status = read_status(&mut stream, Duration::from_secs(5));
                streams.add(status);
                if status == 200 {
                    held.push(stream);
                }
            } else {
                streams.add(0);
            }
        }
        if let Some(mut stream) = raw_post(addr, &headers, many.as_bytes()) {
            wide.add(read_status(&mut stream, Duration::from_secs(5)));
        } else {
            wide.add(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// POSTs whose body trickles in a byte every two seconds, several at a time. What counts
/// is how each ends: answered (the status), or cut off without an answer (0).
fn slow_bodies(addr: SocketAddr, token: &str, until: Instant, tally: &Tally) {
    let bearer = format!("Bearer {token}");
    let body = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while Instant::now() < until {
                    let Some(mut stream) =
                        raw_head(addr, &[("Authorization", &bearer)], body.len())
                    else {
                        tally.add(0);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let mut status = None;
                    for byte in body {
                        if Instant::now() >= until || stream.write_all(&[*byte]).is_err() {
                            break;
                        }
                        // Whatever the server says (or a close) ends the trickle.
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut probe = [0u8; 1];
                        match stream.peek(&mut probe) {
                            Ok(0) => {
                                status = Some(0);
                                break;
                            }
                            Ok(_) => {
                                status = Some(read_status(&mut stream, Duration::from_secs(1)));
                                break;
                            }
                            Err(_) => {}
                        }
                    }
                    if let Some(status) = status {
                        tally.add(status);
                    }
                }
            });
        }
    });
}

/// Bearers no issuer ever issued: random opaque strings and JWT-shaped tokens naming key
/// ids the issuer does not publish.
fn random_bearers(url: &str, until: Instant, tally: &Tally) {
    let body = initialize_body(json!({ "name": "stranger", "version": "1" }));
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let token = if n % 2 == 0 {
            harness::random_hex(24)
        } else {
            let header = json!({ "alg": "RS256", "typ": "JWT", "kid": harness::random_hex(8) });
            issuer::forge::compact(&header, &json!({ "sub": "x" }), "c2ln")
        };
        let bearer = format!("Bearer {token}");
        tally.add(status_of(client::post(
            url,
            &[("authorization", &bearer)],
            &body,
        )));
    }
}

/// Bodies that are not JSON, or not JSON-RPC.
fn malformed_bodies(url: &str, token: &str, until: Instant, tally: &Tally) {
    let bearer = format!("Bearer {token}");
    let bodies = [
        "{",
        "[]",
        "null",
        "{\"jsonrpc\":\"2.0\"}",
        "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}",
        "\u{0}\u{1}\u{2}",
        &"[".repeat(100_000),
    ];
    let mut n = 0;
    while Instant::now() < until {
        let body = bodies[n % bodies.len()];
        n += 1;
        tally.add(status_of(client::post(
            url,
            &[("authorization", &bearer)],
            body,
        )));
    }
}

/// Samples each node's data-directory size every second; returns the peaks.
fn sample_data_dirs(
    fleet: &Fleet,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<u64, u64>> {
    let dirs: Vec<(u64, std::path::PathBuf)> = fleet
        .cluster
        .ids()
        .into_iter()
        .map(|id| (id, fleet.cluster.node(id).data_dir()))
        .collect();
    std::thread::spawn(move || {
        let mut peaks = BTreeMap::new();
        while !stop.load(Ordering::Acquire) {
            for (id, dir) in &dirs {
                let size = dir_size(dir);
                let peak = peaks.entry(*id).or_insert(0);
                *peak = (*peak).max(size);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        peaks
    })
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A `/proc/PID/status` field in kB.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit(") ").next().map(|s| !s.starts_with('Z')))
        .unwrap_or(false)
}

#[allow(clippy::too_many_arguments)]
fn report(
    fleet: &Fleet,
    pids: &BTreeMap<u64, u32>,
    dir_peaks: &BTreeMap<u64, u64>,
    ok: u64,
    failed: u64,
    failures: &BTreeMap<String, u64>,
    mut latencies: Vec<Duration>,
    abuse: &[(&str, Arc<Tally>)],
) {
    let mut missed = Vec::new();
    println!("\nnode  peak RSS   RSS now   data dir peak   data dir now   still the same process");
    for (id, pid) in pids {
        let peak = proc_status_kb(*pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
        let now = proc_status_kb(*pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
        let dir = dir_size(&fleet.cluster.node(*id).data_dir()) as f64 / 1e6;
        let dir_peak = dir_peaks.get(id).copied().unwrap_or(0) as f64 / 1e6;
        let same = alive(*pid) && fleet.cluster.node(*id).pid() == *pid;
        println!(
            "{id:>4}  {peak:>6.1} MB  {now:>6.1} MB  {dir_peak:>10.1} MB  {dir:>9.1} MB   {same}"
        );
        if peak >= RSS_GOAL_MB {
            missed.push(format!("node {id} peaked at {peak:.1} MB RSS"));
        }
        if !same {
            missed.push(format!("node {id} is not the process it started as"));
        }
    }
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let total = ok + failed;
    let rate = if total == 0 {
        0.0
    } else {
        ok as f64 * 100.0 / total as f64
    };
    println!(
        "\nwell-behaved: {total} requests from {GOOD_CLIENTS} clients, {rate:.2}% succeeded, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(50),
        pct(99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    for (why, n) in failures {
        println!("  failed {n} ×: {why}");
    }
    if failed > 0 || total == 0 {
        missed.push(format!("well-behaved success {rate:.2}%"));
    }
    println!("\nabuse (HTTP status counts):");
    for (name, tally) in abuse {
        println!("  {name:<26} {}", tally.line());
    }
    if missed.is_empty() {
        println!("\nsoak: every goal met (success 100%, peak RSS < {RSS_GOAL_MB} MB, no restart)");
    } else {
        println!("\nsoak: goals missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}
