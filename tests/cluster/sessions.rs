//! A legacy session is fleet-wide: made on one node, served and ended on any.

use crate::client::Session;
use crate::harness::{Cluster, READY_DEADLINE};

#[test]
fn session_on_one_node_is_served_by_all() {
    let cluster = Cluster::start(3);
    let url = |id: u64| cluster.node(id).mcp_url();
    let session = Session::initialize(&url(1));
    // No waiting: `initialize` answered after the commit, so a node that has not applied
    // it yet must still find the session (from the leader), not answer 404.
    for id in [2, 3] {
        let text = format!("via node {id}");
        assert_eq!(
            session.echo(&url(id), &text),
            Ok(text),
            "{}",
            cluster.logs()
        );
    }
    let reply = session.delete(&url(2)).expect("DELETE via node 2");
    assert_eq!(reply.status, 204, "DELETE via node 2: {reply:?}");
    // The node that ended it never serves it again, not even from its memory tier.
    let reply = session
        .echo_reply(&url(2), "ended")
        .expect("echo via node 2");
    assert_eq!(reply.status, 404, "a deleted session via node 2: {reply:?}");
    // Ending a session is as fleet-wide as making one: every other node drops it from its
    // memory tier once it applies the delete (within a heartbeat).
    for id in [1, 3] {
        cluster.eventually(
            &format!("node {id} to answer 404 for the deleted session"),
            READY_DEADLINE,
            || {
                let reply = session.echo_reply(&url(id), "ended").ok()?;
                (reply.status == 404).then_some(())
            },
        );
    }
    let reply = session.delete(&url(1)).expect("DELETE via node 1");
    assert_eq!(reply.status, 404, "a second DELETE via node 1: {reply:?}");
}

/// An operator reads WARN and ERROR as "something is wrong": a fleet forming, electing its
/// first leader and serving a session is not.
#[test]
fn a_normal_start_logs_no_warning_or_error() {
    let cluster = Cluster::start(3);
    let session = Session::initialize(&cluster.node(1).mcp_url());
    for id in [2, 3] {
        assert_eq!(
            session.echo(&cluster.node(id).mcp_url(), "hi"),
            Ok("hi".to_owned())
        );
    }
    for id in cluster.ids() {
        let log = cluster.node(id).log_tail(usize::MAX);
        let loud: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .collect();
        assert!(loud.is_empty(), "node {id} logged:\n{}", loud.join("\n"));
    }
}
