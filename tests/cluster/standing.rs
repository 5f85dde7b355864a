//! A node outside a group says so at once and loudly: one waiting to be added, and one
//! removed by `cluster leave`, each answer `/ready` and MCP requests 503 with the reason
//! and log it; a removed node no longer stands for election, even after a restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{self, modern_call, Session};
use crate::harness::{Cluster, READY_DEADLINE};

/// Longer than two of the longest election timeouts (2 × 750 ms): a node that still stood
/// for election would have started one within it.
const NO_ELECTION_WINDOW: Duration = Duration::from_secs(4);

/// `/ready` of node `id`: its status and JSON body.
fn ready(cluster: &Cluster, id: u64) -> (u16, Value) {
    let reply = client::get(&format!("{}/ready", cluster.node(id).base()), &[]).expect("/ready");
    let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

/// A `tools/call` on node `id`: its status and the JSON-RPC error's message, if any.
fn call(cluster: &Cluster, id: u64) -> (u16, String) {
    let reply = modern_call(
        &cluster.node(id).mcp_url(),
        None,
        "echo",
        json!({"text": "x"}),
    )
    .expect("an answer");
    let message = reply
        .message()
        .and_then(|m| m["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (reply.status, message)
}

#[test]
fn a_node_waiting_for_a_group_says_what_to_run_and_refuses_requests_at_once() {
    let mut cluster = Cluster::start(3);
    cluster.start_unjoined(4);
    let addr = cluster.node(4).internal().to_string();
    let join = format!("mcp-fleet cluster join --via <a member's internal HOST:PORT> --node-id 4 --raft-addr {addr}");
    let init = format!("mcp-fleet cluster init --via {addr} --peers 4={addr},");

    let (status, body) = ready(&cluster, 4);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "waiting to be added to a group", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&join) && reason.contains(&init),
        "/ready names both commands: {reason}"
    );

    // Refused by the node itself with the reason, not after waiting out the write timeout.
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 503, "{message}");
    assert!(message.contains(&join), "{message}");

    // And its log says so, again and again.
    cluster.eventually("node 4 to log what it waits for", READY_DEADLINE, || {
        let log = cluster.node(4).log_tail(200);
        (log.matches("WARN").count() > 0 && log.matches(&join).count() >= 2).then_some(())
    });

    // The command it names does what it says; a fourth voter makes an even group, and
    // `cluster join` warns of it.
    let out = cluster.join(4);
    cluster.assert_success(&out, "cluster join of node 4");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 voters, an even number"), "{stderr}");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["voters"], 4, "{answer}");
    let leader = cluster.leader();
    cluster.eventually(
        "the leader to log the even voter count",
        READY_DEADLINE,
        || {
            cluster
                .node(leader)
                .log_tail(200)
                .contains("4 voters, an even number")
                .then_some(())
        },
    );
    cluster.wait_ready(4);
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 200, "{message}");
}

#[test]
fn a_removed_node_stops_serving_and_standing_for_election() {
    let mut cluster = Cluster::start(3);
    cluster.add_node(4);
    cluster.wait_ready(4);
    let session = Session::initialize(&cluster.node(4).mcp_url());
    cluster.leave(4);

    let removed = "removed from the group";
    let (status, body) =
        cluster.eventually("node 4 to know it was removed", READY_DEADLINE, || {
            let (status, body) = ready(&cluster, 4);
            (status == 503 && body["status"] == removed).then_some((status, body))
        });
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer a member")),
        "{status} {body}"
    );
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 503, "{message}");
    assert!(message.contains(removed), "{message}");
    let reply = session
        .echo_reply(&cluster.node(4).mcp_url(), "after")
        .expect("echo");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        cluster.node(4).log_tail(200).contains("ERROR")
            && cluster
                .node(4)
                .log_tail(200)
                .contains("removed from the group"),
        "node 4 logs its removal:\n{}",
        cluster.node(4).log_tail(40)
    );

    // It never stands for election: its term stays, and the members keep their leader.
    let leader = cluster.leader();
    let term = |id: u64| cluster.status(id)["term"].as_u64().expect("a term");
    let (removed_term, members_term) = (term(4), term(leader));
    let until = Instant::now() + NO_ELECTION_WINDOW;
    while Instant::now() < until {
        let status = cluster.status(4);
        assert_ne!(
            status["state"], "Candidate",
            "node 4 stood for election: {status}"
        );
        assert_eq!(term(4), removed_term, "node 4 started an election");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(term(leader), members_term, "the members' term moved");
    assert_eq!(cluster.leader(), leader);

    // After a restart it still knows, whatever its last log says.
    cluster.restart(4);
    cluster.eventually("node 4 to come back removed", READY_DEADLINE, || {
        let (status, body) = ready(&cluster, 4);
        (status == 503 && body["status"] == removed).then_some(())
    });
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 503, "{message}");

    // The others serve on, the session included.
    assert_eq!(
        session.echo(&cluster.node(1).mcp_url(), "on"),
        Ok("on".to_owned())
    );
}

