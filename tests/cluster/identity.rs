//! A node's id lives in its data directory: restarted with only its listeners and data
//! directory it comes back as itself (and, alone, never leads a group of three); started
//! with another id it refuses, naming both ids and the directory.

use crate::client::Session;
use crate::harness::{Cluster, READY_DEADLINE};

/// Elections node 2 must lose, alone, before the test believes it cannot win one.
const LOST_ELECTIONS: u64 = 3;

#[test]
fn a_node_restarted_without_its_id_comes_back_as_itself_and_never_leads_alone() {
    let mut cluster = Cluster::start(3);
    let session = Session::initialize(&cluster.node(1).mcp_url());
    cluster.kill_all();

    // As the README's restart reads: listeners and data directory, no id.
    cluster.restart_without_id(2);
    let status = cluster.status(2);
    assert_eq!(status["node_id"], 2, "{status}");
    let term = status["term"].as_u64().expect("a term");
    // Alone, node 2 stands for election again and again and never wins: each lost
    // election moves the term on. A node taking the id of another member counted its own
    // vote twice and led by itself at the first election.
    cluster.eventually(
        &format!("node 2 to lose {LOST_ELECTIONS} elections alone"),
        READY_DEADLINE,
        || {
            let status = cluster.try_status(2)?;
            assert_ne!(
                status["state"],
                "Leader",
                "node 2 leads alone: {status}\n{}",
                cluster.logs()
            );
            (status["term"].as_u64()? >= term + LOST_ELECTIONS).then_some(())
        },
    );

    cluster.restart_without_id(1);
    cluster.restart_without_id(3);
    let leader = cluster.leader();
    for id in [1, 2, 3] {
        cluster.wait_ready(id);
        let status = cluster.status(id);
        assert_eq!(status["node_id"], id, "{status}");
        assert_eq!(status["leader_id"], leader, "{status}");
        assert_eq!(
            session.echo(&cluster.node(id).mcp_url(), "still here"),
            Ok("still here".to_owned()),
            "the session made before the restart, via node {id}"
        );
    }
    // Exactly three members, one per id: no node joined under a borrowed id.
    let members = cluster.status(leader)["members"].clone();
    let ids: Vec<u64> = members
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(ids, [1, 2, 3], "{members}");
}

#[test]
fn a_node_given_another_id_refuses_to_start_naming_both_and_its_data_dir() {
    let mut cluster = Cluster::start(3);
    cluster.stop(2);

    let out = cluster.serve_refused(2, Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = cluster.node(2).data_dir().display().to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("node id 1 was given")
            && stderr.contains("belongs to node 2")
            && stderr.contains(&dir),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "it listened before refusing: {out:?}"
    );

    // The refusal changed nothing: started as itself it serves again.
    cluster.restart(2);
    cluster.wait_ready(2);
    assert_eq!(cluster.status(2)["node_id"], 2);
}

/// Every node records the group's id beside its own; a node whose data directory belongs
/// to another group refuses to serve (503 with the reason) instead of serving a replica
/// that is not its own.
#[test]
fn every_node_records_the_group_and_refuses_a_replica_of_another() {
    let mut cluster = Cluster::start(3);
    let group = |cluster: &Cluster, id: u64| {
        cluster
            .try_status(id)
            .and_then(|s| s["group_id"].as_str().map(str::to_owned))
    };
    let recorded = |id: u64, cluster: &Cluster| -> Option<String> {
        let path = cluster.node(id).data_dir().join("identity.json");
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        record["group_id"].as_str().map(str::to_owned)
    };
    let id1 = cluster.eventually("node 1 to know its group", READY_DEADLINE, || {
        group(&cluster, 1)
    });
    assert_eq!(id1.len(), 32, "{id1}");
    for id in 1..=3 {
        cluster.eventually(
            &format!("node {id} to record group {id1}"),
            READY_DEADLINE,
            || (group(&cluster, id)? == id1 && recorded(id, &cluster)? == id1).then_some(()),
        );
    }

    // Node 3's data directory now says it belongs to another group.
    cluster.kill(3);
    let path = cluster.node(3).data_dir().join("identity.json");
    let original = std::fs::read_to_string(&path).expect("identity.json");
    let other = "0123456789abcdef0123456789abcdef";
    std::fs::write(&path, original.replace(&id1, other)).expect("rewrite identity.json");
    cluster.restart(3);
    let base = cluster.node(3).base();
    let body = cluster.eventually(
        "node 3 to refuse another group's replica",
        READY_DEADLINE,
        || {
            let reply = crate::client::get(&format!("{base}/ready"), &[]).ok()?;
            (reply.status == 503 && reply.body.contains("belongs to group")).then_some(reply.body)
        },
    );
    assert!(body.contains(other) && body.contains(&id1), "{body}");
    let reply = Session::open_as(&cluster.node(3).mcp_url(), "someone", None).expect("reply");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("belongs to group"), "{reply:?}");
    // The record is never rewritten to match.
    assert_eq!(recorded(3, &cluster).as_deref(), Some(other));

    // Its own group again: it serves.
    cluster.kill(3);
    std::fs::write(&path, original).expect("restore identity.json");
    cluster.restart(3);
    cluster.wait_ready(3);
    let session = Session::initialize(&cluster.node(3).mcp_url());
    assert_eq!(
        session.echo(&cluster.node(1).mcp_url(), "back"),
        Ok("back".to_owned())
    );
}
