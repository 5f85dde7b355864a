//! A rolling restart, as an operator does it: each node in turn is stopped gracefully
//! (SIGTERM), started again on its data directory and waited for (ready, and back in
//! HAProxy's rotation) before the next. Clients working through the balancer all along
//! see nothing but 503s that succeed on retry, and every session survives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::client::Session;
use crate::fleet::Fleet;
use crate::harness::READY_DEADLINE;
use crate::load::Load;

/// Client threads that create sessions.
const WRITERS: usize = 2;
/// Client threads that only read.
const READERS: usize = 2;
/// Sessions made before the first restart.
const SESSIONS_BEFORE: usize = 20;
/// Operations that must succeed while each node is back, before the next goes down.
const OPS_BETWEEN: usize = 100;

#[test]
fn rolling_restart_keeps_clients_working_and_sessions_alive() {
    let Some(mut fleet) = Fleet::builder().start(3) else {
        return;
    };
    let token = |c: usize| fleet.token(&format!("rolling-{c}"));
    let writers: Vec<String> = (0..WRITERS).map(token).collect();
    let readers: Vec<String> = (WRITERS..WRITERS + READERS).map(token).collect();
    let load = Load::start(&fleet.url(), &writers, &readers);
    fleet.eventually("sessions before the restarts", READY_DEADLINE, || {
        (load.sessions().len() >= SESSIONS_BEFORE).then_some(())
    });

    let started = Instant::now();
    let mut downtime: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut stops: Vec<(u64, Instant)> = Vec::new();
    for id in fleet.cluster.ids() {
        let down = Instant::now();
        stops.push((id, down));
        fleet.cluster.stop(id);
        fleet.cluster.restart(id);
        fleet.cluster.wait_ready(id);
        fleet.wait_lb(id, true);
        downtime.insert(id, down.elapsed());
        // The fleet agrees on a leader and has served clients with this node back before
        // the next one goes.
        fleet.cluster.leader();
        let back = Instant::now();
        fleet.eventually(
            &format!("clients to be served after node {id} came back"),
            READY_DEADLINE,
            || (load.successes_since(back) >= OPS_BETWEEN).then_some(()),
        );
    }
    let took = started.elapsed();
    let report = load.finish();
    let outcomes = report.outcomes();
    eprintln!(
        "rolling restart: 3 nodes in {took:?} (down, restarted and back in rotation: \
         {downtime:?}); {} requests, by outcome {outcomes:?}; {} operations, {} failed; {} \
         sessions",
        report.requests(),
        report.ops.len(),
        report.failed().len(),
        report.sessions.len()
    );

    // Only 503s, each followed by success on retry.
    let failures = report.failures();
    let described: Vec<String> = failures
        .iter()
        .map(|(op, attempt)| {
            // The last SIGTERM sent before the request, and how long before.
            let (id, at) = stops
                .iter()
                .rev()
                .find(|(_, at)| *at <= attempt.start)
                .copied()
                .unwrap_or((0, started));
            format!(
                "{:?} of client {} sent {:?} after SIGTERM to node {id}: {:?}",
                op.kind,
                op.client,
                attempt.start - at,
                attempt.outcome
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} requests failed other than with a 503 from a node: {described:#?}\n{}",
        failures.len(),
        fleet.logs()
    );
    let failed = report.failed();
    assert!(
        failed.is_empty(),
        "{} operations never succeeded, e.g. {:?}",
        failed.len(),
        failed.first()
    );

    // Every session made before or during the restarts is served by every node.
    let leader = fleet.cluster.leader();
    let last = fleet.cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");
    fleet.cluster.wait_applied(last);
    for id in fleet.cluster.ids() {
        let url = fleet.cluster.node(id).mcp_url();
        let lost: Vec<&Session> = report
            .sessions
            .iter()
            .map(|(s, _)| s)
            .filter(|s| s.echo(&url, "after").is_err())
            .collect();
        assert!(
            lost.is_empty(),
            "node {id} does not serve {} of {} sessions, e.g. {:?}",
            lost.len(),
            report.sessions.len(),
            lost.first()
        );
    }
}
