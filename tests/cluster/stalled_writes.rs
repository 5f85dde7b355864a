//! Seen 8 of issue 9: a node whose writes cannot commit must leave the load balancer.
//! Both followers of a three-node fleet are stopped (SIGSTOP): the leader still knows it
//! leads and its replica is current, so the old readiness rules kept it at 200 while
//! every write through it ended in 503. Now `/ready` answers 503 once a write it started
//! has waited `raft.write_timeout` with no commit advance, and 200 again once commits
//! advance. (A leader cut off like this now leaves rotation sooner, once no quorum has
//! acknowledged it for the election timeout: see `cut_off.rs`. A stall is still reported
//! as such once a write has waited.)

use std::time::Duration;

use crate::client::{self, Session};
use crate::harness::{poll, Cluster, READY_DEADLINE};

/// Short, so the stall shows quickly.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// `/ready` of node at `base`: status and the `status` field of its body.
fn ready(base: &str) -> Option<(u16, String)> {
    let reply = client::get(&format!("{base}/ready"), &[]).ok()?;
    let body: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
    Some((reply.status, body["status"].as_str()?.to_owned()))
}

#[test]
fn ready_is_503_while_writes_stall_and_200_once_commits_advance() {
    let mut cluster = Cluster::builder()
        .env("MCP_FLEET_RAFT__WRITE_TIMEOUT", "1s")
        .start(3);
    // The leader: a follower cut off from the others loses its leader and is not ready
    // by the older rule already; the leader keeps leading a group it cannot commit in.
    let leader = cluster.leader();
    let base = cluster.node(leader).base();

    // Nothing pending: commits standing still for twice the write timeout are no stall.
    let left_rotation = poll(2 * WRITE_TIMEOUT, || {
        ready(&base).filter(|(status, _)| *status != 200)
    });
    assert_eq!(left_rotation, None, "an idle leader stays ready");

    for id in cluster.ids().into_iter().filter(|&id| id != leader) {
        cluster.pause(id);
    }
    cluster.eventually("the leader to see it has no quorum", READY_DEADLINE, || {
        ready(&base).filter(|seen| *seen == (503, "leader without quorum".to_owned()))
    });

    let url = cluster.node(leader).mcp_url();
    let writer = std::thread::spawn(move || Session::open_as(&url, "stalled", None));
    cluster.eventually(
        "the leader's /ready to say writes stall",
        READY_DEADLINE,
        || ready(&base).filter(|seen| *seen == (503, "writes stalled".to_owned())),
    );
    let reply = writer.join().expect("the writer");
    assert_eq!(
        reply.as_ref().map(|r| r.status).ok(),
        Some(503),
        "the write could not commit: {reply:?}"
    );
    // The failed write is over, and the node still stays out of rotation.
    assert_eq!(
        ready(&base).map(|(status, _)| status),
        Some(503),
        "a stalled node stays out until commits advance"
    );

    for id in cluster.ids().into_iter().filter(|&id| id != leader) {
        cluster.resume(id);
    }
    cluster.wait_ready(leader);
    // A resumed follower whose election timer ran out while it was stopped may stand for
    // election at once; with a 1 s write timeout a write made during that election fails
    // as any write without a leader does. Once the group settles, writes commit again.
    let url = cluster.node(leader).mcp_url();
    cluster.eventually("a session to open after the stall", READY_DEADLINE, || {
        Session::open_as(&url, "after", None)
            .ok()
            .filter(|reply| reply.status == 200)
    });
}
