//! 2026-07-28 requests whose mirrored headers disagree with the body, or are missing.

use serde_json::json;

use crate::client::{with_meta, Modern, MODERN};
use crate::harness::Server;
use crate::jsonrpc::assert_serving;

fn echo(text: &str) -> Modern {
    Modern::call("echo", json!({ "text": text }))
}

#[test]
fn a_mismatched_mcp_method_is_a_header_mismatch() {
    let server = Server::start();
    let reply = Modern::new("tools/list", json!({}))
        .header("Mcp-Method", "prompts/list")
        .send(server.url());
    reply.assert_error(400, -32020);
    assert_eq!(reply.json()["id"], 1);
    let reply = Modern::new("tools/list", json!({}))
        .drop_header("Mcp-Method")
        .send(server.url());
    reply.assert_error(400, -32020);
    // Header values are case-sensitive.
    let reply = Modern::new("tools/list", json!({}))
        .header("Mcp-Method", "TOOLS/LIST")
        .send(server.url());
    reply.assert_error(400, -32020);
    assert_serving(&server);
}

#[test]
fn a_missing_mcp_name_is_a_header_mismatch() {
    let server = Server::start();
    echo("x")
        .drop_header("Mcp-Name")
        .send(server.url())
        .assert_error(400, -32020);
    let read = Modern::new("resources/read", json!({ "uri": "test://static-text" }));
    read.drop_header("Mcp-Name")
        .send(server.url())
        .assert_error(400, -32020);
    let prompt = Modern::new("prompts/get", json!({ "name": "p" }));
    prompt
        .drop_header("Mcp-Name")
        .send(server.url())
        .assert_error(400, -32020);
    assert_eq!(echo("y").send(server.url()).tool_text(), "y");
}

#[test]
fn a_mismatched_mcp_name_is_a_header_mismatch() {
    let server = Server::start();
    // A gateway routing on the header would run `whoami`; the body says `echo`.
    let reply = echo("x").header("Mcp-Name", "whoami").send(server.url());
    reply.assert_error(400, -32020);
    let reply = echo("x")
        .header("Mcp-Name", "=?base64?d2hvYW1p?=")
        .send(server.url());
    reply.assert_error(400, -32020);
    let reply = echo("x")
        .header("Mcp-Name", "=?base64?not base64!?=")
        .send(server.url());
    reply.assert_error(400, -32020);
    assert_eq!(echo("z").send(server.url()).tool_text(), "z");
}

#[test]
fn a_base64_mcp_name_that_matches_is_accepted() {
    let server = Server::start();
    // "echo" in the sentinel form.
    let reply = echo("encoded")
        .header("Mcp-Name", "=?base64?ZWNobw==?=")
        .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.tool_text(), "encoded");
}

#[test]
fn a_legacy_version_header_over_a_modern_body_is_a_header_mismatch() {
    let server = Server::start();
    // The header names a legacy version, the body's _meta 2026-07-28, and there is no
    // session: the header disagrees with the body, whatever era either names.
    let reply = echo("x")
        .header("MCP-Protocol-Version", "2025-11-25")
        .send(server.url());
    reply.assert_error(400, -32020);
    assert_serving(&server);
}

#[test]
fn a_version_header_that_differs_from_meta_is_a_header_mismatch() {
    let server = Server::start();
    // The header names 2026-07-28, the body a legacy version.
    let request = echo("x");
    let mut body = request.body();
    body["params"] = with_meta(body["params"].clone(), "2025-11-25", json!({}));
    request
        .send_body(server.url(), &body)
        .assert_error(400, -32020);
    // The header is missing.
    echo("x")
        .drop_header("MCP-Protocol-Version")
        .send(server.url())
        .assert_error(400, -32020);
    let reply = echo("matching")
        .header("MCP-Protocol-Version", MODERN)
        .send(server.url());
    assert_eq!(reply.tool_text(), "matching");
    assert_serving(&server);
}

#[test]
fn a_session_id_is_ignored_in_2026_07_28() {
    let server = Server::start();
    let reply = echo("stateless")
        .header("Mcp-Session-Id", "made-up")
        .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.tool_text(), "stateless");
    assert_eq!(reply.result()["resultType"], "complete");
}

/// A call of `test_mirrored_params`, whose `region` and `limit` travel in headers too.
fn mirrored(arguments: serde_json::Value) -> Modern {
    Modern::call("test_mirrored_params", arguments)
}

#[test]
fn mirrored_parameters_must_match_their_headers() {
    let server = Server::builder().conformance().start();
    let args = json!({ "region": "us-west1", "limit": 42 });
    // Matching headers, an integer written as a decimal, and the base64 form are accepted.
    let ok = mirrored(args.clone())
        .header("Mcp-Param-Region", "us-west1")
        .header("Mcp-Param-Limit", "42.0")
        .send(server.url());
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.tool_text(), "region=us-west1, limit=42");
    let encoded = mirrored(args.clone())
        .header("Mcp-Param-Region", "=?base64?dXMtd2VzdDE=?=")
        .header("Mcp-Param-Limit", "42")
        .send(server.url());
    assert_eq!(encoded.status, 200, "{encoded:?}");
    // An absent optional argument needs no header.
    let no_limit = mirrored(json!({ "region": "eu" }))
        .header("Mcp-Param-Region", "eu")
        .send(server.url());
    assert_eq!(no_limit.tool_text(), "region=eu, limit=none");

    // A different value, a missing header, a header without its argument: all -32020.
    for bad in [
        mirrored(args.clone())
            .header("Mcp-Param-Region", "us-east1")
            .header("Mcp-Param-Limit", "42"),
        mirrored(args.clone()).header("Mcp-Param-Limit", "42"),
        mirrored(json!({ "region": "eu" }))
            .header("Mcp-Param-Region", "eu")
            .header("Mcp-Param-Limit", "7"),
        mirrored(args.clone())
            .header("Mcp-Param-Region", "=?base64?not base64?=")
            .header("Mcp-Param-Limit", "42"),
    ] {
        bad.send(server.url()).assert_error(400, -32020);
    }
    assert_serving(&server);
}

#[test]
fn methods_removed_in_2026_07_28_are_not_found() {
    let server = Server::start();
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
    ] {
        let params = if method == "initialize" {
            json!({ "protocolVersion": MODERN, "capabilities": {} })
        } else {
            json!({ "level": "info", "uri": "test://static-text" })
        };
        let reply = Modern::new(method, params).send(server.url());
        reply.assert_error(404, -32601);
        assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    }
    assert_serving(&server);
}
