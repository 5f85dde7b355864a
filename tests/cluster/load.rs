//! Clients that keep a fleet busy through the load balancer while a test breaks it, and
//! record every request they made and what came back.
//!
//! A writer thread loops over three operations: create a legacy session (a Raft write),
//! call `echo` on one of its sessions (a replica read), and a stateless 2026-07-28
//! `whoami` (authentication only). A reader creates one session and then loops over the
//! other two, so reads go on while writes wait for a leader. Like a well-behaved client, an operation is
//! retried when the answer says "try again" (503, a 502/504 from the balancer, a broken
//! connection) and given up after a 401, a 404 or any other refusal, or after
//! [`OP_DEADLINE`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{modern_call, Reply, Session};
use crate::harness::random_hex;

/// How long one operation is retried before the client gives up on it.
pub const OP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between retries of one operation.
const BACKOFF: Duration = Duration::from_millis(50);

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `initialize`: creates a session.
    Create,
    /// `echo` on a session this client created.
    Echo,
    /// A stateless `whoami`.
    Modern,
}

/// What one HTTP request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The expected answer.
    Ok,
    /// Another status; `server` when the body is the node's JSON rather than a page the
    /// balancer wrote.
    Status { status: u16, server: bool },
    /// A 200 whose body is not the expected answer.
    Wrong(String),
    /// No HTTP answer at all.
    Transport(String),
}

impl Outcome {
    fn of(reply: Result<Reply, ureq::Error>, check: impl FnOnce(&Reply) -> bool) -> Self {
        match reply {
            Err(e) => Outcome::Transport(e.to_string()),
            Ok(r) if r.status == 200 && check(&r) => Outcome::Ok,
            Ok(r) if r.status == 200 => Outcome::Wrong(format!("{r:?}")),
            Ok(r) => Outcome::Status {
                status: r.status,
                server: r.is_json(),
            },
        }
    }

    /// Whether a client should try again.
    pub fn retryable(&self) -> bool {
        match self {
            Outcome::Status { status, .. } => matches!(status, 502..=504),
            Outcome::Transport(_) => true,
            Outcome::Ok | Outcome::Wrong(_) => false,
        }
    }

    /// A short label for counting: `ok`, `503 (node)`, `502 (haproxy)`, `transport`, …
    pub fn label(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Status { status, server } => {
                let by = if *server { "node" } else { "haproxy" };
                format!("{status} ({by})")
            }
            Outcome::Wrong(_) => "wrong answer".to_owned(),
            Outcome::Transport(_) => "transport error".to_owned(),
        }
    }
}

/// One HTTP request of an operation.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

/// One operation and every request it took.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub kind: Kind,
    pub attempts: Vec<Attempt>,
}

impl Op {
    /// Whether the last request got the expected answer.
    pub fn succeeded(&self) -> bool {
        self.attempts
            .last()
            .is_some_and(|a| a.outcome == Outcome::Ok)
    }
}

/// What the clients share with the test.
#[derive(Default)]
struct Shared {
    ops: Mutex<Vec<Op>>,
    /// Sessions whose `initialize` was answered, with the instant it was.
    sessions: Mutex<Vec<(Session, Instant)>>,
    stop: AtomicBool,
}

/// Client threads running against one URL until [`Load::finish`].
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts a writer thread per token in `writers` and a reader thread per token in
    /// `readers`, all against `url`. Clients are numbered writers first.
    pub fn start(url: &str, writers: &[String], readers: &[String]) -> Self {
        let shared = Arc::new(Shared::default());
        let roles = writers
            .iter()
            .map(|t| (true, t))
            .chain(readers.iter().map(|t| (false, t)));
        let threads = roles
            .enumerate()
            .map(|(client, (writer, token))| {
                let (url, token, shared) = (url.to_owned(), token.clone(), shared.clone());
                std::thread::spawn(move || run_client(client, writer, &url, &token, &shared))
            })
            .collect();
        Self { shared, threads }
    }

    /// Every session created so far, with the instant `initialize` was answered.
    pub fn sessions(&self) -> Vec<(Session, Instant)> {
        self.shared.sessions.lock().unwrap().clone()
    }

    /// How many sessions were created by a request sent at or after `since`.
    pub fn creates_since(&self, since: Instant) -> usize {
        self.shared
            .ops
            .lock()
            .unwrap()
            .iter()
            .filter(|op| op.kind == Kind::Create)
            .filter_map(|op| op.attempts.last())
            .filter(|a| a.outcome == Outcome::Ok && a.start >= since)
            .count()
    }

    /// How many operations succeeded with a request sent at or after `since`.
    pub fn successes_since(&self, since: Instant) -> usize {
        self.shared
            .ops
            .lock()
            .unwrap()
            .iter()
            .filter_map(|op| op.attempts.last())
            .filter(|a| a.outcome == Outcome::Ok && a.start >= since)
            .count()
    }

    /// Stops the clients (each finishes the operation it is in) and returns the record.
    pub fn finish(self) -> Report {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a load client panicked");
        }
        let ops = std::mem::take(&mut *self.shared.ops.lock().unwrap());
        let sessions = std::mem::take(&mut *self.shared.sessions.lock().unwrap());
        Report { ops, sessions }
    }
}

