//! An issuer behind a private CA (`auth.ca_file`): over https with a certificate the
//! system does not trust, its keys cannot be fetched (503, the log and the answer name
//! the certificate and the key to set) until the node is given the CA; then its tokens,
//! JWTs and opaque ones alike, are accepted. TLS checks are never relaxed: the CA is
//! trusted besides the system's roots.

use super::access::introspection;
use super::*;
use crate::issuer::TestCa;

/// A `--auth jwt` server trusting the https `issuer`, given `ca_file` in its file.
fn start_trusting(issuer: &Issuer, ca_file: Option<&std::path::Path>) -> Server {
    let auth = match ca_file {
        Some(path) => format!("{REQUIRED}\nca_file = \"{}\"", path.display()),
        None => REQUIRED.to_owned(),
    };
    start(issuer, &auth, &introspection(issuer))
}

#[test]
fn an_issuer_behind_a_private_ca_is_refused_until_its_ca_is_trusted() {
    let ca = TestCa::new();
    let issuer = Issuer::start_https(&ca);
    assert!(
        issuer.url().starts_with("https://127.0.0.1:"),
        "{}",
        issuer.url()
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca_file = dir.path().join("issuer-ca.pem");
    ca.write(&ca_file);

    // Without the CA: no key set can be fetched, so the token cannot be checked; the node
    // says why instead of calling the token invalid.
    let untrusting = start_trusting(&issuer, None);
    let jwt = token(&issuer, &untrusting, Key::Rsa1).sign();
    let reply = whoami(&untrusting, &jwt);
    assert_eq!(reply.status, 503, "{reply:?}\nlog:\n{}", untrusting.log());
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("certificate") && message.contains("auth.ca_file"),
        "{message}\nlog:\n{}",
        untrusting.log()
    );
    let log = poll(
        "the refused certificate in the log",
        Duration::from_secs(10),
        || {
            let log = untrusting.log();
            log.contains("auth.ca_file").then_some(log)
        },
    );
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert_eq!(issuer.requests(JWKS_PATH), 0, "a request got past TLS");
    let opaque = issuer.opaque(json!({ "sub": "carol", "scope": "mcp", "aud": untrusting.url() }));
    let reply = whoami(&untrusting, &opaque);
    assert_eq!(reply.status, 503, "{reply:?}");

    // With it: both kinds of token are accepted.
    let trusting = start_trusting(&issuer, Some(&ca_file));
    let jwt = token(&issuer, &trusting, Key::Rsa1).sign();
    assert_accepted(&trusting, &jwt, "alice");
    let opaque = issuer.opaque(json!({ "sub": "carol", "scope": "mcp", "aud": trusting.url() }));
    assert_accepted(&trusting, &opaque, "carol");
    assert!(issuer.requests(JWKS_PATH) >= 1);
    assert!(issuer.requests(crate::issuer::INTROSPECT_PATH) >= 1);
}

#[test]
fn the_issuer_ca_file_comes_from_a_flag_or_the_environment_and_empty_is_unset() {
    let ca = TestCa::new();
    let issuer = Issuer::start_https(&ca);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca_file = dir.path().join("issuer-ca.pem");
    ca.write(&ca_file);
    let ca_path = ca_file.display().to_string();

    // Flags only: the key set is found through the issuer's metadata, over https.
    let flagged = Server::builder()
        .args(&["--auth", "jwt", "--issuer", issuer.url()])
        .args(&["--issuer-ca-file", &ca_path])
        .start();
    assert_accepted(
        &flagged,
        &token(&issuer, &flagged, Key::Ec1).sign(),
        "alice",
    );
    assert!(issuer.requests(OPENID_PATH) >= 1, "metadata never fetched");

    let from_env = Server::builder()
        .args(&["--auth", "jwt", "--issuer", issuer.url()])
        .env("MCP_FLEET_AUTH__CA_FILE", &ca_path)
        .start();
    assert_accepted(
        &from_env,
        &token(&issuer, &from_env, Key::Rsa2).sign(),
        "alice",
    );

    // An empty variable (what a compose file passes for an unset one) is no CA file: the
    // node starts, and trusts only the system's roots.
    let empty = Server::builder()
        .args(&["--auth", "jwt", "--issuer", issuer.url()])
        .env("MCP_FLEET_AUTH__CA_FILE", "")
        .start();
    let reply = whoami(&empty, &token(&issuer, &empty, Key::Rsa1).sign());
    assert_eq!(reply.status, 503, "{reply:?}\nlog:\n{}", empty.log());
}
