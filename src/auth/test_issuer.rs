//! A token issuer for tests and benchmarks, served over real HTTP on 127.0.0.1: OpenID
//! and RFC 8414 metadata, a JWKS that can be rotated, and an RFC 7662 introspection
//! endpoint. It can be told to fail (HTTP 500) or to hang up without answering, and it
//! counts the requests it serves.
//!
//! It depends on nothing in this crate, so benchmarks include it with `#[path]`. Its keys
//! are the test-only fixtures under `tests/fixtures/keys`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The client id the introspection endpoint expects.
pub const CLIENT_ID: &str = "fleet-node";
/// The client secret the introspection endpoint expects.
pub const CLIENT_SECRET: &str = "s3cret/with:odd chars";

/// A signing key of the issuer and its public JWK.
pub struct TestKey {
    /// Its key id.
    pub kid: String,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("a JWK of a fixture key");
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk: serde_json::to_value(jwk).expect("a JWK serialises"),
        }
    }

    /// The first RSA key, RS256, key id `rsa1`.
    pub fn rsa1() -> Self {
        let pem = include_str!("../../tests/fixtures/keys/rsa1.pem");
        Self::new(
            "rsa1",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
    }

    /// The second RSA key, RS256, key id `rsa2`: the one rotated to.
    pub fn rsa2() -> Self {
        let pem = include_str!("../../tests/fixtures/keys/rsa2.pem");
        Self::new(
            "rsa2",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
    }

    /// The P-256 key, ES256, key id `ec1`.
    pub fn ec1() -> Self {
        let pem = include_str!("../../tests/fixtures/keys/ec1.pem");
        Self::new(
            "ec1",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
    }

    /// The PEM of the first RSA key's public half (for algorithm-confusion attempts).
    pub fn rsa1_public_pem() -> &'static str {
        include_str!("../../tests/fixtures/keys/rsa1.pub.pem")
    }

    /// The public JWK as published.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims` with this key, naming its key id.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing works")
    }

    /// Signs `claims` with this key under `header` as given.
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("signing works")
    }
}

/// How the issuer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Normally.
    Up,
    /// With HTTP 500 to everything.
    Failing,
    /// By closing every connection without a word.
    Silent,
    /// Normally, but only after this long.
    Slow(Duration),
}

struct State {
    keys: Vec<Value>,
    mode: Mode,
    active: HashMap<String, Value>,
    /// Whether connections stay open for further requests (else each closes after one).
    keep_alive: bool,
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    metadata: AtomicUsize,
    jwks: AtomicUsize,
    introspection: AtomicUsize,
}

