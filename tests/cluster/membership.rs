//! Changing membership at runtime: a new node catches up (from a snapshot once the log has
//! been compacted) and becomes a voter; a node that leaves drops out of the membership.

use serde_json::Value;

use crate::client::Session;
use crate::harness::{Cluster, READY_DEADLINE};

/// Log entries between snapshots: small, so a few hundred writes compact the log.
const SNAPSHOT_AFTER: &str = "50";
/// Sessions made before the new node joins; each is at least one log entry, so this is
/// several snapshots' worth and the new node cannot catch up from the log alone.
const SESSIONS_BEFORE_JOIN: usize = 150;

/// The `(id, voter)` pairs of a `/cluster` answer, sorted by id.
fn members(status: &Value) -> Vec<(u64, bool)> {
    let mut members: Vec<(u64, bool)> = status["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {status}"))
        .iter()
        .map(|m| {
            let id = m["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("member id in {status}"));
            (id, m["voter"] == true)
        })
        .collect();
    members.sort_unstable();
    members
}

#[test]
fn new_node_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::builder()
        .env("MCP_FLEET_RAFT__SNAPSHOT_AFTER", SNAPSHOT_AFTER)
        .start(3);
    let urls: Vec<String> = (1..=3).map(|id| cluster.node(id).mcp_url()).collect();
    let sessions: Vec<Session> = (0..SESSIONS_BEFORE_JOIN)
        .map(|i| Session::initialize(&urls[i % urls.len()]))
        .collect();
    let leader = cluster.leader();
    let applied_before = cluster.status(leader)["applied_index"]
        .as_u64()
        .expect("the leader has applied entries");
    // The leader's log no longer starts at the beginning: a newcomer needs a snapshot.
    cluster.eventually("the leader to purge compacted log", READY_DEADLINE, || {
        cluster.try_status(leader)?["purged_index"]
            .as_u64()
            .filter(|&p| p > 0)
    });

    cluster.add_node(4);
    cluster.wait_ready(4);
    let all_voters = vec![(1, true), (2, true), (3, true), (4, true)];
    // Membership shows up when the entry is appended, the data when it is applied: wait
    // for both.
    let status = cluster.eventually(
        "node 4 to list four voters and apply what the leader had",
        READY_DEADLINE,
        || {
            cluster.try_status(4).filter(|s| {
                members(s) == all_voters
                    && s["applied_index"].as_u64().unwrap_or(0) >= applied_before
            })
        },
    );
    assert_eq!(status["node_id"], 4, "{status}");
    assert!(
        status["snapshot_index"].as_u64().is_some(),
        "node 4 holds no snapshot, so it did not catch up from one: {status}"
    );

    let url = cluster.node(4).mcp_url();
    for session in &sessions {
        assert_eq!(
            session.echo(&url, "caught up"),
            Ok("caught up".to_owned()),
            "session {} via node 4",
            session.id
        );
    }
    // The new node takes writes too.
    let made_on_4 = Session::initialize(&url);
    assert_eq!(made_on_4.echo(&urls[0], "from 4"), Ok("from 4".to_owned()));

    // `cluster status` lists every member, as the node asked sees them.
    let via = cluster.node(4).internal().to_string();
    let out = cluster.cli(&["status", "--via", &via]);
    cluster.assert_success(&out, "cluster status via node 4");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cluster status printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(members(&printed), all_voters, "{printed}");
}

#[test]
fn a_node_that_leaves_drops_out_of_the_membership() {
    let mut cluster = Cluster::start(3);
    cluster.add_node(4);
    cluster.remove_node(4);
    let three_voters = vec![(1, true), (2, true), (3, true)];
    for id in 1..=3 {
        cluster.eventually(
            &format!("node {id} to list three voters"),
            READY_DEADLINE,
            || {
                cluster
                    .try_status(id)
                    .filter(|s| members(s) == three_voters)
            },
        );
    }
    // The remaining three still commit.
    let session = Session::initialize(&cluster.node(2).mcp_url());
    assert_eq!(
        session.echo(&cluster.node(3).mcp_url(), "still"),
        Ok("still".to_owned())
    );
}

