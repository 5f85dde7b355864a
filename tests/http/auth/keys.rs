//! Key rotation, issuer outages, and floods of made-up key ids.

use super::*;

#[test]
fn an_unknown_kid_is_401_until_the_issuer_publishes_the_key() {
    let issuer = Issuer::publishing(&[Key::Rsa1]);
    let auth = format!("{REQUIRED}\njwks_refetch_interval = \"1s\"");
    let server = start(&issuer, &auth, "");
    let old = token(&issuer, &server, Key::Rsa1).sign();
    assert_accepted(&server, &old, "alice");
    let new = || token(&issuer, &server, Key::Rsa2).sign();
    assert_invalid_token(&server, &new());

    // Rotation: the issuer publishes the new key beside the old one.
    issuer.publish(&[Key::Rsa1, Key::Rsa2]);
    poll(
        "the rotated key to be accepted",
        Duration::from_secs(15),
        || (whoami(&server, &new()).status == 200).then_some(()),
    );
    assert_accepted(&server, &new(), "alice");
    assert_accepted(&server, &old, "alice");
    // The same key under a kid the issuer never published is still refused.
    let unpublished = token(&issuer, &server, Key::Rsa2).kid("rsa9").sign();
    assert_invalid_token(&server, &unpublished);
}

#[test]
fn cached_keys_outlive_an_issuer_outage_and_new_kids_fail_closed() {
    let mut issuer = Issuer::publishing(&[Key::Rsa1]);
    let auth = format!("{REQUIRED}\njwks_refetch_interval = \"1s\"");
    let server = start(&issuer, &auth, "");
    assert_accepted(&server, &token(&issuer, &server, Key::Rsa1).sign(), "alice");

    // The issuer rotates in a new key but answers 503 to everything: the cached key still
    // verifies new tokens; the new kid is refused, not waited on.
    issuer.publish(&[Key::Rsa1, Key::Ec1]);
    issuer.set_down(true);
    let fresh = token(&issuer, &server, Key::Rsa1).subject("bob").sign();
    assert_accepted(&server, &fresh, "bob");
    // Waits out the refetch interval, so the refusal below comes from asking the issuer,
    // not from the rate limit.
    std::thread::sleep(Duration::from_millis(1100));
    let asked = issuer.requests(JWKS_PATH);
    assert_invalid_token(&server, &token(&issuer, &server, Key::Ec1).sign());
    poll(
        "a key-set fetch from the down issuer",
        Duration::from_secs(5),
        || (issuer.requests(JWKS_PATH) > asked).then_some(()),
    );
    assert_accepted(&server, &fresh, "bob");

    // Back up: the new key is fetched and works.
    issuer.set_down(false);
    poll(
        "the new key after the outage",
        Duration::from_secs(15),
        || {
            let reply = whoami(&server, &token(&issuer, &server, Key::Ec1).sign());
            (reply.status == 200).then_some(())
        },
    );

    // Gone altogether (connections refused): cached keys still work, an unknown kid is
    // refused promptly.
    issuer.stop();
    let fresh = token(&issuer, &server, Key::Rsa1).subject("carol").sign();
    assert_accepted(&server, &fresh, "carol");
    assert_accepted(&server, &token(&issuer, &server, Key::Ec1).sign(), "alice");
    std::thread::sleep(Duration::from_millis(1100));
    let started = Instant::now();
    assert_invalid_token(&server, &token(&issuer, &server, Key::Rsa2).sign());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "refusing took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_flood_of_made_up_kids_fetches_the_key_set_a_bounded_number_of_times() {
    let issuer = Issuer::start();
    let auth = format!("{REQUIRED}\njwks_refetch_interval = \"60s\"");
    let server = start(&issuer, &auth, "");
    let good = token(&issuer, &server, Key::Rsa1).sign();
    assert_accepted(&server, &good, "alice");
    let tokens: Vec<String> = (0..100)
        .map(|i| {
            token(&issuer, &server, Key::Rsa1)
                .kid(&format!("made-up-{i}"))
                .sign()
        })
        .collect();
    std::thread::scope(|scope| {
        for chunk in tokens.chunks(25) {
            let server = &server;
            scope.spawn(move || {
                for token in chunk {
                    let reply = whoami(server, token);
                    assert_401(server, &reply, Some("invalid_token"), Some("mcp"));
                }
            });
        }
    });
    let fetches = issuer.requests(JWKS_PATH);
    assert!(
        fetches <= 3,
        "{fetches} key-set fetches for 100 made-up kids"
    );
    // The real key is still known.
    assert_accepted(&server, &good, "alice");
}

#[test]
fn the_key_set_is_fetched_once_as_the_node_starts_and_the_first_call_needs_no_other_fetch() {
    let issuer = Issuer::start();
    let server = start(&issuer, REQUIRED, "");
    // Fetched while the node starts (its store opening meanwhile), not on the first token.
    eventually(
        "the key set fetched at start",
        Duration::from_secs(30),
        || (issuer.requests(JWKS_PATH) >= 1).then_some(()),
    );
    let good = token(&issuer, &server, Key::Rsa1).sign();
    assert_accepted(&server, &good, "alice");
    assert_eq!(
        issuer.requests(JWKS_PATH),
        1,
        "the key set was fetched again for the first call"
    );
}

#[test]
fn a_key_whose_modulus_an_issuer_pads_with_a_zero_byte_still_verifies() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let issuer = Issuer::publishing(&[Key::Rsa1]);
    // RFC 7518 wants n without leading zeros; some issuers add one (a DER habit), and
    // the signature backend reads only minimal integers unless told otherwise.
    let mut padded = Key::Rsa1.jwk(Key::Rsa1.kid());
    let n = URL_SAFE_NO_PAD
        .decode(padded["n"].as_str().expect("n"))
        .expect("base64url");
    padded["n"] = json!(URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat()));
    issuer.publish_jwks(vec![padded]);
    let server = start(&issuer, REQUIRED, "");
    assert_accepted(&server, &token(&issuer, &server, Key::Rsa1).sign(), "alice");
    // Still the key's own signatures only.
    let other = token(&issuer, &server, Key::Rsa2)
        .kid(Key::Rsa1.kid())
        .sign();
    assert_invalid_token(&server, &other);
}
