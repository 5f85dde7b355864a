//! The HTTP side of a node: the MCP endpoint (Streamable HTTP, both eras) and the
//! operational endpoints (`/health`, `/ready`) on the public listener; Raft, forwarded
//! writes and cluster status on the internal one.

mod auth;
mod body;
mod connections;
mod fanout;
mod forwarded;
mod guard;
mod internal;
mod legacy;
mod listen;
mod live;
mod mcp;
mod metadata;
mod modern;
mod observe;
mod ops;
mod report;
pub(crate) use report::{Holdings, ServerLine};
mod secrets;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::dev::DevIssuer;
use crate::mcp::Engine;
use crate::raft::Store;

pub(crate) use fanout::relay as relay_updates;
pub(crate) use internal::ForwardedAnswer;
pub(crate) use keys::MAX_QUEUED_UPDATES;

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Browser origins allowed besides loopback ones (`https://app.example.com`, or `*`).
    pub allowed_origins: Vec<String>,
    /// Host names allowed in `Host` besides loopback ones (`localhost`, `127.0.0.1`,
    /// `::1`) and the listener's own address. Empty on a non-loopback listener means any
    /// host. In the environment, a TOML array:
    /// `MCP_FLEET_HTTP__ALLOWED_HOSTS='["a.example.com","b.example.com"]'`.
    pub allowed_hosts: Vec<String>,
    /// Interval of keep-alive comments on idle SSE streams.
    #[serde(with = "humantime_serde")]
    pub sse_keepalive: Duration,
    /// Reconnection delay suggested to clients in priming events.
    #[serde(with = "humantime_serde")]
    pub sse_retry: Duration,
    /// Messages one legacy stream keeps for `Last-Event-ID` resumption; the stream's
    /// notifications and requests beyond it are still sent to a connected reader but not
    /// kept (each counted as a refusal), while its final response is always kept. Default
    /// 256: a long call's progress reports at one a second for four minutes. The old name
    /// `event_buffer` is still read.
    #[serde(alias = "event_buffer")]
    pub max_stream_events: usize,
    /// Bytes of notifications and requests (as JSON) one legacy stream keeps for
    /// resumption, with the same rule as `max_stream_events`. The final response is kept
    /// whatever its size: it is what the client came for. Default 1 MiB: 256 events of 4 KiB, so a session's
    /// `max_resumable_streams_per_session` finished streams hold at most 16 MiB.
    pub max_stream_bytes: usize,
    /// How long a finished legacy stream stays resumable after its call ended, so a
    /// client whose connection broke (a network blip, a balancer's idle timeout) gets
    /// the rest and the result at any node. Default 60 s: many times the `sse_retry`
    /// delay a client waits before reconnecting, while a session's finished streams
    /// stay few.
    #[serde(with = "humantime_serde")]
    pub stream_retention: Duration,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// On a graceful stop of a fleet node, how long `/ready` answers 503 (and responses
    /// close their connections) before the listener closes, so load balancers move away
    /// first. Make it at least the balancer's check interval times its fall count.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    /// How long a request's body may take to arrive once its headers are in; a slower
    /// one is answered 408 and its connection closed. Default 30 s: the largest body
    /// (`max_body_bytes`, 4 MiB) over a 1.2 Mbit/s uplink, while a client trickling a
    /// byte every few seconds holds a connection for 30 s at most, not for ever.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// The memory a request body may take once parsed, in bytes (estimated as it is
    /// parsed, before it is taken); more is refused with 413. Parsed JSON can take far more
    /// than its text: a 4 MiB body of small objects parses into 349 MB. Default 32 MiB:
    /// eight times `max_body_bytes`, where a body of text and numbers parses into one to
    /// eight times its size; only object-heavy JSON goes beyond.
    pub max_parsed_body_bytes: usize,
    /// How long a client may take to send a request's head (request line and headers)
    /// after connecting; a slower one gets 408 (actix's `client_request_timeout`). Default
    /// 5 s: a head is a few hundred bytes, and a half-sent head holds a connection.
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// How long an idle connection is kept open for a next request; 0 closes each
    /// connection after its response. Default 5 s: long enough for a client's (or a load
    /// balancer's) burst of requests to share a connection, short enough that idle ones
    /// do not sit on `max_connections`.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Connections this node serves at once, over all workers; more wait in the
    /// listener's backlog until one closes. actix caps connections per worker, so each
    /// worker takes `max_connections / workers` (at least 1). Each connection costs one
    /// file descriptor (see `LimitNOFILE` in the README) and its buffers. Default 4096:
    /// several times what a node behind a load balancer that reuses connections needs,
    /// and well within the file descriptors of a service unit.
    pub max_connections: usize,
    /// `subscriptions/listen` streams one principal may hold open on this node (counted
    /// in memory, per node: no fleet write per stream); more get 429. Default 16: a client
    /// needs one, and a user runs a few clients; under `--auth none` everyone is one
    /// principal, which is why nothing is evicted to make room.
    pub max_listen_streams_per_principal: usize,
    /// Resource URIs one `subscriptions/listen` stream may ask for; more are refused with
    /// `-32602` naming `notifications.resourceSubscriptions`. Default 100: with URIs of
    /// at most `mcp.max_uri_bytes` (2 KiB) a stream holds at most 200 KiB of them.
    pub max_listen_uris: usize,
    /// Streams of one legacy session this node holds that have not finished: one per
    /// request in flight (answered as SSE or as JSON, read now or waiting for a resuming
    /// GET), each holding a running request, its event buffer, and usually a connection.
    /// More get 429. The standalone GET stream is not counted: there is at most one per
    /// session (a second is 409), as there is at most one reader per stream for resumed
    /// GETs. Default 32: more parallel requests than a client makes on one session.
    pub max_streams_per_session: usize,
    /// Finished streams of one legacy session kept for `Last-Event-ID` resumption (each
    /// for `stream_retention`, within `max_stream_events` and `max_stream_bytes`);
    /// beyond it the oldest finished one is forgotten. Default 16.
    pub max_resumable_streams_per_session: usize,
    /// Requests to the client (elicitation, sampling, roots) one legacy session may have
    /// awaiting answers on this node; the tool asking one more gets an error naming the
    /// cap. Default 16: a tool asks one question at a time, and a session runs a few tools
    /// at once.
    pub max_pending_requests_per_session: usize,
    /// Resource updates announced on this node waiting to be relayed to the other nodes
    /// (`notifications/resources/updated` reaches subscribers on every node). Beyond it an
    /// update reaches only this node's subscribers and counts as a refusal. Default 1024:
    /// the relay sends what is queued in one message per peer, so the queue fills only
    /// when peers answer slowly during a burst; each entry is one URI
    /// (`mcp.max_uri_bytes` at most).
    pub max_queued_updates: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            sse_keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            max_stream_events: 256,
            max_stream_bytes: 1024 * 1024,
            stream_retention: Duration::from_secs(60),
            workers: 0,
            drain: Duration::from_secs(3),
            body_read_timeout: Duration::from_secs(30),
            max_parsed_body_bytes: 32 * 1024 * 1024,
            head_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            max_connections: 4096,
            max_listen_streams_per_principal: 16,
            max_listen_uris: 100,
            max_streams_per_session: 32,
            max_resumable_streams_per_session: 16,
            max_pending_requests_per_session: 16,
            max_queued_updates: 1024,
        }
    }
}

