//! A history check: client threads create, read and delete sessions through every node
//! and through the balancer while nodes are killed and restarted; every operation is
//! recorded with when it was sent and answered. A checker then verifies, in real time:
//! no acknowledged create is lost (each session is readable unless its own delete was
//! acknowledged) and no read sent after a delete was acknowledged returns the session, on
//! any node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::Session;
use crate::fleet::Fleet;
use crate::harness::{random_hex, READY_DEADLINE};

/// Client threads, each its own user.
const CLIENTS: usize = 4;
/// Successful operations between two faults, so each phase sees real traffic.
const OPS_PER_PHASE: usize = 200;
/// The test's time budget for the faults; the clients stop once the rounds are done.
const BUDGET: Duration = Duration::from_secs(20);

/// Where a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Balancer,
    Node(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Create,
    Read,
    Delete,
}

/// What came back, by what it says about the session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Result {
    /// 200 from `initialize` with a session id, or `echo` answered: the session exists.
    Exists,
    /// 204 from DELETE: the delete is acknowledged.
    Deleted,
    /// 404: the session does not exist (for this node, right now).
    NotFound,
    /// Anything else: says nothing about the session.
    Other(String),
}

#[derive(Debug, Clone)]
struct Op {
    client: usize,
    kind: Kind,
    session: Option<String>,
    target: Target,
    start: Instant,
    end: Instant,
    result: Result,
}

/// A session some client created, and whether a delete of it was sent.
struct Known {
    session: Session,
    delete_sent: bool,
}

#[derive(Default)]
struct Shared {
    ops: Mutex<Vec<Op>>,
    known: Mutex<Vec<Known>>,
    stop: AtomicBool,
}

impl Shared {
    fn successes(&self) -> usize {
        let ops = self.ops.lock().unwrap();
        ops.iter()
            .filter(|op| !matches!(op.result, Result::Other(_)))
            .count()
    }
}

/// A small random number generator, seeded from the OS.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self(u64::from_str_radix(&random_hex(8), 16).expect("hex") | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn classify(reply: std::result::Result<crate::client::Reply, ureq::Error>, ok: u16) -> Result {
    match reply {
        Ok(r) if r.status == ok => Result::Exists,
        Ok(r) if r.status == 404 => Result::NotFound,
        Ok(r) => Result::Other(format!(
            "{} {}",
            r.status,
            r.body.chars().take(120).collect::<String>()
        )),
        Err(e) => Result::Other(format!("transport: {e}")),
    }
}

fn client(id: usize, token: String, targets: Vec<(Target, String)>, shared: Arc<Shared>) {
    let mut rng = Rng::new();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let (target, url) = targets[rng.below(targets.len())].clone();
        let dice = rng.below(10);
        let start = Instant::now();
        let (kind, session, result) = if dice < 3 {
            let reply = Session::open_as(&url, "history", Some(&token));
            let made = reply
                .as_ref()
                .ok()
                .and_then(|r| r.session(Some(&token)).ok());
            let result = match (&made, reply) {
                (Some(_), _) => Result::Exists,
                (None, reply) => match classify(reply, 200) {
                    Result::Exists => Result::Other("200 without a session id".into()),
                    other => other,
                },
            };
            if let Some(session) = &made {
                shared.known.lock().unwrap().push(Known {
                    session: session.clone(),
                    delete_sent: false,
                });
            }
            (Kind::Create, made.map(|s| s.id), result)
        } else if dice < 8 {
            let Some(session) = pick(&shared, &mut rng, false) else {
                continue;
            };
            n += 1;
            let text = format!("h{id}-{n}");
            let result = match session.echo_reply(&url, &text) {
                Ok(r) if r.status == 200 => {
                    let echoed = r.message().and_then(|m| {
                        m["result"]["content"][0]["text"]
                            .as_str()
                            .map(str::to_owned)
                    });
                    if echoed.as_deref() == Some(text.as_str()) {
                        Result::Exists
                    } else {
                        Result::Other(format!("200 {}", r.body))
                    }
                }
                other => classify(other, 200),
            };
            (Kind::Read, Some(session.id), result)
        } else {
            let Some(session) = pick(&shared, &mut rng, true) else {
                continue;
            };
            let result = match classify(session.delete(&url), 204) {
                Result::Exists => Result::Deleted,
                other => other,
            };
            (Kind::Delete, Some(session.id), result)
        };
        shared.ops.lock().unwrap().push(Op {
            client: id,
            kind,
            session,
            target,
            start,
            end: Instant::now(),
            result,
        });
    }
}

