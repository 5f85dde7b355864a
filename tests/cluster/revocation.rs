//! Revoking a user through one node is enforced by every node, each queried directly, as
//! soon as the command returns: her tokens (used or not, cached or not) and her sessions
//! are refused everywhere, and nobody else is affected. A revocation must name a
//! configured issuer.

use std::collections::BTreeMap;

use serde_json::json;

use crate::client::{modern_call, Session};
use crate::fleet::Fleet;

/// How many times each node is asked again once it refuses, to show it keeps refusing.
const RECHECKS: usize = 5;

#[test]
fn a_revocation_names_a_configured_issuer_and_every_node_refuses_once_it_returns() {
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
    // An issuer no node trusts would store a revocation no token ever matches: refused,
    // naming the issuers that are configured.
    let unknown = format!("{issuer}/elsewhere");
    let out = fleet.cluster.cli(&[
        "revoke",
        "--via",
        &via,
        "--issuer",
        &unknown,
        "--subject",
        "carol",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "revoke with an unknown issuer succeeded: {stderr}"
    );
    assert!(
        stderr.contains("not a configured issuer") && stderr.contains(&issuer),
        "the refusal names the configured issuers: {stderr}"
    );
    assert_eq!(whoami(through, &carol), 200, "carol after a refused revoke");

    // The issuer as people often write it, with a trailing slash: tokens carry it without.
    let with_slash = format!("{issuer}/");
    let out = fleet.cluster.cli(&[
        "revoke",
        "--via",
        &via,
        "--issuer",
        &with_slash,
        "--subject",
        "carol",
    ]);
    fleet
        .cluster
        .assert_success(&out, "cluster revoke of carol");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("asking the node at {via}")),
        "the command says which node it asked: {stderr}"
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["issuer"], issuer.as_str(), "{answer}");
    assert_eq!(answer["unconfirmed_members"], json!([]), "{answer}");

    // The command returns once every member has applied the revocation: each node refuses
    // carol at once, not eventually.
    let immediate: BTreeMap<u64, u16> = ids.iter().map(|&id| (id, whoami(id, &carol))).collect();
    eprintln!("revocation through node {through}: statuses right after it returned {immediate:?}");
    for &id in &ids {
        assert_eq!(immediate[&id], 401, "node {id}, right after the revocation");
    }

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