impl Config {
    /// Worker threads: `workers`, or one per core when 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The connections each worker takes, so that all of them together take at most
    /// `max_connections` (actix's own cap is per worker).
    pub fn connections_per_worker(&self) -> usize {
        (self.max_connections / self.worker_count()).max(1)
    }
}

/// Cap names, as refusals and the in-use gauges name them.
pub(crate) mod keys {
    /// See [`super::Config::body_read_timeout`].
    pub const BODY_READ_TIMEOUT: &str = "http.body_read_timeout";
    /// See [`super::Config::max_parsed_body_bytes`].
    pub const MAX_PARSED_BODY_BYTES: &str = "http.max_parsed_body_bytes";
    /// See [`super::Config::max_connections`].
    pub const MAX_CONNECTIONS: &str = "http.max_connections";
    /// See [`super::Config::max_listen_streams_per_principal`].
    pub const MAX_LISTEN_STREAMS: &str = "http.max_listen_streams_per_principal";
    /// See [`super::Config::max_listen_uris`].
    pub const MAX_LISTEN_URIS: &str = "http.max_listen_uris";
    /// See [`super::Config::max_streams_per_session`].
    pub const MAX_STREAMS: &str = "http.max_streams_per_session";
    /// See [`super::Config::max_resumable_streams_per_session`].
    pub const MAX_RESUMABLE_STREAMS: &str = "http.max_resumable_streams_per_session";
    /// See [`super::Config::max_stream_events`].
    pub const MAX_STREAM_EVENTS: &str = "http.max_stream_events";
    /// See [`super::Config::max_stream_bytes`].
    pub const MAX_STREAM_BYTES: &str = "http.max_stream_bytes";
    /// See [`super::Config::max_pending_requests_per_session`].
    pub const MAX_PENDING_REQUESTS: &str = crate::mcp::MAX_PENDING_REQUESTS;
    /// See [`super::Config::max_queued_updates`].
    pub const MAX_QUEUED_UPDATES: &str = "http.max_queued_updates";
}

/// What every HTTP worker shares.
pub(crate) struct State {
    pub engine: Engine,
    pub live: live::Live,
    /// Open `subscriptions/listen` streams, per principal.
    pub listeners: Arc<listen::Listeners>,
    pub config: Config,
    /// The public listener's address; on loopback, `Host` is checked against it.
    pub listen: std::net::IpAddr,
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
        listen: std::net::IpAddr,
        shutdown: CancellationToken,
        store: Store,
        auth: AuthSetup,
    ) -> Self {
        let limits = engine.limits().clone();
        limits.declare(keys::BODY_READ_TIMEOUT);
        limits.declare(keys::MAX_PARSED_BODY_BYTES);
        Self {
            live: live::Live::new(store.id(), live::Caps::new(&config, limits.clone())),
            listeners: listen::Listeners::new(config.max_listen_streams_per_principal, limits),
            engine,
            config,
            listen,
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
/// The internal routes of `mcp-fleet secrets`.
pub(crate) mod secrets_path {
    pub(crate) use super::secrets::{DELETE, LIST, SET};
}
pub(crate) use internal::{configure as configure_internal, BodyLimits, Internal};
pub(crate) use metadata::document as metadata_document;
pub(crate) use observe::{Observe, RequestId};
pub(crate) use ops::close_when_draining;

/// Counts each connection of the public listener while it is open.
pub(crate) use connections::on_connect;

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
