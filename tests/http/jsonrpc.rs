//! Bodies that are not the JSON-RPC a request needs: parse errors, invalid requests,
//! batches, unknown methods, a failed `initialize`.

use serde_json::{json, Value};

use crate::client::{post, request, Modern, Session};
use crate::harness::Server;

/// The server still answers a well-formed 2026-07-28 request.
#[track_caller]
pub fn assert_serving(server: &Server) {
    let reply = Modern::new("tools/list", json!({})).send(server.url());
    assert_eq!(reply.status, 200, "follow-up request: {reply:?}");
    assert!(reply.result()["tools"].is_array(), "{reply:?}");
}

#[test]
fn malformed_json_is_a_parse_error_with_a_null_id() {
    let server = Server::start();
    for body in [
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ",
        "not json at all",
        "",
    ] {
        let reply = post(
            server.url(),
            &[("MCP-Protocol-Version", "2026-07-28")],
            body,
        );
        reply.assert_error(400, -32700);
        assert_eq!(reply.json()["id"], Value::Null, "{reply:?}");
    }
    // The same inside a legacy session, which stays usable.
    let session = Session::initialize(server.url(), "2025-06-18");
    let reply = post(server.url(), &session.headers(), "{\"jsonrpc\":");
    reply.assert_error(400, -32700);
    assert_eq!(
        session.echo(server.url(), "still here").tool_text(),
        "still here"
    );
    assert_serving(&server);
}

#[test]
fn a_message_that_is_not_json_rpc_is_an_invalid_request() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-06-18");
    for body in [
        json!({ "id": 1, "method": "ping" }),
        json!({ "jsonrpc": "2.0", "id": 1, "method": 7 }),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1] }),
        json!("a string"),
    ] {
        let reply = post(server.url(), &session.headers(), &body.to_string());
        reply.assert_error(400, -32600);
    }
    assert_eq!(session.echo(server.url(), "ok").tool_text(), "ok");
}

#[test]
fn a_batch_is_refused_after_2025_03_26() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-06-18");
    assert_eq!(session.version, "2025-06-18");
    let batch = json!([
        request(1, "ping", json!({})),
        request(2, "tools/list", json!({}))
    ]);
    let reply = post(server.url(), &session.headers(), &batch.to_string());
    reply.assert_error(400, -32600);
    assert_eq!(
        session.echo(server.url(), "after batch").tool_text(),
        "after batch"
    );
}

#[test]
fn a_batch_works_in_2025_03_26() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-03-26");
    assert_eq!(session.version, "2025-03-26");
    let batch = json!([
        request(1, "ping", json!({})),
        { "jsonrpc": "2.0", "method": "notifications/progress", "params": { "progressToken": "x", "progress": 1 } },
        request(2, "tools/call", json!({ "name": "echo", "arguments": { "text": "batched" } })),
        request(3, "no/such/method", json!({})),
    ]);
    let reply = post(server.url(), &session.headers(), &batch.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let responses: Vec<Value> = serde_json::from_str(&reply.body).expect("a JSON array");
    assert_eq!(
        responses.len(),
        3,
        "one response per request, none for the notification: {reply:?}"
    );
    let by_id = |id: i64| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no response {id}"))
    };
    assert_eq!(by_id(1)["result"], json!({}));
    assert_eq!(by_id(2)["result"]["content"][0]["text"], "batched");
    assert_eq!(by_id(3)["error"]["code"], -32601);
}

#[test]
fn initialize_inside_a_batch_is_refused() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-03-26");
    let init = request(
        1,
        "initialize",
        json!({ "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } }),
    );
    let reply = post(server.url(), &session.headers(), &json!([init]).to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.header("mcp-session-id").is_none(),
        "no new session: {reply:?}"
    );
    let responses: Vec<Value> = serde_json::from_str(&reply.body).expect("a JSON array");
    assert_eq!(responses[0]["error"]["code"], -32600, "{reply:?}");
}

#[test]
fn an_unknown_method_is_200_in_a_legacy_session() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-11-25");
    let reply = session.send(server.url(), "no/such/method", json!({}));
    reply.assert_error(200, -32601);
    assert_eq!(reply.json()["id"], 1);
    assert_eq!(session.echo(server.url(), "x").tool_text(), "x");
}

#[test]
fn an_unknown_method_is_404_in_2026_07_28() {
    let server = Server::start();
    let reply = Modern::new("no/such/method", json!({})).send(server.url());
    reply.assert_error(404, -32601);
    assert_eq!(reply.json()["id"], 1);
    // Methods of the legacy era only are unknown here too.
    let reply = Modern::new("logging/setLevel", json!({ "level": "info" })).send(server.url());
    reply.assert_error(404, -32601);
    assert_serving(&server);
}

#[test]
fn a_failed_initialize_creates_no_session() {
    let server = Server::start();
    for params in [
        json!({ "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } }),
        json!({ "protocolVersion": "2025-06-18", "capabilities": "none", "clientInfo": { "name": "t", "version": "0" } }),
    ] {
        let reply = post(
            server.url(),
            &[],
            &request(5, "initialize", params).to_string(),
        );
        reply.assert_error(400, -32602);
        assert_eq!(reply.json()["id"], 5);
        assert!(
            reply.header("mcp-session-id").is_none(),
            "a failed initialize handed out a session: {reply:?}"
        );
    }
    let session = Session::initialize(server.url(), "2025-06-18");
    assert_eq!(session.echo(server.url(), "fine").tool_text(), "fine");
}
