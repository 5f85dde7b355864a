//! Which tokens are accepted, and the 401 challenge of each refusal.

use super::*;

#[test]
fn rs256_and_es256_tokens_from_a_discovered_issuer_are_accepted() {
    let issuer = Issuer::start();
    // Flags only: the key set is found through the issuer's OpenID metadata.
    let server = Server::builder()
        .args(&["--auth", "jwt", "--issuer", issuer.url()])
        .start();
    let rs256 = issuer
        .token(Key::Rsa1, server.url())
        .scope("mcp tools:read")
        .email("alice@example.com")
        .sign();
    let who = assert_accepted(&server, &rs256, "alice");
    assert_eq!(who["email"], "alice@example.com", "{who}");
    assert_eq!(who["tenant"], Value::Null, "{who}");
    let mut scopes: Vec<&str> = who["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["mcp", "tools:read"], "{who}");

    let es256 = issuer.token(Key::Ec1, server.url()).subject("bob").sign();
    let who = assert_accepted(&server, &es256, "bob");
    assert_eq!(who["scopes"], json!([]), "{who}");

    // A legacy session with the same token, and an `aud` array naming this server.
    let session = Legacy::initialize(&server, &rs256);
    let reply = session.call(&server, &rs256, "whoami", json!({}));
    assert_whoami(&reply, "alice");
    let multi = issuer
        .token(Key::Rsa2, server.url())
        .set(
            "aud",
            json!(["https://elsewhere.example.com", server.url()]),
        )
        .sign();
    assert_accepted(&server, &multi, "alice");

    assert!(issuer.requests(OPENID_PATH) >= 1, "metadata never fetched");
    assert!(issuer.requests(JWKS_PATH) >= 1, "keys never fetched");
    // No required scopes configured: a challenge without a token names none.
    let reply = modern(&server, None, "tools/list", json!({}));
    assert_401(&server, &reply, None, None);
}

#[test]
fn a_request_without_a_token_is_401_naming_the_metadata_and_scopes() {
    let issuer = Issuer::start();
    let server = start(&issuer, r#"required_scopes = ["mcp", "profile"]"#, "");
    let reply = modern(&server, None, "tools/list", json!({}));
    assert_401(&server, &reply, None, Some("mcp profile"));
    let reply = call(&server, None, "whoami", json!({}));
    assert_401(&server, &reply, None, Some("mcp profile"));
    let reply = Legacy::initialize_reply(&server, None);
    assert_401(&server, &reply, None, Some("mcp profile"));
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    // The challenge's URL is the metadata document of exactly this resource.
    let document = get(&metadata_url(&server), &[]);
    assert_eq!(document.status, 200, "{document:?}");
    assert_eq!(document.json()["resource"], server.url(), "{document:?}");
    // The token that was missing works.
    let good = token(&issuer, &server, Key::Rsa1)
        .scope("mcp profile")
        .sign();
    assert_accepted(&server, &good, "alice");
}

#[test]
fn an_unsigned_token_is_401_invalid_token() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    let good = token(&issuer, &server, Key::Rsa1);
    assert_accepted(&server, &good.sign(), "alice");
    let unsigned = forge::unsigned("rsa1", &good.claims());
    assert_invalid_token(&server, &unsigned);
    // Nor with an upper-case `NONE`, or with a signature tacked on.
    let shouty = forge::compact(&json!({ "alg": "NONE", "kid": "rsa1" }), &good.claims(), "");
    assert_invalid_token(&server, &shouty);
    let tacked = forge::compact(&json!({ "alg": "none" }), &good.claims(), "c2lnbmF0dXJl");
    assert_invalid_token(&server, &tacked);
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_401_invalid_token() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    let good = token(&issuer, &server, Key::Rsa1);
    assert_accepted(&server, &good.sign(), "alice");
    let confused = forge::hs256_with_public_key(Key::Rsa1, &good.claims());
    assert_invalid_token(&server, &confused);
}

#[test]
fn a_tampered_payload_is_401_invalid_token() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    let good = token(&issuer, &server, Key::Rsa1).sign();
    assert_accepted(&server, &good, "alice");
    let mallory = forge::tampered(&good, |c| c["sub"] = json!("mallory"));
    assert_invalid_token(&server, &mallory);
    let longer = forge::tampered(&good, |c| c["exp"] = json!(now() + 365 * 86400));
    assert_invalid_token(&server, &longer);
    // The untouched token still works: the refusals cached nothing against it.
    assert_accepted(&server, &good, "alice");
}

