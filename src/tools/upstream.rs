//! How a tool reaches the team's own upstream APIs: one HTTP client shared by every tool
//! ([`Http`], from `ctx.http()`), and access tokens for those APIs on the caller's behalf
//! ([`AccessToken`], from `ctx.token_for(audience)`, obtained by `auth::exchange`).
//!
//! The client is its own: not the Raft client, which carries the cluster secret, nor the
//! issuers' client. Every request it sends has a connect timeout and an overall deadline
//! (`tools.http.connect_timeout`, `tools.http.timeout`), carries the request id of the MCP
//! request it serves (`x-request-id`, the id in the access log), and its response is read
//! whole up to `tools.http.max_response_bytes`: an upstream that hangs or answers too
//! much becomes a tool error naming the setting, never a stuck call or a node out of
//! memory. Redirects are not followed, so a token sent to one host never travels on to
//! another; the tool sees the 3xx and decides.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;
use crate::limits::Limits;

/// The header the access log's request id travels in, in both directions (`http::observe`).
const REQUEST_ID: &str = "x-request-id";

/// The cap on an upstream response, as refusals and metrics name it.
pub const MAX_RESPONSE_BYTES: &str = "tools.http.max_response_bytes";

/// The `[tools.http]` section: the shared client of `ctx.http()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// How long opening a connection to an upstream may take. Default 5 s: a reachable
    /// host answers a connect in milliseconds; longer means it is down or filtered.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one upstream request may take, from sending it to the last byte of the
    /// response. Default 30 s: room for a slow API, well inside the default tool timeout
    /// (`tools.default.timeout`, 60 s), so the tool can still report what happened.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest upstream response body a tool receives, in bytes; a larger one is a tool
    /// error naming this key. Default 4 MiB: far above what an API answer for a model
    /// needs, small enough that many calls at once cannot exhaust a node's memory.
    pub max_response_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_response_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Where `ctx.token_for` gets its tokens.
pub(crate) enum Tokens {
    /// Nowhere: authentication is off, so there is no caller token to exchange.
    None,
    /// Token exchange (or forwarding) at the caller's issuer.
    Exchange(crate::auth::Exchanger),
    /// Under stdio, one local user: the tokens `[stdio.tokens]` names, by audience.
    Local(std::collections::BTreeMap<String, crate::stdio::TokenSource>),
}

/// What one node gives every tool call for reaching upstreams: the shared client and
/// where tokens come from.
pub(crate) struct Upstream {
    client: SharedClient,
    config: HttpConfig,
    limits: Limits,
    tokens: Tokens,
}

impl Upstream {
    /// The shared client built from `config`; `tokens` answers `ctx.token_for`.
    pub(crate) fn new(config: HttpConfig, limits: Limits, tokens: Tokens) -> Self {
        crate::actors::install_tls_provider();
        limits.declare(MAX_RESPONSE_BYTES);
        Self {
            client: SharedClient::new(config),
            config,
            limits,
            tokens,
        }
    }

    /// The client for one call, carrying its request id.
    pub(crate) fn http(&self, request_id: Option<Arc<str>>) -> Http {
        Http {
            client: self.client.clone(),
            config: self.config,
            limits: self.limits.clone(),
            request_id,
        }
    }

    /// A token for `audience` on behalf of the caller of `principal` holding `token`.
    pub(crate) async fn token_for(
        &self,
        principal: &crate::auth::Principal,
        token: Option<&Bearer>,
        audience: &str,
    ) -> Result<AccessToken, Error> {
        let exchanger = match &self.tokens {
            Tokens::Exchange(exchanger) => exchanger,
            Tokens::Local(sources) => {
                let source = sources.get(audience).ok_or_else(|| {
                    Error::Failed(format!(
                        "no token for audience `{audience}` under stdio: name one in \
                         [stdio.tokens] (from an environment variable or a file)"
                    ))
                })?;
                return source
                    .read(audience)
                    .map(AccessToken::new)
                    .map_err(Error::Failed);
            }
            Tokens::None => {
                return Err(Error::Failed(
                    "no caller token to exchange: authentication is off (--auth none), so \
                     ctx.token_for cannot act on the caller's behalf"
                        .to_owned(),
                ))
            }
        };
        let Some(token) = token else {
            return Err(Error::Failed(
                "no caller token to exchange: this request carried none".to_owned(),
            ));
        };
        exchanger
            .token_for(principal, token.secret(), audience)
            .await
            .map(AccessToken::new)
            .map_err(|e| Error::Failed(e.to_string()))
    }
}