/// A random known session; for a delete, one no delete was sent for yet (and marks it).
fn pick(shared: &Shared, rng: &mut Rng, for_delete: bool) -> Option<Session> {
    let mut known = shared.known.lock().unwrap();
    let candidates: Vec<usize> = (0..known.len())
        .filter(|&i| !for_delete || !known[i].delete_sent)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let i = candidates[rng.below(candidates.len())];
    if for_delete {
        known[i].delete_sent = true;
    }
    Some(known[i].session.clone())
}

/// Real-time violations in `ops`: reads that missed an acknowledged session, reads that
/// found one whose delete had been acknowledged. Returns descriptions.
fn check(ops: &[Op], t0: Instant) -> (Vec<String>, Vec<String>) {
    let mut by_session: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let Some(id) = &op.session {
            by_session.entry(id).or_default().push(op);
        }
    }
    let mut missed = Vec::new();
    let mut stale = Vec::new();
    for (id, ops) in &by_session {
        let created = ops
            .iter()
            .find(|op| op.kind == Kind::Create && op.result == Result::Exists)
            .map(|op| op.end);
        let delete = ops
            .iter()
            .filter(|op| op.kind == Kind::Delete && op.result == Result::Deleted)
            .min_by_key(|op| op.end);
        let deleted = delete.map(|op| op.end);
        let delete_sent = ops
            .iter()
            .filter(|op| op.kind == Kind::Delete)
            .map(|op| op.start)
            .min();
        for read in ops.iter().filter(|op| op.kind == Kind::Read) {
            match read.result {
                Result::Exists if deleted.is_some_and(|d| read.start > d) => {
                    let delete = delete.expect("deleted");
                    stale.push(format!(
                        "session {id}: deleted via {:?} (acknowledged at +{:?}), then found by \
                         client {}'s read via {:?} sent at +{:?}, {:?} later",
                        delete.target,
                        delete.end - t0,
                        read.client,
                        read.target,
                        read.start - t0,
                        read.start - delete.end
                    ))
                }
                Result::NotFound
                    if created.is_some_and(|c| read.start > c)
                        && delete_sent.is_none_or(|d| d > read.end) =>
                {
                    missed.push(format!(
                        "session {id}: created (acknowledged at +{:?}), then not found by \
                         client {}'s read via {:?} sent at +{:?}, with no delete sent",
                        created.expect("created") - t0,
                        read.client,
                        read.target,
                        read.start - t0,
                    ))
                }
                _ => {}
            }
        }
    }
    (missed, stale)
}

