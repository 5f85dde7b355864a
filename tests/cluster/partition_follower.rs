//! Elections and partitions as clients feel them.
//!
//! - A follower cut off from its group (here: the other two nodes SIGSTOPped) refuses at
//!   once, with a 503 saying why and `Retry-After`, instead of letting each request wait
//!   out `raft.write_timeout` for a leader it cannot reach; its `/ready` says so, HAProxy
//!   takes it out, and it comes back into rotation once the others run again.
//! - Survivors of a SIGKILLed leader elect one of them, round after round, however the
//!   previous elections went (split votes, a longer log elsewhere), and neither of them
//!   takes itself for cut off while they do.

use std::time::{Duration, Instant};

use crate::client::Session;
use crate::fleet::Fleet;
use crate::harness::{Cluster, READY_DEADLINE};

/// Long, so that a refusal that waited for it cannot pass for one given at once.
const WRITE_TIMEOUT: &str = "10s";

/// Well under [`WRITE_TIMEOUT`]: a refusal by a node that knows it is cut off comes at
/// once; one that waited for a leader would come after the write timeout.
const REFUSED_WITHIN: Duration = Duration::from_secs(3);

#[test]
fn a_follower_cut_off_from_its_group_refuses_at_once_and_comes_back_into_rotation_when_healed() {
    let Some(mut fleet) = Fleet::builder()
        .env("MCP_FLEET_RAFT__WRITE_TIMEOUT", WRITE_TIMEOUT)
        .start(3)
    else {
        return;
    };
    let leader = fleet.cluster.leader();
    let follower = fleet.cluster.live_except(leader)[0];
    let url = fleet.cluster.node(follower).mcp_url();
    let token = fleet.token("frank");
    let session = Session::create_as(&url, "cut-off-follower", &token).expect("a session");

    let others = fleet.cluster.live_except(follower);
    for &id in &others {
        fleet.cluster.pause(id);
    }
    let paused_at = Instant::now();
    let ready = fleet.eventually(
        &format!("the cut-off follower (node {follower}) to say so on /ready"),
        READY_DEADLINE,
        || {
            let (status, body) = fleet.cluster.readiness(follower)?;
            let body: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 503 && body["status"] == "cut off from the group").then_some(body)
        },
    );
    let unready_after = paused_at.elapsed();
    let reason = ready["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("has not heard from a leader"),
        "/ready gives no reason: {ready}"
    );
    fleet.wait_lb(follower, false);

    let started = Instant::now();
    let refused = Session::open_as(&url, "cut-off-follower", Some(&token)).expect("an answer");
    let write_took = started.elapsed();
    assert_eq!(
        refused.status, 503,
        "a create on the cut-off follower: {refused:?}"
    );
    assert!(
        refused.body.contains("cut off from the group"),
        "the refusal does not say why: {refused:?}"
    );
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "the refusal does not say when to retry: {refused:?}"
    );
    assert!(
        write_took < REFUSED_WITHIN,
        "the create waited {write_took:?} for a refusal (write timeout {WRITE_TIMEOUT})"
    );
    let started = Instant::now();
    let read = session.echo_reply(&url, "alone").expect("an answer");
    let read_took = started.elapsed();
    assert_eq!(
        read.status, 503,
        "a session call on the cut-off follower: {read:?}"
    );
    assert!(
        read_took < REFUSED_WITHIN,
        "the session call waited {read_took:?} for a refusal"
    );

    for &id in &others {
        fleet.cluster.resume(id);
    }
    let resumed_at = Instant::now();
    fleet.cluster.wait_ready(follower);
    fleet.wait_lb(follower, true);
    let back_after = resumed_at.elapsed();
    assert_eq!(session.echo(&url, "back"), Ok("back".to_owned()));
    fleet.new_session_served_everywhere(&url, "healed", &token);
    eprintln!(
        "cut-off follower: node {follower} said so on /ready {unready_after:?} after the \
         others stopped; a create was refused in {write_took:?} and a session call in \
         {read_took:?} (write timeout {WRITE_TIMEOUT}); back in rotation {back_after:?} after \
         they resumed"
    );
}

/// Leader kills in a row: enough for survivors that split a vote, or lost one to a
/// longer log, to face each other again.
const ROUNDS: usize = 6;

#[test]
fn survivors_elect_a_leader_after_every_kill_of_the_leader() {
    let mut cluster = Cluster::start(3);
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let leader = cluster.leader();
        let term = cluster.status(leader)["term"].as_u64().unwrap_or(0);
        let survivors = cluster.live_except(leader);
        cluster.kill(leader);
        let killed = Instant::now();
        let (elected, new_term) = cluster.eventually(
            &format!("round {round}: a survivor to lead"),
            READY_DEADLINE,
            || {
                survivors.iter().find_map(|&id| {
                    let status = cluster.try_status(id)?;
                    (status["state"] == "Leader").then(|| (id, status["term"].as_u64()))
                })
            },
        );
        let took = killed.elapsed();
        let url = cluster.node(elected).mcp_url();
        cluster.eventually(
            &format!("round {round}: a session through the new leader {elected}"),
            READY_DEADLINE,
            || Session::create(&url, "elections").ok(),
        );
        rounds.push(format!(
            "{took:?} (term {term} to {})",
            new_term.unwrap_or_default()
        ));
        cluster.restart(leader);
        cluster.wait_ready(leader);
    }
    for id in cluster.ids() {
        let log = cluster.node(id).log_tail(usize::MAX);
        assert!(
            !log.contains("cut off from the group"),
            "node {id} took itself for cut off during an election:\n{log}"
        );
    }
    eprintln!("elections: a survivor led after {}", rounds.join(", "));
}