#[test]
fn a_token_from_another_issuer_is_401_invalid_token() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    assert_accepted(&server, &token(&issuer, &server, Key::Rsa1).sign(), "alice");
    // Signed by a key the server trusts, but naming an issuer it does not.
    for iss in ["http://127.0.0.1:1", &format!("{}/", issuer.url())] {
        let foreign = token(&issuer, &server, Key::Rsa1).set("iss", iss).sign();
        assert_invalid_token(&server, &foreign);
    }
    let anonymous = token(&issuer, &server, Key::Rsa1).remove("iss").sign();
    assert_invalid_token(&server, &anonymous);
}

#[test]
fn a_token_for_another_audience_is_401_invalid_token() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    assert_accepted(&server, &token(&issuer, &server, Key::Rsa1).sign(), "alice");
    let other = format!("{}/other", server.base());
    for aud in [json!("http://127.0.0.1:1/mcp"), json!(other), json!([])] {
        let elsewhere = token(&issuer, &server, Key::Rsa1).set("aud", aud).sign();
        assert_invalid_token(&server, &elsewhere);
    }
    let unaddressed = token(&issuer, &server, Key::Rsa1).remove("aud").sign();
    assert_invalid_token(&server, &unaddressed);
}

#[test]
fn an_expired_token_is_401_even_when_it_also_lacks_scope() {
    let issuer = Issuer::start();
    let auth = format!("{REQUIRED}\n{ECHO_SCOPES}\nleeway = \"30s\"");
    let server = start(&issuer, &auth, "");
    let expired = token(&issuer, &server, Key::Rsa1)
        .set("iat", now() - 7200)
        .set("exp", now() - 3600)
        .sign();
    assert_invalid_token(&server, &expired);
    // Expired and without `echo:call` (or even `mcp`): still 401, not 403.
    for scope in ["mcp", ""] {
        let expired = issuer
            .token(Key::Rsa1, server.url())
            .scope(scope)
            .set("exp", now() - 3600)
            .sign();
        let reply = call(&server, Some(&expired), "echo", json!({ "text": "x" }));
        assert_eq!(reply.status, 401, "{reply:?}");
        let challenge = Challenge::of(&reply);
        assert_eq!(
            challenge.get("error"),
            Some("invalid_token"),
            "{challenge:?}"
        );
        assert!(challenge.scopes().contains(&"mcp"), "{challenge:?}");
    }
    // Expired a moment ago, within the leeway: accepted.
    let just = token(&issuer, &server, Key::Rsa1)
        .set("exp", now() - 5)
        .sign();
    assert_accepted(&server, &just, "alice");
}

#[test]
fn a_token_not_yet_valid_is_401_invalid_token() {
    let issuer = Issuer::start();
    let auth = format!("{REQUIRED}\nleeway = \"30s\"");
    let server = start(&issuer, &auth, "");
    let early = token(&issuer, &server, Key::Rsa1)
        .set("nbf", now() + 3600)
        .sign();
    assert_invalid_token(&server, &early);
    // Valid in a moment, within the leeway: accepted.
    let soon = token(&issuer, &server, Key::Rsa1)
        .set("nbf", now() + 5)
        .sign();
    assert_accepted(&server, &soon, "alice");
}

#[test]
fn a_token_missing_a_required_claim_is_401_invalid_token() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, r#"required_claims = ["email"]"#);
    let without = token(&issuer, &server, Key::Rsa1).sign();
    assert_invalid_token(&server, &without);
    let with = token(&issuer, &server, Key::Rsa1)
        .email("alice@example.com")
        .sign();
    let who = assert_accepted(&server, &with, "alice");
    assert_eq!(who["email"], "alice@example.com", "{who}");
    // Nor is a token without a subject or an expiry anyone.
    for claim in ["sub", "exp"] {
        let partial = token(&issuer, &server, Key::Rsa1)
            .email("alice@example.com")
            .remove(claim)
            .sign();
        assert_invalid_token(&server, &partial);
    }
}