#[test]
fn history_of_creates_reads_and_deletes_through_faults_is_linearizable() {
    let Some(mut fleet) = Fleet::builder().start(3) else {
        return;
    };
    let mut targets = vec![(Target::Balancer, fleet.url())];
    for id in fleet.cluster.ids() {
        targets.push((Target::Node(id), fleet.cluster.node(id).mcp_url()));
    }
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (token, targets, shared) = (
                fleet.token(&format!("history-{c}")),
                targets.clone(),
                shared.clone(),
            );
            std::thread::spawn(move || client(c, token, targets, shared))
        })
        .collect();

    // Faults: kill the leader, then a follower, then the leader again; each comes back
    // before the next, after the others served a phase's worth of operations.
    let mut faults = Vec::new();
    for round in 0..3 {
        let base = shared.successes();
        fleet.eventually("operations before the fault", READY_DEADLINE, || {
            (shared.successes() >= base + OPS_PER_PHASE).then_some(())
        });
        if started.elapsed() > BUDGET {
            break;
        }
        let leader = fleet.cluster.leader();
        let victim = if round % 2 == 0 {
            leader
        } else {
            *fleet
                .cluster
                .live()
                .iter()
                .find(|&&id| id != leader)
                .expect("a follower")
        };
        let killed = started.elapsed();
        fleet.cluster.kill(victim);
        let base = shared.successes();
        fleet.eventually(
            &format!("operations with node {victim} down"),
            READY_DEADLINE,
            || (shared.successes() >= base + OPS_PER_PHASE).then_some(()),
        );
        let restarted = started.elapsed();
        fleet.cluster.restart(victim);
        fleet.cluster.wait_ready(victim);
        let ready = started.elapsed();
        fleet.wait_lb(victim, true);
        faults.push(format!(
            "node {victim} (leader {leader}) killed at +{killed:?}, restarted at \
             +{restarted:?}, ready at +{ready:?}"
        ));
    }
    let base = shared.successes();
    fleet.eventually("operations after the faults", READY_DEADLINE, || {
        (shared.successes() >= base + OPS_PER_PHASE).then_some(())
    });
    shared.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("a history client panicked");
    }
    let ops = std::mem::take(&mut *shared.ops.lock().unwrap());

    // The final state, on every node: what was acknowledged as created and not deleted
    // is there; what was acknowledged as deleted is not.
    let leader = fleet.cluster.leader();
    let last = fleet.cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");
    fleet.cluster.wait_applied(last);
    let known: Vec<Session> = shared
        .known
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.session.clone())
        .collect();
    let mut lost = Vec::new();
    let mut resurrected = Vec::new();
    let mut certain = 0;
    for session in &known {
        let mine = ops
            .iter()
            .filter(|op| op.session.as_deref() == Some(&session.id));
        let deletes: Vec<&Op> = mine.filter(|op| op.kind == Kind::Delete).collect();
        let expect_exists = match deletes.first() {
            None => true,
            Some(op) if op.result == Result::Deleted => false,
            // A delete with no answer may or may not have happened.
            Some(_) => continue,
        };
        certain += 1;
        for id in fleet.cluster.ids() {
            let url = fleet.cluster.node(id).mcp_url();
            let status = session.echo_reply(&url, "final").map_or(0, |r| r.status);
            match (expect_exists, status) {
                (true, 200) | (false, 404) => {}
                (true, _) => lost.push(format!("{} on node {id}: {status}", session.id)),
                (false, _) => resurrected.push(format!("{} on node {id}: {status}", session.id)),
            }
        }
    }

    let (missed, stale) = check(&ops, started);
    let mut counts: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for op in &ops {
        let result = match &op.result {
            Result::Other(text) => text.split(' ').next().unwrap_or("").to_owned(),
            other => format!("{other:?}"),
        };
        *counts.entry((op.kind, result)).or_default() += 1;
    }
    eprintln!(
        "history: {} operations by {CLIENTS} clients in {:?}; faults: {faults:?}; by kind and result {counts:?}; {} sessions created, {certain} \
         with a known fate checked on every node: {} lost, {} back after delete; real time: {} \
         reads missed an acknowledged session, {} reads found a deleted one",
        ops.len(),
        started.elapsed(),
        known.len(),
        lost.len(),
        resurrected.len(),
        missed.len(),
        stale.len()
    );
    let unauthorized = ops
        .iter()
        .filter(|op| matches!(&op.result, Result::Other(t) if t.starts_with("401")))
        .count();
    assert_eq!(unauthorized, 0, "requests refused with 401");
    assert!(lost.is_empty(), "acknowledged sessions lost: {lost:?}");
    assert!(
        resurrected.is_empty(),
        "deleted sessions back: {resurrected:?}"
    );
    assert!(
        missed.is_empty(),
        "reads missed acknowledged sessions: {missed:#?}"
    );
    assert!(stale.is_empty(), "reads found deleted sessions: {stale:#?}");
}
