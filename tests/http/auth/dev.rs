//! The development issuer of `--auth dev`.

use super::*;

#[test]
fn auth_dev_prints_a_working_token_and_mints_more() {
    let server = Server::builder().args(&["--auth", "dev"]).start();
    let line = server.stdout_line(2);
    let printed = line
        .strip_prefix("mcp-fleet bearer token: ")
        .unwrap_or_else(|| panic!("third line {line:?}"))
        .to_owned();
    let who = assert_accepted(&server, &printed, "dev-user");
    assert!(who["scopes"].is_array(), "{who}");

    // The client snippet carries the same URL and token.
    let line = server.stdout_line(3);
    let snippet: Value = serde_json::from_str(
        line.strip_prefix("mcp-fleet client config: ")
            .unwrap_or_else(|| panic!("fourth line {line:?}")),
    )
    .unwrap_or_else(|e| panic!("client config is not JSON ({e}): {line}"));
    let servers = snippet["mcpServers"]
        .as_object()
        .unwrap_or_else(|| panic!("no mcpServers: {snippet}"));
    let expected = bearer(&printed);
    assert!(
        servers.values().any(|s| s["url"] == server.url()
            && s["headers"]["Authorization"] == expected.as_str()),
        "{snippet}"
    );

    // The issuer is published and is what the metadata names.
    let dev_issuer = format!("{}/dev-issuer", server.base());
    let reply = get(
        &format!("{dev_issuer}/.well-known/openid-configuration"),
        &[],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["issuer"], dev_issuer.as_str(), "{reply:?}");
    let reply = get(&format!("{dev_issuer}/jwks.json"), &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        !reply.json()["keys"].as_array().expect("keys").is_empty(),
        "{reply:?}"
    );
    let reply = get(&metadata_url(&server), &[]);
    assert_eq!(
        reply.json()["authorization_servers"],
        json!([dev_issuer]),
        "{reply:?}"
    );

    // More tokens, for anyone.
    let body = json!({
        "subject": "alice", "scopes": ["a", "b"], "tenant": "acme", "email": "alice@example.com",
    });
    let reply = post(&format!("{dev_issuer}/token"), &[], &body.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let minted = reply.json();
    assert_eq!(minted["token_type"], "Bearer", "{minted}");
    assert_eq!(minted["expires_in"], 86400, "{minted}");
    let access = minted["access_token"].as_str().expect("an access token");
    let who = assert_accepted(&server, access, "alice");
    assert_eq!(
        who,
        json!({ "subject": "alice", "tenant": "acme", "email": "alice@example.com",
                "scopes": ["a", "b"] })
    );

    let reply = modern(&server, None, "tools/list", json!({}));
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_invalid_token_without_scope(&server, "not-a-token");
}

/// Asserts a 401 `invalid_token` for `token` on a server that requires no scope.
#[track_caller]
fn assert_invalid_token_without_scope(server: &Server, token: &str) {
    let reply = whoami(server, token);
    assert_401(server, &reply, Some("invalid_token"), None);
}

#[test]
fn auth_dev_off_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data").display().to_string();
    let (ok, out) = run_cli(&[
        "dev",
        "--listen",
        "0.0.0.0:0",
        "--auth",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(!ok, "--auth dev started on 0.0.0.0:\n{out}");
    assert!(out.contains("auth"), "{out}");
}

#[test]
fn the_development_issuer_mints_tokens_only_for_a_loopback_host_and_origin() {
    let server = Server::builder().args(&["--auth", "dev"]).start();
    let endpoint = format!("{}/dev-issuer/token", server.base());
    let body = json!({ "subject": "mallory", "scopes": ["mcp"] }).to_string();
    let json = ("Content-Type", "application/json");
    // What a page reaches after DNS rebinding: its own name in Host, its own origin.
    for headers in [
        vec![json, ("Host", "evil.example.com")],
        vec![json, ("Host", "evil.example.com:80")],
        vec![json, ("Origin", "http://evil.example.com")],
    ] {
        let reply = post(&endpoint, &headers, &body);
        assert_eq!(reply.status, 403, "{headers:?}: {reply:?}");
        assert!(!reply.body.contains("access_token"), "{reply:?}");
    }
    let port = server.base().rsplit(':').next().expect("a port").to_owned();
    let localhost = format!("localhost:{port}");
    for headers in [
        vec![json],
        vec![json, ("Host", localhost.as_str())],
        vec![json, ("Origin", BROWSER)],
    ] {
        let reply = post(&endpoint, &headers, &body);
        assert_eq!(reply.status, 200, "{headers:?}: {reply:?}");
        let minted = reply.json();
        let access = minted["access_token"].as_str().expect("an access token");
        assert_accepted(&server, access, "mallory");
    }
}
