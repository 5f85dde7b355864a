//! A local OpenID issuer for tests: serves its metadata, its key set and an RFC 7662
//! introspection endpoint over real HTTP on `127.0.0.1:0`, and mints tokens with any claims.
//!
//! Standalone on purpose (no `mcp_fleet` imports), so any test binary or bench can use it:
//! `#[path = "../support/issuer.rs"] mod issuer;`.
//!
//! - [`Key`]: the fixture signing keys (`tests/fixtures/keys/`), their JWKs and signing.
//! - [`Issuer`]: the server. Tests choose which keys it publishes (rotation), make it
//!   answer 503 or stop ([`Issuer::set_down`], [`Issuer::stop`]), register opaque tokens
//!   for introspection, and count the requests it served per path. Its token endpoint
//!   does RFC 8693 token exchange: a subject token it issued (checked) becomes a token
//!   naming the same `sub` and the requested audience ([`Issuer::exchanges`] counts them).
//! - [`Token`]: a JWT to sign, with sensible claims to start from.
//! - [`forge`]: tokens a resource server must refuse (`alg: none`, HMAC keyed with a
//!   public key, a payload changed after signing).
//! - [`TestCa`]: a private certificate authority made for one test; an issuer started
//!   with [`Issuer::start_https`] serves https with a certificate it signed, as on-prem
//!   identity providers behind a private CA do.

// Each binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The client id the introspection endpoint accepts (HTTP Basic).
pub const CLIENT_ID: &str = "mcp-fleet";
/// The client secret the introspection endpoint accepts (HTTP Basic).
pub const CLIENT_SECRET: &str = "s3cret";
/// Lifetime of the tokens [`Issuer::token`] starts from.
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// Path of the key set.
pub const JWKS_PATH: &str = "/jwks.json";
/// Path of the OpenID metadata.
pub const OPENID_PATH: &str = "/.well-known/openid-configuration";
/// Path of the RFC 8414 metadata (same document).
pub const OAUTH_PATH: &str = "/.well-known/oauth-authorization-server";
/// Path of the introspection endpoint.
pub const INTROSPECT_PATH: &str = "/introspect";
/// Path of the token endpoint (RFC 8693 token exchange only).
pub const TOKEN_PATH: &str = "/token";
/// Lifetime of exchanged tokens.
pub const EXCHANGED_LIFETIME: Duration = Duration::from_secs(600);
/// The grant type of RFC 8693.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The RFC 8693 type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64
}

/// A value no other call in this process returns: for `jti`s and opaque tokens.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = Sha256::digest(format!("{}:{n}:{nanos}", std::process::id()));
    format!("{prefix}-{n}-{}", URL_SAFE_NO_PAD.encode(&digest[..12]))
}

/// A fixture signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// RSA 2048, signs RS256.
    Rsa1,
    /// A second RSA 2048 key, for rotation.
    Rsa2,
    /// EC P-256, signs ES256.
    Ec1,
}

impl Key {
    /// The algorithm this key signs with.
    pub fn alg(self) -> Algorithm {
        match self {
            Key::Rsa1 | Key::Rsa2 => Algorithm::RS256,
            Key::Ec1 => Algorithm::ES256,
        }
    }

