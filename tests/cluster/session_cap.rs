//! The cap on legacy sessions per principal is fleet-wide: creates through different
//! nodes, even at the same moment, count against one cap, and a session ended through
//! any node makes room through every other.

use std::sync::Barrier;

use crate::client::{Reply, Session};
use crate::fleet::Fleet;

/// `sessions.max_per_principal` on every node of these tests.
const CAP: usize = 3;
/// JSON-RPC error code of a count cap reached.
const LIMIT_EXCEEDED: i64 = -32010;

/// Whether `reply` is the refusal of the session cap.
fn is_cap_refusal(reply: &Reply) -> bool {
    reply.status == 429
        && reply.message().is_some_and(|m| {
            m["error"]["code"] == LIMIT_EXCEEDED
                && m["error"]["data"]["limit"] == "sessions.max_per_principal"
        })
}

#[test]
fn concurrent_creates_through_every_node_count_against_one_fleet_wide_cap() {
    let fleet = Fleet::builder()
        .unbalanced()
        .env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", &CAP.to_string())
        .start(3)
        .expect("a fleet without a balancer needs no haproxy");
    let urls: Vec<String> = fleet
        .cluster
        .ids()
        .into_iter()
        .map(|id| fleet.cluster.node(id).mcp_url())
        .collect();
    let alice = fleet.token("alice");

    // Three creates per node, all released at once: more than the cap on every node.
    let attempts = 3 * urls.len();
    let start = Barrier::new(attempts);
    let replies: Vec<(String, Reply)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..attempts)
            .map(|i| {
                let (url, alice, start) = (&urls[i % urls.len()], &alice, &start);
                scope.spawn(move || {
                    start.wait();
                    let reply = Session::open_as(url, "cap", Some(alice))
                        .unwrap_or_else(|e| panic!("initialize via {url}: {e}"));
                    (url.clone(), reply)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a client thread"))
            .collect()
    });
    let mut created = Vec::new();
    for (url, reply) in &replies {
        match reply.session(Some(&alice)) {
            Ok(session) => created.push((url.clone(), session)),
            Err(_) => assert!(
                is_cap_refusal(reply),
                "via {url}: {reply:?}\n{}",
                fleet.logs()
            ),
        }
    }
    let ids: Vec<(&String, &String)> = created.iter().map(|(url, s)| (url, &s.id)).collect();
    assert_eq!(created.len(), CAP, "sessions created: {ids:?}");

    // The ones created work through every node; one more is refused through every node.
    for (_, session) in &created {
        for url in &urls {
            assert_eq!(session.echo(url, "held"), Ok("held".to_owned()));
        }
    }
    for url in &urls {
        let reply = Session::open_as(url, "cap", Some(&alice)).expect("initialize");
        assert!(is_cap_refusal(&reply), "via {url}: {reply:?}");
    }
    // Another principal has a cap of its own.
    let bob = fleet.token("bob");
    Session::create_as(&urls[1], "cap", &bob).expect("bob's session");

    // Ended through one node, a session makes room through another, for one more only.
    let reply = created[0].1.delete(&urls[2]).expect("DELETE");
    assert_eq!(reply.status, 204, "{reply:?}");
    Session::create_as(&urls[0], "cap", &alice).expect("a session in the freed place");
    let reply = Session::open_as(&urls[1], "cap", Some(&alice)).expect("initialize");
    assert!(is_cap_refusal(&reply), "{reply:?}");
}
