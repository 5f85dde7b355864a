//! The HTTP side of a node: the MCP endpoint (Streamable HTTP, both eras) and the
//! operational endpoints (`/health`, `/ready`) on the public listener; Raft, forwarded
//! writes and cluster status on the internal one.

mod auth;
mod disconnect;
mod guard;
mod internal;
mod legacy;
mod live;
mod mcp;
mod metadata;
mod modern;
mod observe;
mod ops;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::dev::DevIssuer;
use crate::mcp::Engine;
use crate::raft::Store;

pub(crate) use internal::ForwardedAnswer;

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Browser origins allowed besides loopback ones (`https://app.example.com`, or `*`).
    pub allowed_origins: Vec<String>,
    /// Host names allowed in `Host` besides loopback ones. Empty on a non-loopback
    /// listener means any host.
    pub allowed_hosts: Vec<String>,
    /// Interval of keep-alive comments on idle SSE streams.
    #[serde(with = "humantime_serde")]
    pub sse_keepalive: Duration,
    /// Reconnection delay suggested to clients in priming events.
    #[serde(with = "humantime_serde")]
    pub sse_retry: Duration,
    /// Messages kept per legacy stream for `Last-Event-ID` resumption.
    pub event_buffer: usize,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// On a graceful stop of a fleet node, how long `/ready` answers 503 (and responses
    /// close their connections) before the listener closes, so load balancers move away
    /// first. Make it at least the balancer's check interval times its fall count.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            sse_keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            event_buffer: 256,
            workers: 0,
            drain: Duration::from_secs(3),
        }
    }
}

/// What every HTTP worker shares.
pub(crate) struct State {
    pub engine: Engine,
    pub live: live::Live,
    pub config: Config,
    /// Whether the listener is on a loopback address (then `Host` is checked).
    pub loopback: bool,
    /// Who is calling: token validation and challenges.
    pub guard: auth::Guard,
    /// The protected-resource metadata, when authentication is on.
    pub metadata: Option<serde_json::Value>,
    /// The development issuer of `--auth dev`.
    pub dev: Option<Arc<DevIssuer>>,
    /// Cancelled when the node shuts down: open-ended streams then close so draining ends.
    pub shutdown: CancellationToken,
    /// The fleet store, for readiness.
    pub store: Store,
    /// Set when a graceful stop begins: the node is leaving the balancer's rotation.
    pub draining: std::sync::atomic::AtomicBool,
}

/// Who may call a node, as its HTTP side enforces it.
pub(crate) struct AuthSetup {
    /// Token validation and challenges.
    pub guard: auth::Guard,
    /// The protected-resource metadata, when authentication is on.
    pub metadata: Option<serde_json::Value>,
    /// The development issuer of `--auth dev`.
    pub dev: Option<Arc<DevIssuer>>,
}

impl State {
    pub(crate) fn new(
        engine: Engine,
        config: Config,
        loopback: bool,
        shutdown: CancellationToken,
        store: Store,
        auth: AuthSetup,
    ) -> Self {
        Self {
            engine,
            live: live::Live::for_node(store.id()),
            config,
            loopback,
            guard: auth.guard,
            metadata: auth.metadata,
            dev: auth.dev,
            shutdown,
            store,
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

pub(crate) use auth::Guard;
pub(crate) use internal::{configure as configure_internal, Internal};
pub(crate) use metadata::document as metadata_document;
pub(crate) use observe::Observe;
pub(crate) use ops::close_when_draining;

/// Remembers each connection's socket so requests can notice the client leaving.
pub(crate) use disconnect::on_connect;

/// Registers every route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    mcp::configure(cfg);
    metadata::configure(cfg);
    ops::configure(cfg);
}

/// CORS for browser clients, allowing the MCP headers in and exposing the session id.
pub(crate) fn cors(config: &Config) -> actix_cors::Cors {
    let config = config.clone();
    actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, head| {
            // Discovery documents are public: any browser client may read them.
            head.uri.path().starts_with("/.well-known/")
                || origin
                    .to_str()
                    .is_ok_and(|o| guard::origin_allowed(&config, o))
        })
        .allowed_methods(["GET", "POST", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "last-event-id",
        ])
        .expose_headers(["mcp-session-id", "www-authenticate", "mcp-protocol-version"])
        .max_age(3600)
}