    /// The `kid` this key is published and signs under by default.
    pub fn kid(self) -> &'static str {
        match self {
            Key::Rsa1 => "rsa1",
            Key::Rsa2 => "rsa2",
            Key::Ec1 => "ec1",
        }
    }

    /// The PKCS#8 private key.
    pub fn private_pem(self) -> &'static str {
        match self {
            Key::Rsa1 => include_str!("../fixtures/keys/rsa1.pem"),
            Key::Rsa2 => include_str!("../fixtures/keys/rsa2.pem"),
            Key::Ec1 => include_str!("../fixtures/keys/ec1.pem"),
        }
    }

    /// The SPKI public key, as a verifier would hold it.
    pub fn public_pem(self) -> &'static str {
        match self {
            Key::Rsa1 => include_str!("../fixtures/keys/rsa1.pub.pem"),
            Key::Rsa2 => include_str!("../fixtures/keys/rsa2.pub.pem"),
            Key::Ec1 => include_str!("../fixtures/keys/ec1.pub.pem"),
        }
    }

    fn encoding_key(self) -> EncodingKey {
        let pem = self.private_pem().as_bytes();
        match self.alg() {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .unwrap_or_else(|e| panic!("fixture key {self:?}: {e}"))
    }

    /// The public JWK of this key under `kid`, as an issuer publishes it.
    pub fn jwk(self, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg())
            .unwrap_or_else(|e| panic!("JWK of {self:?}: {e}"));
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).expect("a JWK serialises")
    }

    /// Signs `claims` with this key, naming `kid` in the header (none when `None`).
    pub fn sign(self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg());
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key())
            .unwrap_or_else(|e| panic!("sign with {self:?}: {e}"))
    }
}

/// A JWT being made: claims to adjust, then [`Token::sign`].
#[derive(Debug, Clone)]
pub struct Token {
    key: Key,
    kid: Option<String>,
    claims: Map<String, Value>,
}

