//! The server as an OAuth resource server, against a local issuer over real HTTP: which
//! tokens are accepted, the status and `WWW-Authenticate` challenge of each refusal, key
//! rotation and outages, introspection, scopes, principal-bound sessions, the RFC 9728
//! metadata, revocation, an issuer behind a private CA and the development issuer.

mod access;
mod dev;
mod keys;
mod metadata;
mod private_ca;
mod revocation;
mod tokens;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{delete, get, options, post, request, Modern, Reply};
use crate::harness::{command, eventually, wait_exit, Server};
use crate::issuer::{forge, now, Issuer, Key, CLIENT_ID, CLIENT_SECRET, JWKS_PATH, OPENID_PATH};

/// The scope every MCP request needs on the servers these tests start.
const REQUIRED: &str = r#"required_scopes = ["mcp"]"#;
/// What `echo` needs besides `mcp`.
const ECHO_SCOPES: &str = r#"tool_scopes = { echo = ["echo:call"] }"#;
/// The legacy version these tests open sessions with.
const LEGACY: &str = "2025-11-25";
/// The cluster secret of the servers `cluster revoke` talks to.
const CLUSTER_SECRET: &str = "auth-tests-cluster-secret";
/// A browser origin the server allows (the MCP Inspector's).
const BROWSER: &str = "http://localhost:6274";

/// The configuration file of a `--auth jwt` server trusting `issuer` (keys at its
/// `jwks_uri`, no discovery): `auth` lines go under `[auth]`, `extra` under the issuer.
fn toml(issuer: &Issuer, auth: &str, extra: &str) -> String {
    format!(
        "[auth]\n{auth}\n\n[[auth.issuers]]\nissuer = \"{}\"\njwks_uri = \"{}\"\n{extra}\n",
        issuer.url(),
        issuer.jwks_uri()
    )
}

/// A `--auth jwt` server with `toml(issuer, auth, extra)`.
fn start(issuer: &Issuer, auth: &str, extra: &str) -> Server {
    Server::builder()
        .config(&toml(issuer, auth, extra))
        .args(&["--auth", "jwt"])
        .start()
}