#[test]
fn cluster_status_shows_every_member_and_says_which_node_it_asked() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader();
    let asked = if leader == 1 { 2 } else { 1 };
    let down = (1..=3)
        .find(|&id| id != leader && id != asked)
        .expect("a third node");
    cluster.kill(down);

    // `--via` as a URL, the way the node prints its internal listener.
    let via = cluster.node(asked).internal_url();
    let out = cluster.cli(&["status", "--via", &via]);
    cluster.assert_success(&out, "cluster status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let addr = cluster.node(asked).internal().to_string();
    assert!(
        stderr.contains(&format!("asking the node at {addr}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("[{down}] did not answer")),
        "{stderr}"
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed["asked_node"], asked, "{printed}");
    assert_eq!(
        printed["unreachable"],
        serde_json::json!([down]),
        "{printed}"
    );
    let all_voters = vec![(1, true), (2, true), (3, true)];
    assert_eq!(members(&printed), all_voters, "{printed}");
    for member in printed["members"].as_array().expect("members") {
        let id = member["id"].as_u64().expect("an id");
        assert_eq!(
            member["addr"],
            cluster.node(id).internal().to_string(),
            "{member}"
        );
        if id == down {
            assert_eq!(member["state"], "unreachable", "{member}");
            continue;
        }
        let state = if id == leader { "leader" } else { "follower" };
        assert_eq!(member["state"], state, "{member}");
        assert!(member["applied_index"].as_u64().is_some(), "{member}");
        // Each member's own report, as it answers `/cluster`.
        assert_eq!(member["report"]["node_id"], id, "{member}");
        assert_eq!(member["report"]["standing"], "member", "{member}");
    }

    // A change asked of a follower is made by the leader, and the command says so.
    let down_arg = down.to_string();
    let out = cluster.cli(&["leave", "--via", &via, "--node-id", &down_arg]);
    cluster.assert_success(&out, "cluster leave of the node that is down");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let leader_addr = cluster.node(leader).internal().to_string();
    assert!(
        stderr.contains(&format!(
            "forwarded it to the leader, node {leader} at {leader_addr}"
        )),
        "{stderr}"
    );
    let out = cluster.cli(&["status", "--via", &via]);
    cluster.assert_success(&out, "cluster status after the leave");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let two: Vec<(u64, bool)> = (1..=3)
        .filter(|&id| id != down)
        .map(|id| (id, true))
        .collect();
    assert_eq!(members(&printed), two, "{printed}");
    assert_eq!(printed["unreachable"], serde_json::json!([]), "{printed}");

    // Every subcommand needs to be told which node to ask.
    let out = cluster.cli(&["status"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--via is required"), "{stderr}");
    let out = cluster.cli(&["status", "--via", &format!("https://{addr}")]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[test]
fn cluster_init_repeats_with_the_same_voters_and_refuses_other_ones() {
    let cluster = Cluster::start(3);
    let peers = (1..=3)
        .map(|id| format!("{id}={}", cluster.node(id).internal()))
        .collect::<Vec<_>>()
        .join(",");
    let via = cluster.node(2).internal().to_string();
    let out = cluster.cli(&["init", "--via", &via, "--peers", &peers]);
    cluster.assert_success(&out, "cluster init with the same voters");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["already_formed"], true, "{answer}");

    let fewer = (1..=2)
        .map(|id| format!("{id}={}", cluster.node(id).internal()))
        .collect::<Vec<_>>()
        .join(",");
    let out = cluster.cli(&["init", "--via", &via, "--peers", &fewer]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "init with other voters succeeded: {stderr}"
    );
    assert!(stderr.contains("already belongs to a group"), "{stderr}");
}

#[test]
fn a_join_under_a_members_id_at_another_address_is_refused() {
    let cluster = Cluster::start(3);
    let via = cluster.node(1).internal().to_string();
    // Node 3 again, at its own address: nothing changes, and that is no error.
    let own = cluster.node(3).internal().to_string();
    let out = cluster.cli(&["join", "--via", &via, "--node-id", "3", "--raft-addr", &own]);
    cluster.assert_success(&out, "joining a member again at its own address");

    // A lost disk restarted with its old id, elsewhere: refused, and the group unchanged.
    let out = cluster.cli(&[
        "join",
        "--via",
        &via,
        "--node-id",
        "3",
        "--raft-addr",
        "127.0.0.1:9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the join succeeded: {stderr}");
    assert!(stderr.contains("node 3 is already a member at"), "{stderr}");
    let status = cluster.try_status(1).expect("status of node 1");
    assert_eq!(members(&status), vec![(1, true), (2, true), (3, true)]);
    let addr = cluster
        .eventually("node 1 to report node 3's address", READY_DEADLINE, || {
            cluster
                .try_status(1)
                .and_then(|s| s["members"].as_array().cloned())
        })
        .iter()
        .find(|m| m["id"] == 3)
        .and_then(|m| m["addr"].as_str().map(str::to_owned));
    assert_eq!(addr.as_deref(), Some(own.as_str()));
}