impl Token {
    /// Sets claim `name` (replacing it).
    pub fn set(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes claim `name`.
    pub fn remove(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets the `sub` claim.
    pub fn subject(self, subject: &str) -> Self {
        self.set("sub", subject)
    }

    /// Sets the space-separated `scope` claim.
    pub fn scope(self, scope: &str) -> Self {
        self.set("scope", scope)
    }

    /// Sets the `email` claim.
    pub fn email(self, email: &str) -> Self {
        self.set("email", email)
    }

    /// Signs with `key` instead.
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// Names `kid` in the header instead of the key's own.
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// Leaves `kid` out of the header.
    pub fn no_kid(mut self) -> Self {
        self.kid = None;
        self
    }

    /// The claims as they stand.
    pub fn claims(&self) -> Value {
        Value::Object(self.claims.clone())
    }

    /// The `jti` claim.
    pub fn jti(&self) -> &str {
        self.claims
            .get("jti")
            .and_then(Value::as_str)
            .expect("a jti claim")
    }

    /// The signed compact JWT.
    pub fn sign(&self) -> String {
        self.key.sign(self.kid.as_deref(), &self.claims())
    }
}

/// Tokens a resource server must refuse whatever keys it trusts.
pub mod forge {
    use super::*;

    /// An unsigned token (`alg: none`, empty signature) with `claims`, naming `kid`.
    pub fn unsigned(kid: &str, claims: &Value) -> String {
        let header = json!({ "alg": "none", "typ": "JWT", "kid": kid });
        compact(&header, claims, "")
    }

    /// A compact JWT of `header` and `claims` with `signature` (base64url) as given.
    pub fn compact(header: &Value, claims: &Value, signature: &str) -> String {
        format!("{}.{}.{signature}", part(header), part(claims))
    }

    /// An HS256 token keyed with `key`'s public PEM, the classic algorithm confusion: a
    /// verifier that lets the token pick the algorithm would check it with the RSA public
    /// key's bytes as the HMAC secret.
    pub fn hs256_with_public_key(key: Key, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let secret = EncodingKey::from_secret(key.public_pem().as_bytes());
        jsonwebtoken::encode(&header, claims, &secret).expect("HS256 signs")
    }

    /// `token` with its payload changed by `edit`, keeping the original signature.
    pub fn tampered(token: &str, edit: impl FnOnce(&mut Value)) -> String {
        let [header, payload, signature]: [&str; 3] = token
            .split('.')
            .collect::<Vec<_>>()
            .try_into()
            .expect("a compact JWT");
        let mut claims = decode_part(payload);
        edit(&mut claims);
        format!("{header}.{}.{signature}", part(&claims))
    }

    /// The claims of a compact JWT, unverified.
    pub fn claims_of(token: &str) -> Value {
        decode_part(token.split('.').nth(1).expect("a compact JWT"))
    }

    fn part(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn decode_part(part: &str) -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice(&bytes).expect("a JSON part")
    }
}

/// What the handlers and the test share.
struct State {
    issuer: String,
    published: Vec<(Key, String)>,
    /// When set, the key set served instead of the JWKs of `published`.
    jwks: Option<Vec<Value>>,
    down: bool,
    requests: HashMap<String, usize>,
    opaque: HashMap<String, Value>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panicking handler must not hide the counters from the test that reports it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A certificate authority made for one test, trusted by nothing until a test says so.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mcp-fleet test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        Self { issuer }
    }

    /// The CA's certificate, PEM: what `auth.ca_file` names.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes [`TestCa::pem`] to `path`.
    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.pem()).expect("write the CA certificate");
    }

    /// A TLS server configuration with a certificate for `127.0.0.1` and `localhost`
    /// signed by this CA.
    fn server_config(&self) -> rustls::ServerConfig {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test issuer");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a server certificate");
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .expect("a TLS server configuration")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A running issuer; stopped when dropped.
pub struct Issuer {
    url: String,
    state: Shared,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl Issuer {
    /// Starts an issuer on a free loopback port publishing all three fixture keys.
    pub fn start() -> Self {
        Self::publishing(&[Key::Rsa1, Key::Rsa2, Key::Ec1])
    }

    /// Starts an issuer publishing only `keys` (under their own kids).
    pub fn publishing(keys: &[Key]) -> Self {
        Self::spawn(keys, None)
    }

    /// Starts an issuer publishing all three fixture keys over https, at
    /// `https://127.0.0.1:PORT`, with a certificate signed by `ca`.
    pub fn start_https(ca: &TestCa) -> Self {
        Self::spawn(&[Key::Rsa1, Key::Rsa2, Key::Ec1], Some(ca.server_config()))
    }

    fn spawn(keys: &[Key], tls: Option<rustls::ServerConfig>) -> Self {
        let state: Shared = Arc::new(Mutex::new(State {
            issuer: String::new(),
            published: keys.iter().map(|k| (*k, k.kid().to_owned())).collect(),
            jwks: None,
            down: false,
            requests: HashMap::new(),
            opaque: HashMap::new(),
        }));
        let (tx, rx) = mpsc::channel();
        let shared = state.clone();
        let https = tls.is_some();
        let thread = std::thread::Builder::new()
            .name("test-issuer".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let data = web::Data::new(shared);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .route(OPENID_PATH, web::get().to(metadata))
                            .route(OAUTH_PATH, web::get().to(metadata))
                            .route(JWKS_PATH, web::get().to(jwks))
                            .route(INTROSPECT_PATH, web::post().to(introspect))
                            .route(TOKEN_PATH, web::post().to(exchange))
                            .default_service(web::to(not_found))
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(0);
                    let server = match tls {
                        Some(tls) => server.bind_rustls_0_23(("127.0.0.1", 0), tls),
                        None => server.bind(("127.0.0.1", 0)),
                    }
                    .expect("bind the issuer");
                    let addr: SocketAddr = server.addrs()[0];
                    let server = server.run();
                    tx.send((addr, server.handle())).expect("the test waits");
                    let _ = server.await;
                });
            })
            .expect("spawn the issuer thread");
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the issuer starts");
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        lock(&state).issuer = url.clone();
        Self {
            url,
            state,
            handle,
            thread: Some(thread),
        }
    }

    /// The issuer identifier (`iss`), `http://127.0.0.1:PORT` (`https://` when started
    /// with [`Issuer::start_https`]), no trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key set's URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.url)
    }

    /// The introspection endpoint's URL.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}{INTROSPECT_PATH}", self.url)
    }

    /// A token signed with `key` for `audience`, from which a test changes what it needs:
    /// `iss` this issuer, `sub` `alice`, `iat` now, `exp` in an hour, a fresh `jti`, no
    /// scope.
    pub fn token(&self, key: Key, audience: &str) -> Token {
        let now = now();
        let mut claims = Map::new();
        claims.insert("iss".into(), self.url.clone().into());
        claims.insert("sub".into(), "alice".into());
        claims.insert("aud".into(), audience.into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + LIFETIME.as_secs() as i64).into());
        claims.insert("jti".into(), unique("jti").into());
        Token {
            key,
            kid: Some(key.kid().to_owned()),
            claims,
        }
    }

    /// Publishes exactly `keys` from now on, under their own kids.
    pub fn publish(&self, keys: &[Key]) {
        let keys: Vec<(Key, &str)> = keys.iter().map(|k| (*k, k.kid())).collect();
        self.publish_as(&keys);
    }

    /// Publishes exactly `keys`, each under the given kid, from now on.
    pub fn publish_as(&self, keys: &[(Key, &str)]) {
        lock(&self.state).published = keys.iter().map(|(k, kid)| (*k, kid.to_string())).collect();
    }

    /// Serves exactly `jwks` as its key set from now on, whatever `publish` said; tokens
    /// it signs and introspects still use the published keys.
    pub fn publish_jwks(&self, jwks: Vec<Value>) {
        lock(&self.state).jwks = Some(jwks);
    }

    /// While `down`, every path answers 503 (requests are still counted).
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// Stops serving: later connections are refused. Cannot be undone.
    pub fn stop(&mut self) {
        // The command is sent at once; the returned future only reports completion.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// How many requests reached `path` (`/jwks.json`, `/introspect`, …), 503s included.
    pub fn requests(&self, path: &str) -> usize {
        lock(&self.state).requests.get(path).copied().unwrap_or(0)
    }

    /// The token endpoint's URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}{TOKEN_PATH}", self.url)
    }

    /// How many token exchanges were asked for (refused ones included).
    pub fn exchanges(&self) -> usize {
        self.requests(TOKEN_PATH)
    }

    /// Registers a new opaque token that introspects as active with `claims` (`active` is
    /// added), and returns it.
    pub fn opaque(&self, claims: Value) -> String {
        let token = unique("opaque");
        self.activate(&token, claims);
        token
    }

    /// Makes `token` introspect as active with `claims`.
    pub fn activate(&self, token: &str, claims: Value) {
        lock(&self.state).opaque.insert(token.to_owned(), claims);
    }

    /// Makes `token` introspect as inactive from now on.
    pub fn deactivate(&self, token: &str) {
        lock(&self.state).opaque.remove(token);
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts the request and, when the issuer is down, answers for it.
fn gate(state: &Shared, req: &HttpRequest) -> Option<HttpResponse> {
    let mut state = lock(state);
    *state.requests.entry(req.path().to_owned()).or_default() += 1;
    state
        .down
        .then(|| HttpResponse::ServiceUnavailable().body("the issuer is down"))
}

async fn metadata(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    let issuer = lock(&state).issuer.clone();
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "introspection_endpoint": format!("{issuer}{INTROSPECT_PATH}"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    let (published, raw) = {
        let state = lock(&state);
        (state.published.clone(), state.jwks.clone())
    };
    let keys: Vec<Value> =
        raw.unwrap_or_else(|| published.iter().map(|(key, kid)| key.jwk(kid)).collect());
    HttpResponse::Ok().json(json!({ "keys": keys }))
}

/// RFC 7662: the client authenticates with HTTP Basic; the answer is `active: false` for
/// anything not registered as active.
async fn introspect(
    state: web::Data<Shared>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    if !client_authenticated(&req) {
        return HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Basic realm=\"introspection\""))
            .json(json!({ "error": "invalid_client" }));
    }
    let registered = form
        .get("token")
        .and_then(|token| lock(&state).opaque.get(token).cloned());
    match registered {
        Some(Value::Object(mut claims)) => {
            claims.insert("active".into(), true.into());
            HttpResponse::Ok().json(Value::Object(claims))
        }
        _ => HttpResponse::Ok().json(json!({ "active": false })),
    }
}

