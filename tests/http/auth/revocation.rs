//! Revocation through the cluster command.

use super::*;

#[test]
fn a_revoked_subject_or_token_id_is_401_after_the_cli_returns() {
    let issuer = Issuer::start();
    let server = Server::builder()
        .config(&toml(&issuer, REQUIRED, ""))
        .args(&["--auth", "jwt"])
        .env("MCP_FLEET_CLUSTER_SECRET", CLUSTER_SECRET)
        .start();
    let alice = token(&issuer, &server, Key::Rsa1).sign();
    let alice_unused = token(&issuer, &server, Key::Ec1).sign();
    let bob = token(&issuer, &server, Key::Rsa1).subject("bob");
    let bob_other = token(&issuer, &server, Key::Rsa1).subject("bob").sign();
    assert_accepted(&server, &alice, "alice");
    assert_accepted(&server, &bob.sign(), "bob");
    let via = server.internal();

    let (ok, out) = run_cli(&[
        "cluster",
        "revoke",
        "--via",
        &via,
        "--issuer",
        issuer.url(),
        "--subject",
        "alice",
    ]);
    assert!(
        ok,
        "revoke --subject failed:\n{out}\nlog:\n{}",
        server.log()
    );
    // Every token of hers issued before, used or not, is refused at once.
    assert_invalid_token(&server, &alice);
    assert_invalid_token(&server, &alice_unused);
    assert_accepted(&server, &bob.sign(), "bob");

    let (ok, out) = run_cli(&[
        "cluster",
        "revoke",
        "--via",
        &via,
        "--issuer",
        issuer.url(),
        "--token-id",
        bob.jti(),
    ]);
    assert!(
        ok,
        "revoke --token-id failed:\n{out}\nlog:\n{}",
        server.log()
    );
    assert_invalid_token(&server, &bob.sign());
    assert_accepted(&server, &bob_other, "bob");
}

#[test]
fn revocation_needs_the_cluster_secret() {
    let issuer = Issuer::start();
    let server = Server::builder()
        .config(&toml(&issuer, REQUIRED, ""))
        .args(&["--auth", "jwt"])
        .env(
            "MCP_FLEET_CLUSTER_SECRET",
            "another-secret-of-enough-length",
        )
        .start();
    let alice = token(&issuer, &server, Key::Rsa1).sign();
    let via = server.internal();
    let (ok, out) = run_cli(&[
        "cluster",
        "revoke",
        "--via",
        &via,
        "--issuer",
        issuer.url(),
        "--subject",
        "alice",
    ]);
    assert!(!ok, "revoked with the wrong secret:\n{out}");
    // A secret was given, so the refusal must not read as if none had been.
    assert!(
        out.contains("refused the cluster secret (wrong secret?)"),
        "the refusal says the secret was wrong:\n{out}"
    );
    assert_accepted(&server, &alice, "alice");
}
