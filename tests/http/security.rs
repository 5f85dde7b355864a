//! DNS-rebinding protection, CORS, and body size limits.

use serde_json::json;

use crate::client::{options, post, post_chunked, request, Modern, Session};
use crate::harness::Server;
use crate::jsonrpc::assert_serving;

fn init_body() -> String {
    let params = json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": { "name": "browser", "version": "0" },
    });
    request(0, "initialize", params).to_string()
}

/// A 403 with a JSON-RPC error body.
#[track_caller]
fn assert_forbidden(reply: &crate::client::Reply) {
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply.error_code().is_some(),
        "a JSON-RPC error body: {reply:?}"
    );
}

#[test]
fn a_foreign_origin_is_403() {
    let server = Server::start();
    let reply = Modern::new("tools/list", json!({}))
        .header("Origin", "http://evil.example.com")
        .send(server.url());
    assert_forbidden(&reply);
    // A refused initialize hands out no session.
    let reply = post(
        server.url(),
        &[("Origin", "http://evil.example.com")],
        &init_body(),
    );
    assert_forbidden(&reply);
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    // Look-alikes of loopback are foreign too.
    let reply = Modern::new("tools/list", json!({}))
        .header("Origin", "http://localhost.evil.example.com")
        .send(server.url());
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_serving(&server);
}

#[test]
fn a_loopback_origin_is_allowed_and_echoed() {
    let server = Server::start();
    let origin = "http://localhost:1234";
    let reply = Modern::new("tools/list", json!({}))
        .header("Origin", origin)
        .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(origin),
        "{reply:?}"
    );
    // The session id is readable by browser code on the real response.
    let reply = post(server.url(), &[("Origin", origin)], &init_body());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("mcp-session-id").is_some(), "{reply:?}");
    let exposed = reply
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("mcp-session-id"),
        "expose-headers: {reply:?}"
    );
}

#[test]
fn a_foreign_host_is_403() {
    let server = Server::start();
    let reply = Modern::new("tools/list", json!({}))
        .header("Host", "evil.example.com")
        .send(server.url());
    assert_forbidden(&reply);
    let reply = post(
        server.url(),
        &[("Host", "evil.example.com:80")],
        &init_body(),
    );
    assert_forbidden(&reply);
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    let port = server.base().rsplit(':').next().expect("a port").to_owned();
    let reply = Modern::new("tools/list", json!({}))
        .header("Host", &format!("localhost:{port}"))
        .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn a_node_on_another_loopback_address_accepts_its_own_url_and_refuses_foreign_hosts() {
    let server = Server::builder().listen("127.0.0.2:0").start();
    let own = server.base().trim_start_matches("http://").to_owned();
    assert!(own.starts_with("127.0.0.2:"), "{own}");
    let reply = Modern::new("tools/list", json!({}))
        .header("Host", &own)
        .send(server.url());
    assert_eq!(reply.status, 200, "Host {own}: {reply:?}");
    let reply = Modern::new("tools/list", json!({}))
        .header("Host", "evil.example.com")
        .send(server.url());
    assert_forbidden(&reply);
    let port = own.rsplit(':').next().expect("a port");
    let reply = Modern::new("tools/list", json!({}))
        .header("Host", &format!("127.0.0.3:{port}"))
        .send(server.url());
    assert_forbidden(&reply);
}

#[test]
fn allowed_hosts_from_the_environment_take_a_toml_list() {
    let server = Server::builder()
        .env(
            "MCP_FLEET_HTTP__ALLOWED_HOSTS",
            r#"["a.example.com","b.example.com"]"#,
        )
        .start();
    for host in ["a.example.com", "b.example.com:8080"] {
        let reply = Modern::new("tools/list", json!({}))
            .header("Host", host)
            .send(server.url());
        assert_eq!(reply.status, 200, "Host {host}: {reply:?}");
    }
    let reply = Modern::new("tools/list", json!({}))
        .header("Host", "c.example.com")
        .send(server.url());
    assert_forbidden(&reply);
}

#[test]
fn a_preflight_from_a_loopback_origin_allows_the_mcp_headers() {
    let server = Server::start();
    let reply = options(
        server.url(),
        &[
            ("Origin", "http://localhost:6274"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type, mcp-session-id, mcp-protocol-version",
            ),
        ],
    );
    assert!((200..300).contains(&reply.status), "{reply:?}");
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://localhost:6274"),
        "{reply:?}"
    );
    let allowed = reply
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in ["mcp-session-id", "mcp-protocol-version", "content-type"] {
        assert!(
            allowed.contains(name),
            "{name} not in allow-headers: {reply:?}"
        );
    }
    // A preflight from a foreign origin grants nothing.
    let reply = options(
        server.url(),
        &[
            ("Origin", "http://evil.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
    );
    assert!(
        reply.header("access-control-allow-origin").is_none(),
        "{reply:?}"
    );
}

/// A JSON-RPC request padded to at least `size` bytes.
fn padded(size: usize) -> String {
    let params = json!({ "name": "echo", "arguments": { "text": "x".repeat(size) } });
    request(1, "tools/call", params).to_string()
}

#[test]
fn a_body_over_the_configured_limit_is_413() {
    let server = Server::builder()
        .config("[http]\nmax_body_bytes = 1024\n")
        .start();
    let session = Session::initialize(server.url(), "2025-06-18");
    post(server.url(), &session.headers(), &padded(2048)).assert_error(413, -32600);
    // Without Content-Length the limit holds while reading.
    post_chunked(server.url(), padded(4096).into_bytes()).assert_error(413, -32600);
    // Just under the limit is fine, and the session is unharmed.
    let reply = session.echo(server.url(), &"y".repeat(800));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.tool_text().len(), 800);
}

#[test]
fn a_body_over_4_mib_is_413_by_default() {
    let server = Server::start();
    post(server.url(), &[], &padded(4 * 1024 * 1024 + 1)).assert_error(413, -32600);
    assert_serving(&server);
}
