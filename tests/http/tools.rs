//! Tools that fail: a timeout becomes an `isError` result, a panic an internal error, and
//! neither takes the server down.

use serde_json::json;

use crate::client::{Modern, Session};
use crate::harness::Server;
use crate::jsonrpc::assert_serving;

#[test]
fn a_tool_past_its_timeout_is_an_error_result() {
    let server = Server::builder()
        .conformance()
        .config("[tools.per_tool.test_tool_with_progress]\ntimeout = \"20ms\"\n")
        .start();
    let reply = Modern::call("test_tool_with_progress", json!({})).send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = reply.result();
    assert_eq!(result["isError"], true, "{reply:?}");
    assert!(reply.tool_text().contains("timed out"), "{reply:?}");
    // The same in a legacy session, which stays usable.
    let session = Session::initialize(server.url(), "2025-11-25");
    let reply = session.send(
        server.url(),
        "tools/call",
        json!({ "name": "test_tool_with_progress", "arguments": {} }),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.result()["isError"], true, "{reply:?}");
    assert!(reply.tool_text().contains("timed out"), "{reply:?}");
    assert_eq!(session.echo(server.url(), "next").tool_text(), "next");
    // Other tools keep the default timeout.
    let reply = Modern::call("test_simple_text", json!({})).send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_ne!(reply.result()["isError"], true, "{reply:?}");
    assert_serving(&server);
}

#[test]
fn a_panicking_tool_is_an_internal_error() {
    let server = Server::builder().conformance().start();
    let reply = Modern::call("test_panic", json!({})).send(server.url());
    reply.assert_error(200, -32603);
    let reply = Modern::call("test_panic", json!({})).send(server.url());
    reply.assert_error(200, -32603);
    let session = Session::initialize(server.url(), "2025-06-18");
    let reply = session.send(
        server.url(),
        "tools/call",
        json!({ "name": "test_panic", "arguments": {} }),
    );
    reply.assert_error(200, -32603);
    assert_eq!(
        session.echo(server.url(), "survived").tool_text(),
        "survived"
    );
    assert_serving(&server);
}