/// A running test issuer; stops when dropped.
pub struct TestIssuer {
    addr: SocketAddr,
    path: String,
    state: Arc<Mutex<State>>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TestIssuer {
    /// An issuer at the root of its origin serving OpenID discovery, publishing `keys`.
    pub fn start(keys: &[&TestKey]) -> Self {
        Self::start_at("", keys)
    }

    /// An issuer whose identifier has `path` (like `/tenant-a`), its metadata only at the
    /// RFC 8414 path-inserted location when `path` is not empty.
    pub fn start_at(path: &str, keys: &[&TestKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound address");
        let issuer = Self {
            addr,
            path: path.to_owned(),
            state: Arc::new(Mutex::new(State {
                keys: Vec::new(),
                mode: Mode::Up,
                active: HashMap::new(),
                keep_alive: false,
            })),
            counts: Arc::new(Counts::default()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        issuer.publish(keys);
        let server = Server {
            issuer: issuer.issuer(),
            base: format!("http://{addr}"),
            path: issuer.path.clone(),
            state: issuer.state.clone(),
            counts: issuer.counts.clone(),
        };
        let server = Arc::new(server);
        let stop = issuer.stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                server.counts.connections.fetch_add(1, Ordering::SeqCst);
                let server = server.clone();
                std::thread::spawn(move || server.serve(stream));
            }
        });
        issuer
    }

    /// The issuer identifier (`iss`).
    pub fn issuer(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Where its key set is.
    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Where its introspection endpoint is.
    pub fn introspection_endpoint(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// Publishes exactly `keys` from now on.
    pub fn publish(&self, keys: &[&TestKey]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Publishes these raw JWKs from now on.
    pub fn publish_raw(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().keys = keys;
    }

    /// Keeps connections open for further requests (HTTP/1.1 keep-alive), as most issuers
    /// do, instead of closing each after one answer.
    pub fn keep_alive(&self) {
        self.state.lock().unwrap().keep_alive = true;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    /// Changes how it answers.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Makes introspection call `token` active with these fields.
    pub fn activate(&self, token: &str, fields: Value) {
        self.state
            .lock()
            .unwrap()
            .active
            .insert(token.to_owned(), fields);
    }

    /// Key-set requests served (or refused) so far.
    pub fn jwks_requests(&self) -> usize {
        self.counts.jwks.load(Ordering::SeqCst)
    }

    /// Metadata requests so far.
    pub fn metadata_requests(&self) -> usize {
        self.counts.metadata.load(Ordering::SeqCst)
    }

    /// Introspection requests so far.
    pub fn introspections(&self) -> usize {
        self.counts.introspection.load(Ordering::SeqCst)
    }

    /// Claims of a valid token for `subject` at `audience`, living an hour.
    pub fn claims(&self, audience: &str, subject: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(),
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + 3600,
            "jti": format!("{subject}-{}", random_suffix()),
        })
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn random_suffix() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((NEXT.fetch_add(1, Ordering::Relaxed) as u64) << 32) | nanos as u64
}

/// What the accept loop shares with connection threads.
struct Server {
    issuer: String,
    base: String,
    path: String,
    state: Arc<Mutex<State>>,
    counts: Arc<Counts>,
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let path = words.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Server {
    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        while self.answer_one(&mut stream) {}
    }

    /// Reads one request on `stream` and answers it; whether the connection stays open.
    fn answer_one(&self, stream: &mut TcpStream) -> bool {
        let Some(request) = read_request(stream) else {
            return false;
        };
        let oidc = format!("{}/.well-known/openid-configuration", self.path);
        let rfc8414 = format!("/.well-known/oauth-authorization-server{}", self.path);
        let counter = match request.path.as_str() {
            "/jwks" => Some(&self.counts.jwks),
            "/introspect" => Some(&self.counts.introspection),
            p if p == oidc || p == rfc8414 => Some(&self.counts.metadata),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let (mode, keep_alive) = {
            let state = self.state.lock().unwrap();
            (state.mode, state.keep_alive)
        };
        let (status, body) = match mode {
            Mode::Silent => return false,
            Mode::Failing => ("500 Internal Server Error", json!({"error": "down"})),
            Mode::Up => self.answer(&request, &oidc, &rfc8414),
            Mode::Slow(delay) => {
                std::thread::sleep(delay);
                self.answer(&request, &oidc, &rfc8414)
            }
        };
        let body = body.to_string();
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).is_ok() && stream.flush().is_ok() && keep_alive
    }

    fn answer(&self, request: &Request, oidc: &str, rfc8414: &str) -> (&'static str, Value) {
        let metadata = json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.base),
            "introspection_endpoint": format!("{}/introspect", self.base),
        });
        match (request.method.as_str(), request.path.as_str()) {
            // Only the RFC 8414 path-inserted form for an issuer with a path.
            ("GET", p) if p == oidc && self.path.is_empty() => ("200 OK", metadata),
            ("GET", p) if p == rfc8414 => ("200 OK", metadata),
            ("GET", "/jwks") => {
                let keys = self.state.lock().unwrap().keys.clone();
                ("200 OK", json!({ "keys": keys }))
            }
            ("POST", "/introspect") => self.introspect(request),
            _ => ("404 Not Found", json!({"error": "not_found"})),
        }
    }

    fn introspect(&self, request: &Request) -> (&'static str, Value) {
        let expected = format!(
            "Basic {}",
            STANDARD.encode(format!(
                "{}:{}",
                CLIENT_ID,
                "s3cret%2Fwith%3Aodd+chars" // CLIENT_SECRET, form-encoded (RFC 6749 2.3.1)
            ))
        );
        if request.headers.get("authorization") != Some(&expected) {
            return ("401 Unauthorized", json!({"error": "invalid_client"}));
        }
        let body = String::from_utf8_lossy(&request.body);
        let mut token = None;
        let mut hint = None;
        for pair in body.split('&') {
            match pair.split_once('=') {
                Some(("token", value)) => token = Some(form_decode(value)),
                Some(("token_type_hint", value)) => hint = Some(form_decode(value)),
                _ => {}
            }
        }
        if hint.as_deref() != Some("access_token") {
            return ("400 Bad Request", json!({"error": "invalid_request"}));
        }
        let state = self.state.lock().unwrap();
        match token.and_then(|t| state.active.get(&t).cloned()) {
            Some(mut fields) => {
                fields["active"] = json!(true);
                ("200 OK", fields)
            }
            None => ("200 OK", json!({"active": false})),
        }
    }
}

/// A token with `header` and `claims` and an arbitrary signature part, for forgeries.
pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
