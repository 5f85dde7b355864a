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

    // `cluster status` prints the same document as `/cluster`.
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