/// What a call carries to act for its caller upstream: the caller's bearer token and the
/// request id. Filled in by the transport; empty under stdio and `--auth none`.
#[derive(Clone, Default)]
pub(crate) struct Caller {
    /// The bearer token the request was authenticated with.
    pub token: Option<Bearer>,
    /// The request id of the access log (`x-request-id`).
    pub request_id: Option<Arc<str>>,
}

/// A bearer token held in memory only: it prints as `<redacted>`, so no log line, error or
/// debug dump can carry it.
#[derive(Clone)]
pub(crate) struct Bearer(Arc<str>);

impl Bearer {
    /// Wraps `token`.
    pub(crate) fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// The token itself, for the one place that sends it on.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// An access token for an upstream API, from [`Context::token_for`](super::Context::token_for).
/// Its `Debug` never shows it; send it with [`HttpRequest::bearer`].
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    pub(crate) fn new(token: String) -> Self {
        Self(token.into())
    }

    /// The token itself, for an upstream that wants it somewhere other than
    /// `Authorization: Bearer`. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The one client every tool call of a node shares, built on its first request: building
/// it loads and parses the system's certificate store, milliseconds a node's start would
/// otherwise pay before its first `initialize`, and most nodes' tools never call out.
#[derive(Clone)]
struct SharedClient {
    client: Arc<std::sync::OnceLock<reqwest::Client>>,
    config: HttpConfig,
}

impl SharedClient {
    fn new(config: HttpConfig) -> Self {
        Self {
            client: Arc::default(),
            config,
        }
    }

    /// The client, built now if this is the first request.
    fn get(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(self.config.connect_timeout)
                .timeout(self.config.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("mcp-fleet/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot build the tools' HTTP client; using defaults");
                    reqwest::Client::new()
                })
        })
    }
}

/// The HTTP client tools share, from [`Context::http`](super::Context::http): timeouts,
/// a response size cap and the request id come with every request.
#[derive(Clone)]
pub struct Http {
    client: SharedClient,
    config: HttpConfig,
    limits: Limits,
    request_id: Option<Arc<str>>,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("config", &self.config)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// A `GET` of `url`.
    pub fn get(&self, url: &str) -> HttpRequest {
        self.request(reqwest::Method::GET, url)
    }

    /// A `POST` to `url`.
    pub fn post(&self, url: &str) -> HttpRequest {
        self.request(reqwest::Method::POST, url)
    }

    /// A `PUT` to `url`.
    pub fn put(&self, url: &str) -> HttpRequest {
        self.request(reqwest::Method::PUT, url)
    }

    /// A `PATCH` of `url`.
    pub fn patch(&self, url: &str) -> HttpRequest {
        self.request(reqwest::Method::PATCH, url)
    }

    /// A `DELETE` of `url`.
    pub fn delete(&self, url: &str) -> HttpRequest {
        self.request(reqwest::Method::DELETE, url)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> HttpRequest {
        let mut builder = self.client.get().request(method, url);
        if let Some(id) = &self.request_id {
            builder = builder.header(REQUEST_ID, id.as_ref());
        }
        HttpRequest {
            builder,
            target: redacted_url(url),
            http: self.clone(),
        }
    }
}

/// One request being built; [`HttpRequest::send`] sends it.
pub struct HttpRequest {
    builder: reqwest::RequestBuilder,
    /// The URL without its query, for errors (a query may carry a key).
    target: String,
    http: Http,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl HttpRequest {
    /// Adds a header. A name or value that is not valid HTTP fails the send.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Adds a header whose value is a secret (an API key): marked sensitive, so the HTTP
    /// stack never prints it.
    pub fn secret_header(mut self, name: &str, value: &str) -> Self {
        match reqwest::header::HeaderValue::from_str(value) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.builder = self.builder.header(name, value);
            }
            // Let the send fail, without the value in the message.
            Err(_) => self.builder = self.builder.header(name, "\u{0}"),
        }
        self
    }

    /// Sends `token` as `Authorization: Bearer`.
    pub fn bearer(self, token: &AccessToken) -> Self {
        self.secret_header("authorization", &format!("Bearer {}", token.secret()))
    }

