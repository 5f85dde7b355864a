//! Operational endpoints and the endpoint's trailing-slash alias.

use serde_json::json;

use crate::client::{get, Modern, Session};
use crate::harness::Server;

#[test]
fn health_and_ready_are_200() {
    let server = Server::start();
    for path in ["/health", "/ready"] {
        let reply = get(&format!("{}{path}", server.base()), &[]);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert!(reply.json()["status"].is_string(), "{path}: {reply:?}");
    }
}

#[test]
fn the_endpoint_with_a_trailing_slash_serves_the_same() {
    let server = Server::start();
    let slash = format!("{}/", server.url());
    let plain = Modern::new("tools/list", json!({})).send(server.url());
    let slashed = Modern::new("tools/list", json!({})).send(&slash);
    assert_eq!(slashed.status, 200, "no redirect: {slashed:?}");
    assert_eq!(slashed.result()["tools"], plain.result()["tools"]);
    // Errors are the same too.
    Modern::new("no/such/method", json!({}))
        .send(&slash)
        .assert_error(404, -32601);
    // A session made on one path works on the other.
    let session = Session::initialize(&slash, "2025-06-18");
    assert_eq!(session.echo(server.url(), "plain").tool_text(), "plain");
    assert_eq!(session.echo(&slash, "slash").tool_text(), "slash");
    let reply = crate::client::delete(&slash, &session.headers());
    assert_eq!(reply.status, 204, "{reply:?}");
    session.echo(server.url(), "gone").assert_error(404, -32001);
}
