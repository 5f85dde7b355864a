//! A node cut off from the rest of its group (the others SIGSTOPped) leaves the balancer's
//! rotation through `/ready` and answers 503 to what it cannot do alone: a write, a read
//! of a session the others may have deleted meanwhile (never a 200 from its own replica,
//! never a 404), a token the others may have revoked (never a 200 from its memory tier).
//! Once the others run again it serves again, and HAProxy takes it back, without an
//! operator.
//!
//! The leader is the case that matters: openraft 0.9 has no step-down, so a leader whose
//! followers are gone still calls itself leader; only its quorum acknowledgements say it
//! is alone.

use std::time::Instant;

use serde_json::json;

use crate::client::{modern_call, Session};
use crate::fleet::Fleet;
use crate::harness::READY_DEADLINE;

/// Short, so refused requests answer quickly; the default is 5 s.
const WRITE_TIMEOUT: &str = "2s";

/// A fleet of three behind HAProxy with a short write timeout; `None` without HAProxy.
fn fleet() -> Option<Fleet> {
    Fleet::builder()
        .env("MCP_FLEET_RAFT__WRITE_TIMEOUT", WRITE_TIMEOUT)
        .start(3)
}

/// Pauses every node but `lonely`, checks how `lonely` behaves alone, resumes the others
/// and checks it serves again.
fn cut_off_and_heal(mut fleet: Fleet, lonely: u64, role: &str) {
    let url = fleet.cluster.node(lonely).mcp_url();
    let token = fleet.token("carol");
    // Used on `lonely`, so its memory tiers hold both the session and the token.
    let session = Session::create_as(&url, "cut-off", &token).expect("a session");
    assert_eq!(session.echo(&url, "before"), Ok("before".to_owned()));
    let whoami = || modern_call(&url, Some(&token), "whoami", json!({})).map(|r| r.status);
    assert_eq!(whoami().ok(), Some(200));

    let others: Vec<u64> = fleet
        .cluster
        .ids()
        .into_iter()
        .filter(|&id| id != lonely)
        .collect();
    for &id in &others {
        fleet.cluster.pause(id);
    }
    let paused_at = Instant::now();
    fleet.eventually(
        &format!("the cut-off {role} (node {lonely}) to answer /ready 503"),
        READY_DEADLINE,
        || {
            let (status, _) = fleet.cluster.readiness(lonely)?;
            (status == 503).then_some(())
        },
    );
    let unready_after = paused_at.elapsed();
    fleet.wait_lb(lonely, false);
    let out_of_rotation_after = paused_at.elapsed();

    let started = Instant::now();
    let reply = session.echo_reply(&url, "alone").expect("an HTTP answer");
    let read_took = started.elapsed();
    assert_eq!(
        reply.status,
        503,
        "a session read on the cut-off {role}: {reply:?}\n{}",
        fleet.logs()
    );
    let started = Instant::now();
    let refused = Session::open_as(&url, "cut-off", Some(&token))
        .expect("an HTTP answer")
        .session(Some(&token))
        .expect_err("a write was acknowledged alone");
    let write_took = started.elapsed();
    assert!(refused.contains("status: 503"), "{refused}");
    assert_eq!(whoami().ok(), Some(503), "a token on the cut-off {role}");
    let (status, body) = fleet.cluster.readiness(lonely).expect("an answer");
    assert_eq!(status, 503, "{body}");
    let said = serde_json::from_str::<serde_json::Value>(&body).expect("a JSON body")["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let expected = if role == "leader" {
        "leader without quorum"
    } else {
        "cut off from the group"
    };
    assert_eq!(said, expected, "{body}");

    for &id in &others {
        fleet.cluster.resume(id);
    }
    let resumed_at = Instant::now();
    fleet.cluster.wait_ready(lonely);
    let ready_after = resumed_at.elapsed();
    fleet.wait_lb(lonely, true);
    assert_eq!(session.echo(&url, "back"), Ok("back".to_owned()));
    assert_eq!(whoami().ok(), Some(200));
    fleet.new_session_served_everywhere(&url, "healed", &token);
    eprintln!(
        "cut-off {role}: node {lonely} answered /ready 503 {unready_after:?} after the others \
         stopped, HAProxy had it down after {out_of_rotation_after:?}; a session read \
         answered 503 in {read_took:?}, a create 503 in {write_took:?}; ready again \
         {ready_after:?} after they resumed"
    );
}

#[test]
fn a_leader_cut_off_from_its_followers_leaves_rotation_and_serves_nothing_stale() {
    let Some(fleet) = fleet() else { return };
    let leader = fleet.cluster.leader();
    cut_off_and_heal(fleet, leader, "leader");
}

#[test]
fn a_follower_cut_off_from_the_group_leaves_rotation_and_serves_nothing_stale() {
    let Some(fleet) = fleet() else { return };
    let leader = fleet.cluster.leader();
    let follower = *fleet
        .cluster
        .ids()
        .iter()
        .find(|&&id| id != leader)
        .expect("a follower");
    cut_off_and_heal(fleet, follower, "follower");
}
