//! Legacy sessions: missing, unknown and ended ids, unsupported versions, GET and DELETE
//! without a session, and sessions surviving a restart.

use serde_json::json;

use crate::client::{delete, get, post, request, with_meta, Session};
use crate::harness::Server;
use crate::jsonrpc::assert_serving;

#[test]
fn an_unknown_session_id_is_404() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-06-18");
    let headers = [
        ("Mcp-Session-Id", "no-such-session"),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let reply = post(
        server.url(),
        &headers,
        &request(1, "tools/list", json!({})).to_string(),
    );
    reply.assert_error(404, -32001);
    // Nor does the unknown id open a stream or end anything.
    let reply = get(
        server.url(),
        &[
            ("Mcp-Session-Id", "no-such-session"),
            ("Accept", "text/event-stream"),
        ],
    );
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = delete(server.url(), &[("Mcp-Session-Id", "no-such-session")]);
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(session.echo(server.url(), "mine").tool_text(), "mine");
}

#[test]
fn a_deleted_session_is_404() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-11-25");
    let other = Session::initialize(server.url(), "2025-11-25");
    assert_ne!(session.id, other.id);
    let reply = delete(server.url(), &session.headers());
    assert_eq!(reply.status, 204, "{reply:?}");
    session.echo(server.url(), "gone").assert_error(404, -32001);
    let reply = delete(server.url(), &session.headers());
    assert_eq!(reply.status, 404, "a second DELETE: {reply:?}");
    // Ending one session leaves the others alone.
    assert_eq!(other.echo(server.url(), "alive").tool_text(), "alive");
}

#[test]
fn a_legacy_request_without_a_session_id_is_400() {
    let server = Server::start();
    let body = request(1, "tools/list", json!({})).to_string();
    post(server.url(), &[], &body).assert_error(400, -32000);
    post(
        server.url(),
        &[("MCP-Protocol-Version", "2025-06-18")],
        &body,
    )
    .assert_error(400, -32000);
    assert_serving(&server);
}

#[test]
fn get_and_delete_without_a_session_id_are_405() {
    let server = Server::start();
    let reply = get(server.url(), &[("Accept", "text/event-stream")]);
    assert_eq!(reply.status, 405, "{reply:?}");
    let reply = delete(server.url(), &[]);
    assert_eq!(reply.status, 405, "{reply:?}");
    // 2026-07-28 clients send the version header; still no GET stream or DELETE.
    let reply = get(
        server.url(),
        &[
            ("Accept", "text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"),
        ],
    );
    assert_eq!(reply.status, 405, "{reply:?}");
    let reply = delete(server.url(), &[("MCP-Protocol-Version", "2026-07-28")]);
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_serving(&server);
}

#[track_caller]
fn assert_unsupported(reply: &crate::client::Reply, requested: &str) {
    reply.assert_error(400, -32022);
    let data = &reply.json()["error"]["data"];
    let supported = data["supported"]
        .as_array()
        .unwrap_or_else(|| panic!("data.supported: {reply:?}"));
    for version in ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"] {
        assert!(
            supported.iter().any(|v| v == version),
            "{version} missing from {reply:?}"
        );
    }
    assert_eq!(data["requested"], requested, "{reply:?}");
}

#[test]
fn an_unsupported_version_header_is_400_listing_the_supported_ones() {
    let server = Server::start();
    let session = Session::initialize(server.url(), "2025-06-18");
    let headers = [
        ("Mcp-Session-Id", session.id.as_str()),
        ("MCP-Protocol-Version", "1999-01-01"),
    ];
    let body = request(1, "tools/list", json!({})).to_string();
    assert_unsupported(&post(server.url(), &headers, &body), "1999-01-01");
    // Without a session or _meta as well.
    assert_unsupported(
        &post(
            server.url(),
            &[("MCP-Protocol-Version", "1999-01-01")],
            &body,
        ),
        "1999-01-01",
    );
    // A stateless request naming the version in both places.
    let body = request(
        1,
        "tools/list",
        with_meta(json!({}), "1999-01-01", json!({})),
    );
    let headers = [
        ("MCP-Protocol-Version", "1999-01-01"),
        ("Mcp-Method", "tools/list"),
    ];
    assert_unsupported(
        &post(server.url(), &headers, &body.to_string()),
        "1999-01-01",
    );
    // The session is untouched.
    assert_eq!(session.echo(server.url(), "v").tool_text(), "v");
    assert_serving(&server);
}

#[test]
fn a_session_survives_a_restart_on_the_same_data_dir() {
    let mut server = Server::start();
    let session = Session::initialize(server.url(), "2025-06-18");
    assert_eq!(session.echo(server.url(), "before").tool_text(), "before");
    let old_url = server.url().to_owned();
    server.restart();
    assert_ne!(server.url(), old_url, "a new process on a new port");
    let reply = session.echo(server.url(), "after restart");
    assert_eq!(reply.status, 200, "{reply:?}\nlog:\n{}", server.log());
    assert_eq!(reply.tool_text(), "after restart");
    let headers = [
        ("Mcp-Session-Id", "never-issued"),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let body = request(1, "tools/list", json!({})).to_string();
    post(server.url(), &headers, &body).assert_error(404, -32001);
}
