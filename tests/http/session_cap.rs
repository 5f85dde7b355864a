//! The cap on legacy sessions per principal (`sessions.max_per_principal`): past it,
//! `initialize` is 429 naming the cap, sessions already held keep working, ending one
//! makes room, and other principals are not affected.

use serde_json::json;

use crate::client::{delete, get, post, request, Reply};
use crate::harness::Server;
use crate::metrics::sample;

/// The cluster secret of the server these tests start, for `/metrics`.
const SECRET: &str = "session-cap-tests-cluster-secret";
/// The legacy version these tests speak.
const LEGACY: &str = "2025-11-25";
/// JSON-RPC error code of a count cap reached.
const LIMIT_EXCEEDED: i64 = -32010;

/// A bearer token for `subject` from the development issuer.
fn token(server: &Server, subject: &str) -> String {
    let url = format!("{}/dev-issuer/token", server.base());
    let reply = post(&url, &[], &json!({ "subject": subject }).to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let token = reply.json()["access_token"].as_str().map(str::to_owned);
    format!("Bearer {}", token.expect("an access token"))
}

fn initialize(server: &Server, bearer: &str) -> Reply {
    let params = json!({
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": { "name": "cap-tests", "version": "0" },
    });
    let body = request(0, "initialize", params).to_string();
    post(server.url(), &[("Authorization", bearer)], &body)
}

/// Opens a session as `bearer`; returns its id.
fn open(server: &Server, bearer: &str) -> String {
    let reply = initialize(server, bearer);
    assert_eq!(reply.status, 200, "initialize: {reply:?}");
    reply
        .header("mcp-session-id")
        .expect("a session id")
        .to_owned()
}

fn headers<'a>(id: &'a str, bearer: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("Authorization", bearer),
        ("Mcp-Session-Id", id),
        ("MCP-Protocol-Version", LEGACY),
    ]
}

fn echo(server: &Server, id: &str, bearer: &str) -> Reply {
    let params = json!({ "name": "echo", "arguments": { "text": "still here" } });
    let body = request(1, "tools/call", params).to_string();
    post(server.url(), &headers(id, bearer), &body)
}

fn metrics(server: &Server) -> String {
    let url = format!("http://{}/metrics", server.internal());
    let reply = get(&url, &[("authorization", &format!("Bearer {SECRET}"))]);
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

#[test]
fn a_principal_past_its_session_cap_is_429_until_one_ends_and_others_are_unaffected() {
    let server = Server::builder()
        .args(&["--auth", "dev"])
        .config("[sessions]\nmax_per_principal = 2\n")
        .env("MCP_FLEET_CLUSTER_SECRET", SECRET)
        .start();
    let refusals = "mcp_fleet_limit_refusals_total{limit=\"sessions.max_per_principal\"}";
    let in_use = "mcp_fleet_limit_in_use{limit=\"sessions.max_per_principal\"}";
    let before = metrics(&server);
    assert_eq!(sample(&before, refusals), Some(0.0), "{before}");

    let (alice, bob) = (token(&server, "alice"), token(&server, "bob"));
    let first = open(&server, &alice);
    let second = open(&server, &alice);

    let refused = initialize(&server, &alice);
    refused.assert_error(429, LIMIT_EXCEEDED);
    assert!(refused.header("mcp-session-id").is_none(), "{refused:?}");
    let error = &refused.json()["error"];
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.contains("sessions.max_per_principal") && message.contains('2'),
        "{refused:?}"
    );
    assert_eq!(error["data"]["limit"], "sessions.max_per_principal");
    assert_eq!(error["data"]["max"], 2);

    // Nothing was evicted to make room: both sessions still work.
    for id in [&first, &second] {
        let reply = echo(&server, id, &alice);
        assert_eq!(reply.tool_text(), "still here", "{reply:?}");
    }
    // Another principal has a cap of its own.
    let bobs = open(&server, &bob);
    assert_eq!(echo(&server, &bobs, &bob).tool_text(), "still here");

    // Ending one of alice's sessions makes room for exactly one more.
    let reply = delete(server.url(), &headers(&first, &alice));
    assert_eq!(reply.status, 204, "{reply:?}");
    let third = open(&server, &alice);
    assert_eq!(echo(&server, &third, &alice).tool_text(), "still here");
    initialize(&server, &alice).assert_error(429, LIMIT_EXCEEDED);

    let after = metrics(&server);
    assert_eq!(sample(&after, refusals), Some(2.0), "{after}");
    assert_eq!(sample(&after, in_use), Some(3.0), "{after}");
}
