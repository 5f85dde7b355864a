//! A split vote between two survivors, where the one with the longer log follows its rival's
//! candidacy after the split: it stands again itself, and wins.

use crate::client::Session;
use crate::harness::{sample, Cluster, READY_DEADLINE};

/// Sessions committed while the survivor with the higher id is down: its log is that much
/// shorter when the leader dies.
const MISSED_WRITES: usize = 5;

/// `mcp_fleet_raft_election_stands_total{reason="..."}` in node `id`'s metrics.
fn stands(cluster: &Cluster, id: u64, reason: &str) -> Option<u64> {
    let series = format!("mcp_fleet_raft_election_stands_total{{reason=\"{reason}\"}}");
    sample(&cluster.try_metrics(id)?, &series).map(|value| value as u64)
}

#[test]
fn the_survivor_with_the_longer_log_stands_again_after_following_its_rival_and_leads() {
    let mut cluster = Cluster::builder()
        .env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", "100000000")
        .start(3);
    let leader = cluster.leader();
    let mut survivors = cluster.live_except(leader);
    survivors.sort_unstable();
    // After the split, openraft has the survivor with the lower id adopt the vote of the
    // one with the higher id (of two candidates in one term, the higher id is the greater
    // vote): so the lower id gets the longer log, and the higher id is the one stopped.
    let (longer, shorter) = (survivors[0], survivors[1]);
    for id in [longer, shorter] {
        assert_eq!(stands(&cluster, id, "split"), Some(0), "node {id}");
    }

    // Killed, not paused: a paused node would take in, once resumed, the appends the
    // leader left in its sockets meanwhile.
    cluster.kill(shorter);
    let leader_url = cluster.node(leader).mcp_url();
    for _ in 0..MISSED_WRITES {
        Session::open(&leader_url, "split-votes").expect("a session committed by two nodes");
    }
    cluster.kill(leader);
    // Its timers short, so that it stands well before the other survivor.
    cluster.restart_with(
        shorter,
        &[
            ("MCP_FLEET_RAFT__HEARTBEAT_INTERVAL", "20ms"),
            ("MCP_FLEET_RAFT__ELECTION_TIMEOUT", "100ms"),
        ],
    );

    // The restarted node stands first, and the other refuses it (a longer log, or its leader's lease); the
    // other stands once its leader has been silent for the election silence (550 ms and
    // more), and the restarted node, a candidate of the same term, refuses it in turn: a
    // split, after which the survivor with the longer log follows its rival's candidacy,
    // which cannot win. It must stand again itself.
    let led = cluster.eventually("a survivor to lead", READY_DEADLINE, || {
        [longer, shorter].into_iter().find(|&id| {
            cluster
                .try_status(id)
                .is_some_and(|status| status["state"] == "Leader")
        })
    });
    assert_eq!(
        led,
        longer,
        "only the survivor holding every committed write can lead\n{}",
        cluster.logs()
    );
    let split_stands = stands(&cluster, longer, "split").unwrap_or(0);
    assert!(
        split_stands >= 1,
        "node {longer} led without standing again after the split: it waited for openraft's \
         own timer\n{}",
        cluster.logs()
    );
    let url = cluster.node(shorter).mcp_url();
    cluster.eventually(
        "a session through the other survivor",
        READY_DEADLINE,
        || Session::open(&url, "split-votes").ok(),
    );
}
