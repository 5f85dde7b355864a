//! Tools calling a team's upstream API (`ctx.http()`, `ctx.token_for`) on a fleet: the
//! upstream receives a token exchanged for the caller at her issuer, never her own token;
//! a second call through another node reuses it (the issuer counts one exchange); every
//! request carries the MCP request's id; without authentication `ctx.token_for` is a tool
//! error; an upstream that hangs or answers too much is a tool error, not a stuck call.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{modern_call, Reply};
use crate::fleet::Fleet;
use crate::harness::Cluster;
use crate::issuer::forge;
use crate::upstream::Upstream;

/// The upstream's audience at the issuer.
const AUDIENCE: &str = "https://api.acme.test";
/// The tool of the conformance fixtures that calls an upstream.
const TOOL: &str = "test_upstream_call";

/// The `CallToolResult` of a 200 reply.
#[track_caller]
fn result(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    let message = reply
        .message()
        .unwrap_or_else(|| panic!("no message: {reply:?}"));
    message
        .get("result")
        .cloned()
        .unwrap_or_else(|| panic!("not a result: {message}"))
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

#[test]
fn the_upstream_gets_a_token_exchanged_for_the_caller_once_for_the_whole_fleet() {
    let upstream = Upstream::start();
    let Some(fleet) = Fleet::builder()
        .unbalanced()
        .conformance()
        .token_exchange()
        .start(3)
    else {
        return;
    };
    let ids = fleet.cluster.ids();
    let url = |id: u64| fleet.cluster.node(id).mcp_url();
    let args = json!({ "url": upstream.url("/echo"), "audience": AUDIENCE });
    let alice = fleet.token("alice");
    let call = |id: u64, token: &str| {
        modern_call(&url(id), Some(token), TOOL, args.clone())
            .unwrap_or_else(|e| panic!("tools/call through node {id}: {e}"))
    };

    let first = call(ids[0], &alice);
    let answer = result(&first);
    assert_eq!(answer.get("isError"), None, "{answer}");
    assert_eq!(text(&answer), "status 200: {\"ok\":true}", "{answer}");
    let received = upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let sent = received[0].bearer().expect("a bearer token").to_owned();
    assert_ne!(
        sent, alice,
        "the caller's own token must never reach the upstream"
    );
    let claims = forge::claims_of(&sent);
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["aud"], AUDIENCE, "{claims}");
    assert_eq!(claims["iss"], fleet.issuer.url(), "{claims}");
    assert_eq!(fleet.issuer.exchanges(), 1);
    // The upstream's log line and the node's access line share the request's id.
    let id = first.header("x-request-id").expect("an x-request-id");
    assert_eq!(received[0].request_id.as_deref(), Some(id));

    // Through the other nodes: the token stored by the first is found, not exchanged.
    for &id in &ids[1..] {
        let answer = result(&call(id, &alice));
        assert_eq!(answer.get("isError"), None, "node {id}: {answer}");
        let last = upstream.received().pop().expect("a request");
        assert_eq!(last.bearer(), Some(sent.as_str()), "node {id}");
    }
    assert_eq!(
        fleet.issuer.exchanges(),
        1,
        "one exchange for the whole fleet"
    );

    // Another caller gets a token of her own.
    let bob = fleet.token("bob");
    let answer = result(&call(ids[2], &bob));
    assert_eq!(answer.get("isError"), None, "{answer}");
    let last = upstream.received().pop().expect("a request");
    let claims = forge::claims_of(last.bearer().expect("a bearer token"));
    assert_eq!(claims["sub"], "bob", "{claims}");
    assert_eq!(fleet.issuer.exchanges(), 2);

    // A new caller's first calls, at once through one node, share one exchange.
    let carol = fleet.token("carol");
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| s.spawn(|| result(&call(ids[1], &carol))))
            .collect();
        for call in calls {
            let answer = call.join().expect("a call");
            assert_eq!(answer.get("isError"), None, "{answer}");
        }
    });
    assert_eq!(
        fleet.issuer.exchanges(),
        3,
        "one exchange for carol's four calls"
    );
}

#[test]
fn without_authentication_token_for_fails_and_a_bad_upstream_is_a_tool_error() {
    let upstream = Upstream::start();
    let cluster = Cluster::builder()
        .program(crate::examples::example("conformance"))
        .env("MCP_FLEET_TOOLS__HTTP__TIMEOUT", "2s")
        .env("MCP_FLEET_TOOLS__HTTP__MAX_RESPONSE_BYTES", "1024")
        .start(1);
    let url = cluster.node(1).mcp_url();
    let call = |args: Value| {
        let reply = modern_call(&url, None, TOOL, args).expect("tools/call");
        result(&reply)
    };

    // ctx.http() works without a caller token.
    let answer = call(json!({ "url": upstream.url("/echo") }));
    assert_eq!(answer.get("isError"), None, "{answer}");
    assert_eq!(upstream.received()[0].authorization, None);

    let answer = call(json!({ "url": upstream.url("/echo"), "audience": AUDIENCE }));
    assert_eq!(answer["isError"], true, "{answer}");
    assert!(text(&answer).contains("--auth none"), "{answer}");
    assert_eq!(upstream.received().len(), 1, "nothing sent without a token");

    let started = Instant::now();
    let answer = call(json!({ "url": upstream.url("/hang") }));
    let waited = started.elapsed();
    assert_eq!(answer["isError"], true, "{answer}");
    assert!(text(&answer).contains("tools.http.timeout"), "{answer}");
    assert!(
        waited >= Duration::from_secs(2),
        "answered before the timeout: {waited:?}"
    );

    let answer = call(json!({ "url": upstream.url("/big?bytes=4096") }));
    assert_eq!(answer["isError"], true, "{answer}");
    assert!(
        text(&answer).contains("tools.http.max_response_bytes (1024 bytes)"),
        "{answer}"
    );
    let answer = call(json!({ "url": upstream.url("/big?bytes=1000") }));
    assert_eq!(answer.get("isError"), None, "under the cap: {answer}");
}
