//! Revoking a user through one node is enforced by every node, each queried directly: her
//! tokens (used or not, cached or not) and her sessions are refused everywhere, and
//! nobody else is affected.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{modern_call, Session};
use crate::fleet::Fleet;
use crate::harness::READY_DEADLINE;

/// How many times each node is asked again once it refuses, to show it keeps refusing.
const RECHECKS: usize = 5;

#[test]
fn revocation_through_one_node_is_enforced_by_every_node() {
    let Some(fleet) = Fleet::builder().unbalanced().start(3) else {
        return;
    };
    let ids = fleet.cluster.ids();
    let url = |id: u64| fleet.cluster.node(id).mcp_url();
    let whoami = |id: u64, token: &str| {
        modern_call(&url(id), Some(token), "whoami", json!({})).map_or(0, |r| r.status)
    };
    let carol = fleet.token("carol");
    let carol_unused = fleet.token("carol");
    let dave = fleet.token("dave");
    // Every node has validated (and cached) carol's token, and she has a session.
    let session = Session::create_as(&url(ids[0]), "revocation", &carol)
        .unwrap_or_else(|e| panic!("carol's session: {e}"));
    for &id in &ids {
        assert_eq!(whoami(id, &carol), 200, "carol on node {id}");
        assert_eq!(session.echo(&url(id), "before"), Ok("before".to_owned()));
    }

    let through = ids[1];
    let via = fleet.cluster.node(through).internal().to_string();
    let issuer = fleet.issuer.url().to_owned();
    let out = fleet.cluster.cli(&[
        "revoke",
        "--via",
        &via,
        "--issuer",
        &issuer,
        "--subject",
        "carol",
    ]);
    fleet
        .cluster
        .assert_success(&out, "cluster revoke of carol");
    let revoked_at = Instant::now();

    // Right after the command returns, then until each node refuses.
    let immediate: BTreeMap<u64, u16> = ids.iter().map(|&id| (id, whoami(id, &carol))).collect();
    let mut enforced_after: BTreeMap<u64, Duration> = BTreeMap::new();
    for &id in &ids {
        fleet.cluster.eventually(
            &format!("node {id} to refuse carol"),
            READY_DEADLINE,
            || (whoami(id, &carol) == 401).then_some(()),
        );
        enforced_after.insert(id, revoked_at.elapsed());
    }
    eprintln!(
        "revocation through node {through}: statuses right after the command returned \
         {immediate:?}; every node refused within {enforced_after:?}"
    );
    // The node the command went through refuses as soon as it returns.
    assert_eq!(
        immediate[&through], 401,
        "node {through}, right after the revocation"
    );

    for &id in &ids {
        for _ in 0..RECHECKS {
            assert_eq!(whoami(id, &carol), 401, "carol's used token on node {id}");
            assert_eq!(
                whoami(id, &carol_unused),
                401,
                "carol's unused token on node {id}"
            );
            let reply = session.echo_reply(&url(id), "after").expect("echo");
            assert_eq!(reply.status, 401, "carol's session on node {id}: {reply:?}");
        }
        assert_eq!(whoami(id, &dave), 200, "dave on node {id}");
    }
}