/// A small random number generator: good enough to pick a session.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = u64::from_str_radix(&random_hex(8), 16).expect("hex");
        Self(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn run_client(client: usize, writer: bool, url: &str, token: &str, shared: &Shared) {
    let mut rng = Rng::new();
    let mut mine: Vec<Session> = Vec::new();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        // A reader makes one session, then only uses it.
        if writer || mine.is_empty() {
            create(client, url, token, shared, &mut mine);
        }

        if !mine.is_empty() {
            let session = &mine[rng.below(mine.len())];
            n += 1;
            let text = format!("c{client}-{n}");
            let op = attempt(client, Kind::Echo, || {
                Outcome::of(session.echo_reply(url, &text), |r| {
                    r.message()
                        .and_then(|m| {
                            m["result"]["content"][0]["text"]
                                .as_str()
                                .map(str::to_owned)
                        })
                        .is_some_and(|t| t == text)
                })
            });
            shared.ops.lock().unwrap().push(op);
        }

        let op = attempt(client, Kind::Modern, || {
            Outcome::of(modern_call(url, Some(token), "whoami", json!({})), |r| {
                r.message()
                    .is_some_and(|m| m["result"]["structuredContent"]["subject"].is_string())
            })
        });
        shared.ops.lock().unwrap().push(op);
    }
}

/// Creates a session for `mine`, recording the operation.
fn create(client: usize, url: &str, token: &str, shared: &Shared, mine: &mut Vec<Session>) {
    let mut created = None;
    let op = attempt(client, Kind::Create, || {
        let reply = Session::open_as(url, "load", Some(token));
        if let Ok(r) = &reply {
            created = r.session(Some(token)).ok();
        }
        Outcome::of(reply, |r| r.session(None).is_ok())
    });
    if let (true, Some(session)) = (op.succeeded(), created) {
        let acked = op.attempts.last().expect("an attempt").end;
        shared
            .sessions
            .lock()
            .unwrap()
            .push((session.clone(), acked));
        mine.push(session);
    }
    shared.ops.lock().unwrap().push(op);
}

/// Runs `request` until it gets an answer that is not worth retrying, or for
/// [`OP_DEADLINE`].
fn attempt(client: usize, kind: Kind, mut request: impl FnMut() -> Outcome) -> Op {
    let first = Instant::now();
    let mut attempts = Vec::new();
    loop {
        let start = Instant::now();
        let outcome = request();
        let retry = outcome.retryable();
        attempts.push(Attempt {
            start,
            end: Instant::now(),
            outcome,
        });
        if !retry || first.elapsed() >= OP_DEADLINE {
            return Op {
                client,
                kind,
                attempts,
            };
        }
        std::thread::sleep(BACKOFF);
    }
}

/// What the clients did, for the test to judge.
pub struct Report {
    pub ops: Vec<Op>,
    /// Every session created, with the instant `initialize` was answered.
    pub sessions: Vec<(Session, Instant)>,
}

impl Report {
    /// Every request, counted by [`Outcome::label`].
    pub fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for attempt in self.ops.iter().flat_map(|op| &op.attempts) {
            *counts.entry(attempt.outcome.label()).or_default() += 1;
        }
        counts
    }

    /// How many HTTP requests the clients sent.
    pub fn requests(&self) -> usize {
        self.ops.iter().map(|op| op.attempts.len()).sum()
    }

    /// The operations that did not end with the expected answer.
    pub fn failed(&self) -> Vec<&Op> {
        self.ops.iter().filter(|op| !op.succeeded()).collect()
    }

    /// Requests answered with `status`, by the node or the balancer.
    pub fn with_status(&self, status: u16) -> usize {
        self.ops
            .iter()
            .flat_map(|op| &op.attempts)
            .filter(|a| matches!(a.outcome, Outcome::Status { status: s, .. } if s == status))
            .count()
    }

    /// Requests that failed other than with a 503 from a node: a cut connection, a 502
    /// or 504 from the balancer, any refusal.
    pub fn failures(&self) -> Vec<(&Op, &Attempt)> {
        self.ops
            .iter()
            .flat_map(|op| op.attempts.iter().map(move |a| (op, a)))
            .filter(|(_, a)| {
                !matches!(
                    a.outcome,
                    Outcome::Ok
                        | Outcome::Status {
                            status: 503,
                            server: true
                        }
                )
            })
            .collect()
    }

    /// When the first session created by a request sent at or after `since` was
    /// acknowledged.
    pub fn first_create_after(&self, since: Instant) -> Option<Instant> {
        self.ops
            .iter()
            .filter(|op| op.kind == Kind::Create)
            .flat_map(|op| &op.attempts)
            .filter(|a| a.outcome == Outcome::Ok && a.start >= since)
            .map(|a| a.end)
            .min()
    }

    /// Successful requests that were answered between `from` and `to`.
    pub fn served_between(&self, from: Instant, to: Instant) -> usize {
        self.ops
            .iter()
            .flat_map(|op| &op.attempts)
            .filter(|a| a.outcome == Outcome::Ok && a.end >= from && a.end <= to)
            .count()
    }
}
