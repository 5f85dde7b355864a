//! Losing the leader: the survivors elect another and keep serving old and new sessions;
//! the old leader comes back and serves what was made while it was down.

use crate::client::Session;
use crate::harness::{Cluster, READY_DEADLINE};

#[test]
fn survivors_serve_after_leader_is_killed() {
    let mut cluster = Cluster::start(3);
    let before: Vec<Session> = cluster
        .ids()
        .into_iter()
        .map(|id| Session::initialize(&cluster.node(id).mcp_url()))
        .collect();
    let old_leader = cluster.leader();
    cluster.kill(old_leader);
    let survivors = cluster.live();
    assert_eq!(survivors.len(), 2);

    // Requests may fail while the survivors elect a leader, but not for long.
    for &id in &survivors {
        let url = cluster.node(id).mcp_url();
        for session in &before {
            cluster.eventually(
                &format!("node {id} to serve session {} again", session.id),
                READY_DEADLINE,
                || session.echo(&url, "after").ok().filter(|t| t == "after"),
            );
        }
    }
    let new_leader = cluster.leader();
    assert!(
        survivors.contains(&new_leader),
        "leader {new_leader} is not a survivor"
    );

    // New sessions, through each survivor, are served by the other.
    let during: Vec<Session> = survivors
        .iter()
        .map(|&id| {
            let url = cluster.node(id).mcp_url();
            cluster.eventually(
                &format!("a new session through node {id}"),
                READY_DEADLINE,
                || Session::create(&url, "cluster-tests").ok(),
            )
        })
        .collect();
    for &id in &survivors {
        let url = cluster.node(id).mcp_url();
        for session in &during {
            assert_eq!(session.echo(&url, "new"), Ok("new".to_owned()));
        }
    }

    cluster.restart(old_leader);
    cluster.wait_ready(old_leader);
    let url = cluster.node(old_leader).mcp_url();
    for session in during.iter().chain(&before) {
        assert_eq!(
            session.echo(&url, "back"),
            Ok("back".to_owned()),
            "the restarted node {old_leader}\n{}",
            cluster.logs()
        );
    }
}

/// A leader stopped gracefully (SIGTERM) hands leadership to a follower before it exits,
/// so the fleet does not wait out an election timeout after it is gone.
#[test]
fn a_stopping_leader_hands_over_before_it_exits() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.leader();
    let survivors: Vec<u64> = cluster.live_except(old_leader);
    cluster.signal(old_leader, "TERM");
    let started = std::time::Instant::now();
    // Some survivor names another leader while the old one is still running.
    let handed = crate::harness::poll(READY_DEADLINE, || {
        if !cluster.node(old_leader).is_running() {
            return Some(false);
        }
        survivors
            .iter()
            .filter_map(|&id| cluster.try_status(id))
            .any(|s| s["leader_id"].as_u64().is_some_and(|l| l != old_leader))
            .then_some(true)
    });
    eprintln!(
        "step down: a survivor named a new leader {:?} after SIGTERM to leader {old_leader}",
        started.elapsed()
    );
    assert_eq!(
        handed,
        Some(true),
        "the leader exited before handing over\n{}",
        cluster.logs()
    );
    cluster.stop(old_leader);
    // The survivors take writes at once.
    let url = cluster.node(survivors[0]).mcp_url();
    Session::initialize(&url);
}

/// A write that reaches a follower while its leader has stopped answering (paused, as if
/// its host had vanished: its connections stay open, nothing comes back) goes to the
/// leader the survivors elect, instead of hanging on the old one until
/// `raft.write_timeout` and failing with 503.
#[test]
fn a_write_forwarded_to_a_leader_that_stopped_answering_goes_to_its_successor() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.leader();
    let survivors: Vec<u64> = cluster.live_except(old_leader);
    let url = cluster.node(survivors[0]).mcp_url();
    // The follower now holds a pooled connection to the leader, which the pause keeps open.
    Session::open(&url, "cluster-tests").expect("a session before the pause");

    cluster.pause(old_leader);
    let written = Session::create(&url, "cluster-tests");
    let new_leader = cluster.leader();
    cluster.resume(old_leader);
    let session = written.unwrap_or_else(|e| {
        panic!(
            "the write through node {} failed: {e}\n{}",
            survivors[0],
            cluster.logs()
        )
    });
    assert!(
        survivors.contains(&new_leader),
        "leader {new_leader} is not a survivor"
    );
    let other = cluster.node(survivors[1]).mcp_url();
    assert_eq!(session.echo(&other, "moved"), Ok("moved".to_owned()));
}