/// RFC 8693 token exchange: the client authenticates with HTTP Basic; the subject token
/// must be an access token this issuer signed (with a key it publishes) or registered as
/// opaque, unexpired; the answer is a token signed with `Rsa1` naming the subject's `sub`,
/// the requested `audience` (or `resource`), this issuer, and the client as `act`.
async fn exchange(
    state: web::Data<Shared>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    let refuse = |error: &str, description: &str| {
        HttpResponse::BadRequest().json(json!({ "error": error, "error_description": description }))
    };
    if !client_authenticated(&req) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client" }));
    }
    if form.get("grant_type").map(String::as_str) != Some(TOKEN_EXCHANGE) {
        return refuse("unsupported_grant_type", "only token exchange");
    }
    if form.get("subject_token_type").map(String::as_str) != Some(ACCESS_TOKEN_TYPE) {
        return refuse(
            "invalid_request",
            "subject_token_type must be an access token",
        );
    }
    let Some(audience) = form.get("audience").or_else(|| form.get("resource")) else {
        return refuse("invalid_target", "audience or resource is required");
    };
    let subject_claims = form
        .get("subject_token")
        .and_then(|token| subject_claims(&state, token));
    let Some(subject) = subject_claims else {
        return refuse("invalid_grant", "the subject token is not valid");
    };
    let now = now();
    let (issuer, sub) = (lock(&state).issuer.clone(), subject["sub"].clone());
    let claims = json!({
        "iss": issuer,
        "sub": sub,
        "aud": audience,
        "iat": now,
        "exp": now + EXCHANGED_LIFETIME.as_secs() as i64,
        "jti": unique("exchanged"),
        "act": { "sub": CLIENT_ID },
    });
    HttpResponse::Ok().json(json!({
        "access_token": Key::Rsa1.sign(Some(Key::Rsa1.kid()), &claims),
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": EXCHANGED_LIFETIME.as_secs(),
    }))
}

