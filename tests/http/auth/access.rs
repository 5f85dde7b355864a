//! Opaque tokens, scopes, and sessions bound to their principal.

use super::*;

/// The issuer lines of a server that introspects opaque tokens at `issuer`.
fn introspection(issuer: &Issuer) -> String {
    format!(
        "[auth.issuers.introspection]\nendpoint = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
        issuer.introspection_endpoint()
    )
}

#[test]
fn an_active_opaque_token_is_accepted_as_its_subject() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, &introspection(&issuer));
    let opaque = issuer.opaque(json!({
        "sub": "carol",
        "scope": "mcp",
        "email": "carol@example.com",
        "iss": issuer.url(),
        "aud": server.url(),
        "client_id": "some-client",
        "token_type": "Bearer",
        "iat": now(),
        "exp": now() + 3600,
    }));
    let who = assert_accepted(&server, &opaque, "carol");
    assert_eq!(who["scopes"], json!(["mcp"]), "{who}");
    assert_eq!(who["email"], "carol@example.com", "{who}");
    assert!(issuer.requests("/introspect") >= 1, "never introspected");
    // Usable for a legacy session too.
    let session = Legacy::initialize(&server, &opaque);
    let reply = session.call(&server, &opaque, "whoami", json!({}));
    assert_whoami(&reply, "carol");
    // JWTs from the same issuer keep working beside it.
    assert_accepted(&server, &token(&issuer, &server, Key::Rsa1).sign(), "alice");
}

#[test]
fn an_inactive_opaque_token_is_401_and_asked_about_again() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, &introspection(&issuer));
    let unknown = "opaque-never-issued-0123456789";
    assert_invalid_token(&server, unknown);
    let asked = issuer.requests("/introspect");
    assert!(asked >= 1, "never introspected");
    // The refusal is not cached: the next use asks again (and may find it active).
    let reply = whoami(&server, unknown);
    assert_401(&server, &reply, Some("invalid_token"), Some("mcp"));
    assert!(
        issuer.requests("/introspect") > asked,
        "an inactive answer was cached"
    );
    issuer.activate(
        unknown,
        json!({ "sub": "dave", "scope": "mcp", "iss": issuer.url(), "aud": server.url(),
                "exp": now() + 3600 }),
    );
    assert_accepted(&server, unknown, "dave");
}

#[test]
fn a_tool_scope_the_token_lacks_is_403_and_hidden_from_tools_list() {
    let issuer = Issuer::start();
    let server = start(&issuer, &format!("{REQUIRED}\n{ECHO_SCOPES}"), "");
    let basic = token(&issuer, &server, Key::Rsa1).sign();
    let names = tool_names(&server, &basic);
    assert!(names.iter().any(|n| n == "whoami"), "{names:?}");
    assert!(!names.iter().any(|n| n == "echo"), "{names:?}");

    let step_up = |reply: &Reply| {
        assert_eq!(reply.status, 403, "{reply:?}");
        let challenge = Challenge::of(reply);
        assert!(
            challenge.scheme.eq_ignore_ascii_case("bearer"),
            "{challenge:?}"
        );
        assert_eq!(
            challenge.get("error"),
            Some("insufficient_scope"),
            "{challenge:?}"
        );
        // Every scope the call needs, the held `mcp` included.
        assert_eq!(challenge.scopes(), ["echo:call", "mcp"], "{challenge:?}");
        assert_eq!(
            challenge.get("resource_metadata"),
            Some(metadata_url(&server).as_str()),
            "{challenge:?}"
        );
        assert!(reply.json()["error"]["code"].is_i64(), "{reply:?}");
    };
    step_up(&call(
        &server,
        Some(&basic),
        "echo",
        json!({ "text": "hi" }),
    ));
    let session = Legacy::initialize(&server, &basic);
    step_up(&session.call(&server, &basic, "echo", json!({ "text": "hi" })));
    // The tools it may call still work.
    assert_whoami(&session.call(&server, &basic, "whoami", json!({})), "alice");

    let stepped = token(&issuer, &server, Key::Rsa1)
        .scope("mcp echo:call")
        .sign();
    let names = tool_names(&server, &stepped);
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
    let reply = call(&server, Some(&stepped), "echo", json!({ "text": "hi" }));
    assert_eq!(reply.tool_text(), "hi", "{reply:?}");
}

#[test]
fn a_token_without_the_required_scope_is_403_naming_it() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    let unscoped = token(&issuer, &server, Key::Rsa1).scope("profile").sign();
    let reply = modern(&server, Some(&unscoped), "tools/list", json!({}));
    assert_eq!(reply.status, 403, "{reply:?}");
    let challenge = Challenge::of(&reply);
    assert_eq!(
        challenge.get("error"),
        Some("insufficient_scope"),
        "{challenge:?}"
    );
    assert_eq!(challenge.scopes(), ["mcp"], "{challenge:?}");
    assert_eq!(
        challenge.get("resource_metadata"),
        Some(metadata_url(&server).as_str()),
        "{challenge:?}"
    );
}

#[test]
fn a_session_used_with_another_principals_token_is_404() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    let alice = token(&issuer, &server, Key::Rsa1).sign();
    let bob = token(&issuer, &server, Key::Rsa1).subject("bob").sign();
    let session = Legacy::initialize(&server, &alice);

    let reply = session.send(&server, Some(&bob), "tools/list", json!({}));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(reply.header("www-authenticate").is_none(), "{reply:?}");
    let reply = session.call(&server, &bob, "whoami", json!({}));
    assert_eq!(reply.status, 404, "{reply:?}");
    let bob_auth = bearer(&bob);
    let mut headers = session.headers(&bob_auth);
    headers.push(("Accept", "text/event-stream"));
    let reply = get(server.url(), &headers);
    assert_eq!(reply.status, 404, "GET: {reply:?}");
    let reply = delete(server.url(), &session.headers(&bob_auth));
    assert_eq!(reply.status, 404, "DELETE: {reply:?}");

    // Without a token the answer is about the token, not the session.
    let reply = session.send(&server, None, "tools/list", json!({}));
    assert_401(&server, &reply, None, Some("mcp"));
    // Alice's session is untouched, and a fresh token of hers (a refresh) still fits it.
    assert_whoami(&session.call(&server, &alice, "whoami", json!({})), "alice");
    let refreshed = token(&issuer, &server, Key::Ec1).sign();
    assert_whoami(
        &session.call(&server, &refreshed, "whoami", json!({})),
        "alice",
    );
}
