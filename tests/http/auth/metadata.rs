//! The RFC 9728 protected-resource metadata and the resource URL.

use super::*;

#[test]
fn the_protected_resource_metadata_names_this_resource_and_its_issuer() {
    let issuer = Issuer::start();
    let server = start(&issuer, &format!("{REQUIRED}\n{ECHO_SCOPES}"), "");
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let url = format!("{}{path}", server.base());
        let reply = get(&url, &[("Origin", BROWSER)]);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{path}: {reply:?}"
        );
        let document = reply.json();
        assert_eq!(document["resource"], server.url(), "{path}: {document}");
        assert_eq!(
            document["authorization_servers"],
            json!([issuer.url()]),
            "{path}: {document}"
        );
        assert_eq!(
            document["bearer_methods_supported"],
            json!(["header"]),
            "{path}: {document}"
        );
        let scopes = document["scopes_supported"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: scopes_supported in {document}"));
        for scope in ["mcp", "echo:call"] {
            assert!(scopes.iter().any(|s| s == scope), "{path}: {document}");
        }
        // Readable from a browser: the real response carries CORS headers…
        let allowed = reply.header("access-control-allow-origin");
        assert!(
            allowed == Some(BROWSER) || allowed == Some("*"),
            "{path}: {reply:?}"
        );
        // …and so does a preflight.
        let preflight = options(
            &url,
            &[
                ("Origin", BROWSER),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        assert!(
            (200..300).contains(&preflight.status),
            "{path}: {preflight:?}"
        );
        let allowed = preflight.header("access-control-allow-origin");
        assert!(
            allowed == Some(BROWSER) || allowed == Some("*"),
            "{path}: {preflight:?}"
        );
    }
    // It needs no token, and the server does not mirror the issuer's metadata.
    let mirrored = get(
        &format!("{}/.well-known/oauth-authorization-server", server.base()),
        &[],
    );
    assert_eq!(mirrored.status, 404, "{mirrored:?}");
}

#[test]
fn without_authentication_there_is_no_protected_resource_metadata() {
    let server = Server::builder().args(&["--auth", "none"]).start();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let reply = get(&format!("{}{path}", server.base()), &[]);
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
    }
}

#[test]
fn the_public_url_is_the_resource_and_the_audience() {
    let issuer = Issuer::start();
    let public = "https://mcp.example.com/mcp";
    let server = Server::builder()
        .config(&toml(&issuer, REQUIRED, ""))
        .args(&["--auth", "jwt", "--public-url", public])
        .start();
    let reply = get(
        &format!("{}/.well-known/oauth-protected-resource/mcp", server.base()),
        &[],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["resource"], public, "{reply:?}");
    let reply = modern(&server, None, "tools/list", json!({}));
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(
        Challenge::of(&reply).get("resource_metadata"),
        Some("https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
        "{reply:?}"
    );
    let for_public = issuer.token(Key::Rsa1, public).scope("mcp").sign();
    assert_accepted(&server, &for_public, "alice");
    let for_local = token(&issuer, &server, Key::Rsa1).sign();
    let reply = whoami(&server, &for_local);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(
        Challenge::of(&reply).get("error"),
        Some("invalid_token"),
        "{reply:?}"
    );
}

#[test]
fn an_explicit_audience_is_accepted() {
    let issuer = Issuer::start();
    let audience = "https://api.example.com";
    let jwks = issuer.jwks_uri();
    let server = Server::builder()
        .args(&["--auth", "jwt", "--issuer", issuer.url()])
        .args(&["--jwks-uri", &jwks, "--audience", audience])
        .start();
    let aimed = issuer.token(Key::Rsa1, audience).sign();
    assert_accepted(&server, &aimed, "alice");
    let astray = issuer.token(Key::Rsa1, "https://other.example.com").sign();
    let reply = whoami(&server, &astray);
    assert_401(&server, &reply, Some("invalid_token"), None);
}