/// The claims of `token` when this issuer vouches for it now: a registered opaque token,
/// or a JWT signed by a published key, naming this issuer, unexpired.
fn subject_claims(state: &Shared, token: &str) -> Option<Value> {
    let (issuer, published, opaque) = {
        let state = lock(state);
        (
            state.issuer.clone(),
            state.published.clone(),
            state.opaque.get(token).cloned(),
        )
    };
    if opaque.is_some() {
        return opaque;
    }
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    let (key, _) = published.iter().find(|(_, k)| *k == kid)?;
    let verifier = match key.alg() {
        Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(key.public_pem().as_bytes()),
        _ => jsonwebtoken::DecodingKey::from_rsa_pem(key.public_pem().as_bytes()),
    }
    .ok()?;
    let mut validation = jsonwebtoken::Validation::new(key.alg());
    validation.validate_aud = false;
    validation.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &verifier, &validation)
        .ok()
        .map(|data| data.claims)
}

fn client_authenticated(req: &HttpRequest) -> bool {
    let Some(basic) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(basic.trim()) else {
        return false;
    };
    decoded == format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes()
}

async fn not_found(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = gate(&state, &req) {
        return refused;
    }
    HttpResponse::NotFound().finish()
}

/// The issuer checked on its own, so a failing server test is never the issuer's fault.
#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    use super::*;

    /// Sends a request; returns the status and the body as JSON (`null` if it is not).
    fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        let result = if method == "GET" {
            let mut request = agent.get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        } else {
            let mut request = agent.post(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send(body)
        };
        let mut response = result.expect("an HTTP response");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn introspect(issuer: &Issuer, token: &str, credentials: &str) -> (u16, Value) {
        let basic = format!("Basic {}", STANDARD.encode(credentials));
        let headers = [
            ("Authorization", basic.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        let body = format!("token={token}&token_type_hint=access_token");
        send("POST", &issuer.introspection_endpoint(), &headers, &body)
    }

    #[test]
    fn the_local_issuer_publishes_keys_that_verify_its_tokens() {
        let issuer = Issuer::start();
        let (status, metadata) = send("GET", &format!("{}{OPENID_PATH}", issuer.url()), &[], "");
        assert_eq!(status, 200);
        assert_eq!(metadata["issuer"], issuer.url());
        assert_eq!(metadata["jwks_uri"], issuer.jwks_uri().as_str());
        assert_eq!(
            metadata["introspection_endpoint"],
            issuer.introspection_endpoint().as_str()
        );

        let (_, set) = send("GET", &issuer.jwks_uri(), &[], "");
        let set: JwkSet = serde_json::from_value(set).expect("a JWK set");
        let audience = "http://127.0.0.1:1/mcp";
        for key in [Key::Rsa1, Key::Rsa2, Key::Ec1] {
            let jwk = set.find(key.kid()).expect("published");
            let verifier = DecodingKey::from_jwk(jwk).expect("a usable JWK");
            let mut validation = Validation::new(key.alg());
            validation.set_audience(&[audience]);
            validation.set_issuer(&[issuer.url()]);
            let signed = issuer.token(key, audience).sign();
            let data = decode::<Value>(&signed, &verifier, &validation)
                .unwrap_or_else(|e| panic!("{key:?}: {e}"));
            assert_eq!(data.claims["sub"], "alice");
            let tampered = forge::tampered(&signed, |c| c["sub"] = json!("mallory"));
            assert!(decode::<Value>(&tampered, &verifier, &validation).is_err());
        }
        assert_eq!(issuer.requests(JWKS_PATH), 1);

        issuer.publish(&[Key::Rsa2]);
        let (_, set) = send("GET", &issuer.jwks_uri(), &[], "");
        let set: JwkSet = serde_json::from_value(set).expect("a JWK set");
        assert_eq!(set.keys.len(), 1);
        assert!(set.find("rsa2").is_some());

        let good = format!("{CLIENT_ID}:{CLIENT_SECRET}");
        let opaque = issuer.opaque(json!({ "sub": "carol", "scope": "mcp" }));
        let (status, body) = introspect(&issuer, &opaque, &good);
        assert_eq!(status, 200);
        assert_eq!(
            (&body["active"], &body["sub"]),
            (&json!(true), &json!("carol"))
        );
        let (status, body) = introspect(&issuer, "never-issued", &good);
        assert_eq!((status, &body["active"]), (200, &json!(false)));
        let (status, _) = introspect(&issuer, &opaque, &format!("{CLIENT_ID}:wrong"));
        assert_eq!(status, 401);
        issuer.deactivate(&opaque);
        assert_eq!(introspect(&issuer, &opaque, &good).1["active"], false);
        assert_eq!(issuer.requests(INTROSPECT_PATH), 4);

        assert_eq!(metadata["token_endpoint"], issuer.token_endpoint().as_str());
        let basic = format!("Basic {}", STANDARD.encode(&good));
        let exchange = |subject: &str| {
            let body = format!(
                "grant_type={TOKEN_EXCHANGE}&subject_token={subject}\
                 &subject_token_type={ACCESS_TOKEN_TYPE}&audience=https://api.test"
            );
            let headers = [
                ("Authorization", basic.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ];
            send("POST", &issuer.token_endpoint(), &headers, &body)
        };
        let subject = issuer.token(Key::Rsa2, audience).subject("dora").sign();
        let (status, answer) = exchange(&subject);
        assert_eq!(status, 200, "{answer}");
        let exchanged = forge::claims_of(answer["access_token"].as_str().unwrap());
        assert_eq!(
            (&exchanged["sub"], &exchanged["aud"]),
            (&json!("dora"), &json!("https://api.test"))
        );
        assert_eq!(answer["expires_in"], EXCHANGED_LIFETIME.as_secs());
        let forged = forge::tampered(&subject, |c| c["sub"] = json!("mallory"));
        assert_eq!(exchange(&forged).1["error"], "invalid_grant");
        assert_eq!(issuer.exchanges(), 2);

        issuer.set_down(true);
        assert_eq!(send("GET", &issuer.jwks_uri(), &[], "").0, 503);
        assert_eq!(issuer.requests(JWKS_PATH), 3);
    }
}