    /// Sends `value` as a JSON body.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.builder = self.builder.json(value);
        self
    }

    /// Sends `body` as it is.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.builder = self.builder.body(body.into());
        self
    }

    /// Sends the request and reads the whole response, within `tools.http.timeout` and
    /// `tools.http.max_response_bytes`. Any status is a response; failing to get one is
    /// an error the model sees.
    pub async fn send(self) -> Result<HttpResponse, Error> {
        let HttpRequest {
            builder,
            target,
            http,
        } = self;
        let cap = http.config.max_response_bytes;
        let failed = |e: reqwest::Error| {
            if e.is_timeout() && e.is_connect() {
                Error::Failed(format!(
                    "upstream {target}: no connection within {:?} (tools.http.connect_timeout)",
                    http.config.connect_timeout
                ))
            } else if e.is_timeout() {
                Error::Failed(format!(
                    "upstream {target}: no complete answer within {:?} (tools.http.timeout)",
                    http.config.timeout
                ))
            } else {
                // reqwest's message names the URL with its query: leave it out.
                Error::Failed(format!("upstream {target}: {}", e.without_url()))
            }
        };
        let mut response = builder.send().await.map_err(failed)?;
        let too_large = |size: String| {
            http.limits.refused(MAX_RESPONSE_BYTES);
            Error::Failed(format!(
                "upstream {target}: the response is {size} bytes, over \
                 {MAX_RESPONSE_BYTES} ({cap} bytes)"
            ))
        };
        if let Some(length) = response.content_length() {
            if length > cap as u64 {
                return Err(too_large(length.to_string()));
            }
        }
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > cap {
                return Err(too_large(format!("more than {cap}")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// An upstream's answer, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl HttpResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The header `name`, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; a body that is not is a tool error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::Failed(format!(
                "the upstream's answer is not the JSON expected: {e}"
            ))
        })
    }
}

/// `url` without its query and fragment, for messages: a query may carry an API key.
fn redacted_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection-at-a-time server on loopback answering every request with
    /// `answer`, after `delay`; sends each request's head to the returned channel.
    async fn serve(
        answer: Vec<u8>,
        delay: Duration,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api?key=hunter2", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = vec![0u8; 8192];
                let n = socket.read(&mut head).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&head[..n]).into_owned());
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(&answer).await;
            }
        });
        (url, rx)
    }

    fn upstream(timeout: Duration, max_response_bytes: usize) -> (Upstream, Limits) {
        let limits = Limits::default();
        let config = HttpConfig {
            connect_timeout: Duration::from_secs(5),
            timeout,
            max_response_bytes,
        };
        (Upstream::new(config, limits.clone(), Tokens::None), limits)
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn a_request_carries_the_request_id_and_its_answer_comes_back_whole() {
        let (url, mut seen) = serve(ok("{\"n\":1}"), Duration::ZERO).await;
        let (upstream, _) = upstream(Duration::from_secs(10), 1024);
        let http = upstream.http(Some("req-42".into()));
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().unwrap()["n"], 1);
        let head = seen.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.contains("x-request-id: req-42"), "{head}");
    }

    #[tokio::test]
    async fn an_upstream_that_hangs_is_a_tool_error_after_the_timeout() {
        let (url, _seen) = serve(ok("late"), Duration::from_secs(3600)).await;
        let (upstream, _) = upstream(Duration::from_millis(300), 1024);
        let started = Instant::now();
        let error = upstream.http(None).get(&url).send().await.unwrap_err();
        let waited = started.elapsed();
        let text = error.to_string();
        assert!(text.contains("tools.http.timeout"), "{text}");
        assert!(!text.contains("hunter2"), "the query stays out: {text}");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(60), "{waited:?}");
    }

    #[tokio::test]
    async fn a_response_over_the_cap_is_a_tool_error_naming_the_cap() {
        let big = "x".repeat(2048);
        // Announced by its length, and sent without one (chunked until the end).
        let chunked = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             {:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        for answer in [ok(&big), chunked.into_bytes()] {
            let (url, _seen) = serve(answer, Duration::ZERO).await;
            let (upstream, limits) = upstream(Duration::from_secs(10), 1024);
            let error = upstream.http(None).get(&url).send().await.unwrap_err();
            let text = error.to_string();
            assert!(text.contains(MAX_RESPONSE_BYTES), "{text}");
            assert!(text.contains("1024 bytes"), "{text}");
            assert_eq!(limits.refusals(MAX_RESPONSE_BYTES), 1);
        }
    }

    #[tokio::test]
    async fn without_a_caller_token_token_for_is_a_tool_error() {
        let (upstream, _) = upstream(Duration::from_secs(1), 1024);
        let error = upstream
            .token_for(
                &crate::auth::Principal::anonymous(),
                None,
                "https://api.test",
            )
            .await
            .unwrap_err();
        assert!(error.to_string().contains("--auth none"), "{error}");
    }

    #[test]
    fn tokens_never_print() {
        let token = AccessToken::new("s3cret-token".into());
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!format!("{:?}", Bearer::new("s3cret-token")).contains("s3cret"));
    }
}
