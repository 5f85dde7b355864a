//! The leader is SIGKILLed while several clients keep working through the load balancer:
//! what reaches a survivor succeeds (a 503 while the survivors elect a leader is followed
//! by success on retry), nobody is asked to authenticate again, no session is lost, and
//! writes resume within a bound the test reports.

use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::harness::READY_DEADLINE;
use crate::load::Load;

/// Client threads that create sessions, each with its own user.
const WRITERS: usize = 3;
/// Client threads that only read (their one session, and stateless calls).
const READERS: usize = 3;
/// Sessions made before the kill.
const SESSIONS_BEFORE: usize = 40;
/// Sessions made by requests sent after the kill, before the clients stop.
const SESSIONS_AFTER: usize = 40;
/// The longest write outage the test accepts: election timeout (0.5–1 s), HAProxy's
/// health checks and the clients' backoff, with room for a loaded CI machine.
const WRITE_OUTAGE_BOUND: Duration = Duration::from_secs(10);

#[test]
fn leader_killed_under_load_through_the_balancer() {
    let Some(mut fleet) = Fleet::builder().start(3) else {
        return;
    };
    let token = |c: usize| fleet.token(&format!("load-{c}"));
    let writers: Vec<String> = (0..WRITERS).map(token).collect();
    let readers: Vec<String> = (WRITERS..WRITERS + READERS).map(token).collect();
    let load = Load::start(&fleet.url(), &writers, &readers);
    fleet.eventually(
        "sessions to be created before the kill",
        READY_DEADLINE,
        || (load.sessions().len() >= SESSIONS_BEFORE).then_some(()),
    );

    let leader = fleet.cluster.leader();
    let killed_at = Instant::now();
    fleet.cluster.kill(leader);
    // Until HAProxy's health checks notice, it may still hand requests to the dead node
    // (on a kept-alive connection it cannot retry elsewhere): those never reach a survivor.
    fleet.wait_lb(leader, false);
    let noticed = killed_at.elapsed();
    let before: Vec<_> = load
        .sessions()
        .into_iter()
        .filter(|(_, acked)| *acked < killed_at)
        .map(|(session, _)| session)
        .collect();
    fleet.eventually("writes to resume after the kill", READY_DEADLINE, || {
        (load.creates_since(killed_at) >= SESSIONS_AFTER).then_some(())
    });
    let report = load.finish();
    let new_leader = fleet.cluster.leader();

    let resumed = report
        .first_create_after(killed_at)
        .expect("writes resumed");
    let outage = resumed - killed_at;
    let outcomes = report.outcomes();
    let balancer: Vec<String> = fleet
        .lb()
        .stats()
        .unwrap_or_default()
        .iter()
        .map(|(id, s)| {
            format!(
                "node {id}: {} ({} refused connections, {} cut responses)",
                s.status, s.connect_errors, s.response_errors
            )
        })
        .collect();
    eprintln!("leader loss: haproxy's view after the kill: {balancer:?}");
    eprintln!(
        "leader loss: killed leader {leader}, new leader {new_leader}; haproxy saw it down \
         after {noticed:?}; writes unavailable for {outage:?} (kill to the first acknowledged \
         create sent after it); {} requests served during that window; {} requests in all, by \
         outcome {outcomes:?} ({} cut by the kill); {} operations, {} failed; {} sessions \
         acknowledged before the kill",
        report.served_between(killed_at, resumed),
        report.requests(),
        report.failures().len(),
        report.ops.len(),
        report.failed().len(),
        before.len(),
    );

    // Nobody is asked to log in again, and no session goes missing.
    assert_eq!(report.with_status(401), 0, "401s: {outcomes:?}");
    assert_eq!(report.with_status(404), 0, "404s: {outcomes:?}");
    // Once HAProxy sees the node down, every request reaches a survivor: it fails at most
    // with a 503 while there is no leader.
    let cut: Vec<_> = report
        .failures()
        .into_iter()
        .filter(|(_, a)| a.start >= killed_at + noticed)
        .collect();
    assert!(
        cut.is_empty(),
        "{} requests sent after the kill failed other than with a 503, e.g. {:?}",
        cut.len(),
        cut.first()
    );
    // Every operation ends in success: a 503 (election) or a request cut by the kill is
    // followed by success on retry.
    let failed = report.failed();
    assert!(
        failed.is_empty(),
        "{} operations never succeeded, e.g. {:?}\n{}",
        failed.len(),
        failed.first(),
        fleet.logs()
    );
    assert!(
        outage < WRITE_OUTAGE_BOUND,
        "writes were unavailable for {outage:?}"
    );

    // Every session acknowledged before the kill is valid on every survivor.
    for id in fleet.cluster.live() {
        let url = fleet.cluster.node(id).mcp_url();
        let lost: Vec<_> = before
            .iter()
            .filter(|s| s.echo(&url, "after the kill").is_err())
            .map(|s| s.id.clone())
            .collect();
        assert!(
            lost.is_empty(),
            "node {id} does not serve {} of {} sessions acknowledged before the kill: {lost:?}",
            lost.len(),
            before.len()
        );
    }
}