/// A token from `issuer` for `server` holding the `mcp` scope.
fn token(issuer: &Issuer, server: &Server, key: Key) -> crate::issuer::Token {
    issuer.token(key, server.url()).scope("mcp")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A 2026-07-28 request, with `token` as the bearer token when given.
fn modern(server: &Server, token: Option<&str>, method: &str, params: Value) -> Reply {
    let mut req = Modern::new(method, params);
    if let Some(token) = token {
        req = req.header("Authorization", &bearer(token));
    }
    req.send(server.url())
}

/// A 2026-07-28 `tools/call`.
fn call(server: &Server, token: Option<&str>, tool: &str, arguments: Value) -> Reply {
    let params = json!({ "name": tool, "arguments": arguments });
    modern(server, token, "tools/call", params)
}

/// A 2026-07-28 `whoami`.
fn whoami(server: &Server, token: &str) -> Reply {
    call(server, Some(token), "whoami", json!({}))
}

/// The names `tools/list` shows the holder of `token`.
fn tool_names(server: &Server, token: &str) -> Vec<String> {
    let reply = modern(server, Some(token), "tools/list", json!({}));
    assert_eq!(reply.status, 200, "{reply:?}");
    let tools = reply.result()["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tools
        .iter()
        .map(|t| t["name"].as_str().expect("a tool name").to_owned())
        .collect()
}

/// Asserts `reply` is a successful `whoami` of `subject`; returns its structured content.
#[track_caller]
fn assert_whoami(reply: &Reply, subject: &str) -> Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    let who = reply.result()["structuredContent"].clone();
    assert_eq!(who["subject"], subject, "{reply:?}");
    who
}

/// Asserts `token` is accepted as `subject` (a stateless `whoami`).
#[track_caller]
fn assert_accepted(server: &Server, token: &str, subject: &str) -> Value {
    let reply = whoami(server, token);
    let who = assert_whoami(&reply, subject);
    assert!(reply.header("www-authenticate").is_none(), "{reply:?}");
    who
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

impl Challenge {
    /// The challenge of `reply`; panics when there is none.
    #[track_caller]
    fn of(reply: &Reply) -> Self {
        let header = reply
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("no WWW-Authenticate: {reply:?}"));
        Self::parse(header)
    }

    /// Parses `Scheme name="quoted \" value", name=token, …`.
    fn parse(header: &str) -> Self {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
            let name: String = std::iter::from_fn(|| {
                chars.next_if(|c| *c != '=' && *c != ',' && !c.is_whitespace())
            })
            .collect();
            if name.is_empty() {
                break;
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            assert_eq!(chars.next(), Some('='), "malformed challenge {header:?}");
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let value = if chars.next_if_eq(&'"').is_some() {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => value.extend(chars.next()),
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => panic!("unterminated quoted string in {header:?}"),
                    }
                }
                value
            } else {
                std::iter::from_fn(|| chars.next_if(|c| *c != ',' && !c.is_whitespace())).collect()
            };
            let name = name.to_ascii_lowercase();
            assert!(
                params.insert(name.clone(), value).is_none(),
                "{name} repeated in {header:?}"
            );
        }
        Self {
            scheme: scheme.to_owned(),
            params,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The `scope` parameter as a sorted list.
    fn scopes(&self) -> Vec<&str> {
        let mut scopes: Vec<&str> = self
            .get("scope")
            .map(|s| s.split(' ').collect())
            .unwrap_or_default();
        scopes.sort_unstable();
        scopes
    }
}

/// Where the server's challenges must point: the path-inserted metadata URL.
fn metadata_url(server: &Server) -> String {
    format!("{}/.well-known/oauth-protected-resource/mcp", server.base())
}

/// Asserts a 401 whose body is a JSON-RPC error and whose challenge is `Bearer` with the
/// metadata URL, `error` as given and `scope` as given; returns the challenge.
#[track_caller]
fn assert_401(server: &Server, reply: &Reply, error: Option<&str>, scope: Option<&str>) {
    assert_eq!(reply.status, 401, "{reply:?}\nlog:\n{}", server.log());
    let challenge = Challenge::of(reply);
    assert!(
        challenge.scheme.eq_ignore_ascii_case("bearer"),
        "{challenge:?}"
    );
    assert_eq!(
        challenge.get("resource_metadata"),
        Some(metadata_url(server).as_str()),
        "{challenge:?}"
    );
    assert_eq!(challenge.get("error"), error, "{challenge:?}");
    assert_eq!(challenge.get("scope"), scope, "{challenge:?}");
    let body = reply.json();
    assert_eq!(body["jsonrpc"], "2.0", "{reply:?}");
    assert!(body["error"]["code"].is_i64(), "{reply:?}");
    assert!(body["error"]["message"].is_string(), "{reply:?}");
}

/// Asserts `token` is refused as an invalid token by a server requiring `mcp`, in both the
/// stateless and the legacy flow.
#[track_caller]
fn assert_invalid_token(server: &Server, token: &str) {
    let reply = whoami(server, token);
    assert_401(server, &reply, Some("invalid_token"), Some("mcp"));
    let reply = Legacy::initialize_reply(server, Some(token));
    assert_401(server, &reply, Some("invalid_token"), Some("mcp"));
}

/// A legacy session opened with a bearer token.
struct Legacy {
    id: String,
}

impl Legacy {
    fn initialize_reply(server: &Server, token: Option<&str>) -> Reply {
        let params = json!({
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": { "name": "auth-tests", "version": "0" },
        });
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        post(
            server.url(),
            &headers,
            &request(0, "initialize", params).to_string(),
        )
    }

    /// Initialises a session with `token` and sends `notifications/initialized`.
    #[track_caller]
    fn initialize(server: &Server, token: &str) -> Self {
        let reply = Self::initialize_reply(server, Some(token));
        assert_eq!(reply.status, 200, "initialize: {reply:?}");
        let id = reply
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("no session id: {reply:?}"))
            .to_owned();
        let session = Self { id };
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let reply = post(
            server.url(),
            &session.headers(&bearer(token)),
            &note.to_string(),
        );
        assert_eq!(reply.status, 202, "notifications/initialized: {reply:?}");
        session
    }

    fn headers<'a>(&'a self, authorization: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![
            ("Mcp-Session-Id", self.id.as_str()),
            ("MCP-Protocol-Version", LEGACY),
        ];
        if !authorization.is_empty() {
            headers.push(("Authorization", authorization));
        }
        headers
    }

    /// Sends a request on this session with `token` (none: no `Authorization`).
    fn send(&self, server: &Server, token: Option<&str>, method: &str, params: Value) -> Reply {
        let auth = token.map(bearer).unwrap_or_default();
        let body = request(1, method, params).to_string();
        post(server.url(), &self.headers(&auth), &body)
    }

    fn call(&self, server: &Server, token: &str, tool: &str, arguments: Value) -> Reply {
        let params = json!({ "name": tool, "arguments": arguments });
        self.send(server, Some(token), "tools/call", params)
    }
}

/// Polls `probe` every 50 ms until it yields a value or `deadline` passes.
fn poll<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let mut next = Instant::now();
    eventually(what, deadline, || {
        if Instant::now() < next {
            return None;
        }
        next = Instant::now() + Duration::from_millis(50);
        probe()
    })
}

/// Runs the binary with `args` and the cluster secret; returns whether it succeeded and
/// what it printed.
fn run_cli(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = command()
        .args(args)
        .env("MCP_FLEET_CLUSTER_SECRET", CLUSTER_SECRET)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone the output file"))
        .stderr(out)
        .spawn()
        .expect("spawn mcp-fleet");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status.success(), output)
}