#[test]
fn a_node_removed_while_cut_off_learns_it_once_back() {
    let mut cluster = Cluster::start(3);
    cluster.add_node(4);
    cluster.wait_ready(4);
    // Three of four voters still make both majorities of the change.
    cluster.pause(4);
    cluster.leave(4);
    cluster.resume(4);
    cluster.eventually("node 4 to learn it was removed", READY_DEADLINE, || {
        let (status, body) = ready(&cluster, 4);
        (status == 503 && body["status"] == "removed from the group").then_some(())
    });
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 503, "{message}");
}

#[test]
fn a_node_removed_while_down_learns_it_from_the_members_it_asks_for_votes() {
    let mut cluster = Cluster::start(3);
    cluster.add_node(4);
    cluster.wait_ready(4);
    cluster.kill(4);
    cluster.leave(4);
    // The leader that could not tell node 4 keeps trying; a restart forgets that, as a
    // change of leader would.
    let leader = cluster.leader();
    cluster.stop(leader);
    cluster.restart(leader);
    for id in 1..=3 {
        cluster.wait_ready(id);
    }

    // Node 4's log still lists it as a voter: it stands for election, and the members
    // answer that it is not one of them.
    cluster.restart(4);
    cluster.eventually("node 4 to learn it was removed", READY_DEADLINE, || {
        let (status, body) = ready(&cluster, 4);
        (status == 503 && body["status"] == "removed from the group").then_some(())
    });
    assert!(
        cluster
            .node(4)
            .log_tail(200)
            .contains("a member answered its vote request that it is not one"),
        "{}",
        cluster.node(4).log_tail(40)
    );
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 503, "{message}");
    let leader = cluster.leader();
    assert_ne!(leader, 4);
}

#[test]
fn a_leader_that_leaves_stops_and_the_others_elect_another() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    cluster.leave(leader);
    cluster.eventually("the old leader to know it left", READY_DEADLINE, || {
        let (status, body) = ready(&cluster, leader);
        (status == 503 && body["status"] == "removed from the group").then_some(())
    });
    let next = cluster.leader();
    assert_ne!(next, leader);
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let session = Session::initialize(&cluster.node(others[0]).mcp_url());
    assert_eq!(
        session.echo(&cluster.node(others[1]).mcp_url(), "on"),
        Ok("on".to_owned())
    );
}

#[test]
fn a_removed_node_joined_again_serves_again() {
    let mut cluster = Cluster::start(3);
    cluster.add_node(4);
    cluster.wait_ready(4);
    cluster.leave(4);
    cluster.eventually("node 4 to know it was removed", READY_DEADLINE, || {
        let (status, body) = ready(&cluster, 4);
        (status == 503 && body["status"] == "removed from the group").then_some(())
    });
    // Added back as it is, data directory and all.
    let out = cluster.join(4);
    cluster.assert_success(&out, "cluster join of node 4 again");
    cluster.wait_ready(4);
    let (status, message) = call(&cluster, 4);
    assert_eq!(status, 200, "{message}");
    assert!(
        cluster
            .node(4)
            .log_tail(200)
            .contains("added to the group again"),
        "{}",
        cluster.node(4).log_tail(40)
    );
    // And it stands for election again: with the leader gone, the other three elect one.
    let leader = cluster.leader();
    cluster.kill(leader);
    let next = cluster.leader();
    assert_ne!(next, leader);
    // It survives a restart as a member.
    cluster.restart(4);
    cluster.wait_ready(4);
}
