//! Opaque tokens, scopes, and sessions bound to their principal.

use super::*;

/// The issuer lines of a server that introspects opaque tokens at `issuer`.
pub(super) fn introspection(issuer: &Issuer) -> String {
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
fn an_inactive_opaque_token_is_401_and_asked_about_again_once_its_refusal_is_forgotten() {
    let issuer = Issuer::start();
    let auth = format!("{REQUIRED}\nnegative_cache_ttl = \"1s\"");
    let server = start(&issuer, &auth, &introspection(&issuer));
    let unknown = "opaque-never-issued-0123456789";
    assert_invalid_token(&server, unknown);
    assert_eq!(issuer.requests("/introspect"), 1);
    issuer.activate(
        unknown,
        json!({ "sub": "dave", "scope": "mcp", "iss": issuer.url(), "aud": server.url(),
                "exp": now() + 3600 }),
    );
    // The refusal stands for `negative_cache_ttl`; then the issuer is asked again and may
    // now call it active.
    let reply = poll(
        "the refusal to be forgotten",
        Duration::from_secs(15),
        || {
            let reply = whoami(&server, unknown);
            (reply.status == 200).then_some(reply)
        },
    );
    assert_whoami(&reply, "dave");
    assert_eq!(issuer.requests("/introspect"), 2);
}

/// The sample of `series` (name and labels exactly) in a Prometheus text `page`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[test]
fn the_same_unknown_opaque_token_five_times_costs_one_introspection_and_is_never_logged() {
    let issuer = Issuer::start();
    let server = Server::builder()
        .config(&toml(&issuer, REQUIRED, &introspection(&issuer)))
        .args(&["--auth", "jwt"])
        .env("MCP_FLEET_CLUSTER_SECRET", CLUSTER_SECRET)
        .start();
    let unknown = "opaque-made-up-by-a-caller-4f1c9a7e2b";
    for _ in 0..5 {
        let reply = whoami(&server, unknown);
        assert_401(&server, &reply, Some("invalid_token"), Some("mcp"));
        assert_eq!(
            Challenge::of(&reply).get("error_description"),
            Some("inactive token"),
            "{reply:?}"
        );
    }
    assert_eq!(issuer.requests("/introspect"), 1);

    // An answer without `aud` is remembered as a refusal too.
    let other_app = issuer.opaque(json!({ "sub": "erin", "scope": "mcp", "iss": issuer.url(),
                                          "client_id": "billing-app", "exp": now() + 3600 }));
    for _ in 0..5 {
        assert_401(
            &server,
            &whoami(&server, &other_app),
            Some("invalid_token"),
            Some("mcp"),
        );
    }
    assert_eq!(issuer.requests("/introspect"), 2);

    let metrics = format!("http://{}/metrics", server.internal());
    let page = get(&metrics, &[("authorization", &bearer(CLUSTER_SECRET))]);
    assert_eq!(page.status, 200, "{page:?}");
    let negative = "mcp_fleet_auth_total{result=\"negative_hit\"}";
    assert_eq!(sample(&page.body, negative), Some(8.0), "{}", page.body);
    let cap = "mcp_fleet_limit_refusals_total{limit=\"auth.max_concurrent_introspections\"}";
    assert_eq!(sample(&page.body, cap), Some(0.0), "{}", page.body);

    // Each refusal is logged with its reason, never with the token. Lines reach the log
    // in batches: wait for all ten.
    let log = eventually(
        "the ten refusals in the log",
        Duration::from_secs(10),
        || {
            let log = server.log();
            (log.matches("refused a bearer token").count() >= 10).then_some(log)
        },
    );
    for token in [unknown, other_app.as_str()] {
        assert!(!log.contains(token), "a token reached the log:\n{log}");
    }
}

#[test]
fn an_introspected_token_without_an_audience_is_401_unless_its_client_is_allowed_or_the_issuer_opts_out(
) {
    let issuer = Issuer::start();
    // What the identity provider says about a token it issued to another of its
    // applications: active, but naming no audience.
    let other_app = issuer.opaque(json!({ "sub": "erin", "scope": "mcp", "iss": issuer.url(),
                                          "client_id": "billing-app", "exp": now() + 3600 }));
    let strict = start(&issuer, REQUIRED, &introspection(&issuer));
    assert_invalid_token(&strict, &other_app);
    let reply = whoami(&strict, &other_app);
    assert_eq!(
        Challenge::of(&reply).get("error_description"),
        Some("introspection names no audience, and no allowed client_id"),
        "{reply:?}"
    );

    let listed = format!(
        "{}allowed_client_ids = [\"billing-app\"]\n",
        introspection(&issuer)
    );
    let listed = start(&issuer, REQUIRED, &listed);
    assert_accepted(&listed, &other_app, "erin");
    // The list names clients, it does not switch the check off.
    let no_client = issuer.opaque(json!({ "sub": "erin", "scope": "mcp", "iss": issuer.url(),
                                          "exp": now() + 3600 }));
    assert_invalid_token(&listed, &no_client);

    let lenient = format!("{}require_audience = false\n", introspection(&issuer));
    let lenient = start(&issuer, REQUIRED, &lenient);
    assert_accepted(&lenient, &other_app, "erin");
    assert_accepted(&lenient, &no_client, "erin");
    // An audience that names someone else is refused whatever the settings.
    let elsewhere = issuer.opaque(json!({ "sub": "erin", "scope": "mcp", "iss": issuer.url(),
                                          "client_id": "billing-app",
                                          "aud": "https://billing.example.com",
                                          "exp": now() + 3600 }));
    assert_invalid_token(&listed, &elsewhere);
    assert_invalid_token(&lenient, &elsewhere);
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

/// The tenant claim of the tokens of the collision test, mapped by the issuer's settings.
const TENANT_CLAIM: &str = "claims = { tenant = \"tenant\" }";

#[test]
fn principals_whose_old_binding_strings_collided_share_neither_sessions_nor_request_state() {
    let issuer = Issuer::start();
    let server = Server::builder()
        .conformance()
        .config(&toml(&issuer, REQUIRED, TENANT_CLAIM))
        .args(&["--auth", "jwt"])
        .start();
    // `iss|x|y|z` both, under the old binding.
    let first = token(&issuer, &server, Key::Rsa1)
        .set("tenant", "x|y")
        .subject("z")
        .sign();
    let second = token(&issuer, &server, Key::Rsa1)
        .set("tenant", "x")
        .subject("y|z")
        .sign();
    assert_eq!(assert_accepted(&server, &first, "z")["tenant"], "x|y");
    assert_eq!(assert_accepted(&server, &second, "y|z")["tenant"], "x");

    let session = Legacy::initialize(&server, &first);
    for method in ["tools/list", "ping"] {
        let reply = session.send(&server, Some(&second), method, json!({}));
        assert_eq!(reply.status, 404, "{method}: {reply:?}");
    }
    let reply = session.call(&server, &second, "whoami", json!({}));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_whoami(&session.call(&server, &first, "whoami", json!({})), "z");

    // The first one's 2026-07-28 requestState does not open for the second.
    let elicitation = json!({ "elicitation": {} });
    let arguments = json!({ "message": "Who are you?" });
    let reply = Modern::call("test_elicitation", arguments.clone())
        .capabilities(elicitation.clone())
        .header("Authorization", &bearer(&first))
        .send(server.url());
    assert_eq!(reply.result()["resultType"], "input_required", "{reply:?}");
    let state = reply.result()["requestState"]
        .as_str()
        .expect("a requestState")
        .to_owned();
    let retry = |token: &str| {
        let params = json!({
            "name": "test_elicitation",
            "arguments": arguments,
            "inputResponses": { "input-0": { "action": "accept",
                "content": { "username": "z", "email": "z@example.com" } } },
            "requestState": state,
        });
        Modern::new("tools/call", params)
            .capabilities(elicitation.clone())
            .header("Authorization", &bearer(token))
            .send(server.url())
    };
    retry(&second).assert_error(400, -32602);
    let reply = retry(&first);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.result()["resultType"], "complete", "{reply:?}");
}
