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
