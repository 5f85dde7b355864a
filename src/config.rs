//! One validated [`Config`], made of each subsystem's own settings, read from defaults, a
//! TOML file, `MCP_FLEET_*` environment variables and command-line flags, in that order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::auth;
use crate::crypto::Ring;

/// Why configuration was refused; every message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key could not be read (wrong type, unknown key, unreadable file).
    #[error("{}", describe(.0))]
    Read(#[from] Box<figment::Error>),
    /// A key was read but its value is not acceptable.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// The key, dotted (`http.max_body_bytes`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A key usually set in the environment (a secret) has a value that is not acceptable;
    /// the message names the variable too, and never echoes the value.
    #[error(
        "configuration key `{key}` (environment variable {env}): {message}",
        env = env_var(key)
    )]
    InvalidSecret {
        /// The key (`encryption_key`, `cluster_secret`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The environment variable that sets configuration key `key`: `raft.node_id` is
/// `MCP_FLEET_RAFT__NODE_ID`.
pub fn env_var(key: &str) -> String {
    format!("MCP_FLEET_{}", key.replace('.', "__").to_uppercase())
}

/// Says what figment could not read, by key, and where the value came from: an environment
/// variable by its name (with the syntax a list takes there), a file by its path.
fn describe(error: &figment::Error) -> String {
    let all: Vec<String> = error
        .clone()
        .into_iter()
        .map(|e| describe_one(&e))
        .collect();
    all.join("; ")
}

fn describe_one(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let from_env = error
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment variable"));
    let mut text = if key.is_empty() {
        "configuration".to_owned()
    } else {
        format!("configuration key `{key}`")
    };
    if from_env && !key.is_empty() {
        text.push_str(&format!(" (environment variable {})", env_var(&key)));
    } else if let Some(figment::Source::File(path)) =
        error.metadata.as_ref().and_then(|m| m.source.as_ref())
    {
        text.push_str(&format!(" in {}", path.display()));
    }
    text.push_str(&format!(": {}", error.kind));
    let wants_list = matches!(
        &error.kind,
        figment::error::Kind::InvalidType(_, expected) if expected.contains("sequence")
    );
    if from_env && wants_list {
        text.push_str(&format!(
            "; in the environment a list is written as a TOML array: {}='[\"a.example.com\",\"b.example.com\"]'",
            env_var(&key)
        ));
    }
    text
}

fn invalid(key: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        key,
        message: message.into(),
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `mcp_fleet=debug,actix_web=warn`).
    pub filter: String,
    /// How long an `info` (or more verbose) line may wait in memory before it is written,
    /// so that the lines of many requests share one write to standard error. Default
    /// 100 ms: unnoticeable to a person reading, one write per 100 ms under load instead
    /// of one per request. `WARN` and `ERROR` lines are written at once, with everything
    /// before them. `0s` writes every line as it is made. At most 60 s.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most bytes of log lines held in memory (while one batch is written the next may
    /// fill as much again). Default 1 MiB, about 5,000 access lines: 100 ms of them at
    /// 50,000 requests a second, several times what one node serves. A line that would
    /// not fit makes its thread write the backlog itself, waiting for standard error, so
    /// lines are never dropped. At least 4096.
    pub max_buffered_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: DEFAULT_LOG_FILTER.to_owned(),
            flush_interval: Duration::from_millis(100),
            max_buffered_bytes: 1024 * 1024,
        }
    }
}

/// The default `log.filter`. openraft narrates every vote at info; our own log says when
/// leaders change. Its core's warnings (`openraft::core::raft_core`) are, all three, a
/// stale message being dropped as designed: a vote answer arriving after the election
/// ended (on every normal start of a fleet, as the third node answers late), a replication
/// answer from before a change of leader or membership. Errors there still show, and so
/// do warnings from the rest of openraft (replication, storage, network).
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::core::raft_core=error";

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The file and environment form, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    auth: auth::Config,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    encryption_key: Option<String>,
    #[serde(default)]
    cluster_secret: Option<String>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    raft: crate::raft::Config,
    #[serde(default)]
    http: crate::http::Config,
    #[serde(default)]
    sessions: crate::actors::SessionConfig,
    #[serde(default)]
    mcp: crate::mcp::Config,
    #[serde(default)]
    tools: crate::tools::Config,
    #[serde(default)]
    secrets: crate::tools::SecretsConfig,
    #[serde(default)]
    tool_state: crate::tools::StateConfig,
    #[serde(default)]
    tasks: crate::mcp::TasksConfig,
    #[serde(default)]
    stdio: crate::stdio::Config,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--auth`, `--issuer`, `--audience`, `--jwks-uri`, `--issuer-preset`,
    /// `--issuer-ca-file`.
    #[serde(skip_serializing_if = "AuthOverrides::is_empty")]
    pub auth: AuthOverrides,
    /// `--public-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// `--node-id`, `--raft-listen`, `--peers`.
    #[serde(skip_serializing_if = "RaftOverrides::is_empty")]
    pub raft: RaftOverrides,
}

/// Authentication values given on the command line.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AuthOverrides {
    /// `--auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<auth::Mode>,
    /// `--issuer` and its companions: one issuer replacing any configured ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<auth::IssuerConfig>>,
    /// `--issuer-ca-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl AuthOverrides {
    fn is_empty(&self) -> bool {
        self.mode.is_none() && self.issuers.is_none() && self.ca_file.is_none()
    }
}

/// Raft values given on the command line.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RaftOverrides {
    /// `--node-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// `--raft-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--raft-advertise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// `--peers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<std::collections::BTreeMap<String, String>>,
}

impl RaftOverrides {
    fn is_empty(&self) -> bool {
        self.node_id.is_none()
            && self.listen.is_none()
            && self.advertise.is_none()
            && self.peers.is_none()
    }
}

/// The validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the public listener.
    pub listen: SocketAddr,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// How callers are authenticated.
    pub auth: auth::Config,
    /// The public URL of the MCP endpoint (the OAuth resource); when absent,
    /// `http://<listen address>/mcp`.
    pub public_url: Option<String>,
    /// The sealing key ring; when absent, dev mode generates a key into the data directory.
    pub encryption_key: Option<Ring>,
    /// The secret nodes present to each other's internal listeners.
    pub cluster_secret: Option<String>,
    /// The Raft group. `raft.node_id` is 1 when no id was configured; a node settles its
    /// id against its data directory before it starts (see [`Config::configured_node_id`]).
    pub raft: crate::raft::Config,
    /// The node id named by `--node-id`, `raft.node_id` or `MCP_FLEET_RAFT__NODE_ID`, if
    /// any: it must match the id recorded in the data directory, and `serve` needs one on
    /// a first start.
    pub configured_node_id: Option<crate::raft::NodeId>,
    /// Address of the internal listener.
    pub raft_listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// HTTP.
    pub http: crate::http::Config,
    /// Legacy sessions.
    pub sessions: crate::actors::SessionConfig,
    /// Protocol.
    pub mcp: crate::mcp::Config,
    /// Tool limits.
    pub tools: crate::tools::Config,
    /// Tenant secrets' caps.
    pub secrets: crate::tools::SecretsConfig,
    /// Tool state's caps and lifetime.
    pub tool_state: crate::tools::StateConfig,
    /// Tasks' caps, lifetime and how soon a lost node's tasks end.
    pub tasks: crate::mcp::TasksConfig,
    /// Where `stdio` keeps its single user's secrets and state.
    pub stdio: crate::stdio::Config,
}

impl Config {
    /// Reads and validates configuration: defaults, then `file` (which must exist when
    /// given), then `MCP_FLEET_*` variables (`__` separates levels:
    /// `MCP_FLEET_HTTP__MAX_BODY_BYTES`), then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Error> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(invalid(
                    "config",
                    format!("no such file: {}", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment
            .merge(
                // MCP_FLEET_CONFIG names the file; MCP_FLEET_BIN and
                // MCP_FLEET_CONFORMANCE_BIN name binaries for the test scripts.
                Env::prefixed("MCP_FLEET_")
                    .ignore(&["config", "bin", "conformance_bin"])
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let given = figment.contains("raft.node_id");
        let raw: Raw = figment.extract().map_err(Box::new)?;
        Self::validate(raw, given)
    }

    /// Parses configuration from TOML text alone (no environment), for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let figment = Figment::from(Toml::string(text));
        let given = figment.contains("raft.node_id");
        let raw: Raw = figment.extract().map_err(Box::new)?;
        Self::validate(raw, given)
    }

    /// The caps on what callers can make a node hold: each must leave room for ordinary
    /// use (a 0 would refuse everything, or turn a timeout off).
    fn validate_limits(raw: &Raw) -> Result<(), Error> {
        let http = &raw.http;
        let positive = [
            ("http.max_connections", http.max_connections),
            (
                "http.max_listen_streams_per_principal",
                http.max_listen_streams_per_principal,
            ),
            ("http.max_listen_uris", http.max_listen_uris),
            ("http.max_streams_per_session", http.max_streams_per_session),
            (
                "http.max_resumable_streams_per_session",
                http.max_resumable_streams_per_session,
            ),
            (
                "http.max_pending_requests_per_session",
                http.max_pending_requests_per_session,
            ),
            ("http.max_queued_updates", http.max_queued_updates),
            ("sessions.max_subscriptions", raw.sessions.max_subscriptions),
            ("mcp.max_uri_bytes", raw.mcp.max_uri_bytes),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(key, "must be greater than 0"));
        }
        for (key, timeout) in [
            ("http.body_read_timeout", http.body_read_timeout),
            ("http.head_timeout", http.head_timeout),
        ] {
            if timeout.is_zero() {
                return Err(invalid(
                    key,
                    "must be greater than 0 (0 would mean no timeout)",
                ));
            }
        }
        if http.max_parsed_body_bytes < 64 * 1024 {
            return Err(invalid(
                "http.max_parsed_body_bytes",
                "must be at least 65536: ordinary requests take a few KiB once parsed",
            ));
        }
        if raw.log.flush_interval > Duration::from_secs(60) {
            return Err(invalid(
                "log.flush_interval",
                "must be at most 60s: a line held longer is lost to whoever watches the log",
            ));
        }
        if raw.log.max_buffered_bytes < 4096 {
            return Err(invalid(
                "log.max_buffered_bytes",
                "must be at least 4096: a few lines must fit",
            ));
        }
        if raw.sessions.memory_bytes == 0 {
            return Err(invalid("sessions.memory_bytes", "must be greater than 0"));
        }
        if raw.sessions.max_client_bytes < 4 {
            return Err(invalid(
                "sessions.max_client_bytes",
                "must be at least 4: an empty clientInfo and capabilities take 4 bytes",
            ));
        }
        if raw.mcp.max_request_state_bytes < 1024 {
            return Err(invalid(
                "mcp.max_request_state_bytes",
                "must be at least 1024: a requestState without answers takes about 150 bytes",
            ));
        }
        Ok(())
    }

    /// `node_id_given`: whether `raft.node_id` came from the file, the environment or a
    /// flag rather than the default.
    fn validate(raw: Raw, node_id_given: bool) -> Result<Self, Error> {
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", raw.listen),
            )
        })?;
        match raw.auth.mode {
            auth::Mode::None | auth::Mode::Dev if !listen.ip().is_loopback() => {
                let mode = if raw.auth.mode == auth::Mode::None {
                    "none"
                } else {
                    "dev"
                };
                return Err(invalid(
                    "auth.mode",
                    format!(
                        "`{mode}` is only allowed on a loopback address, and listen is {listen}"
                    ),
                ));
            }
            auth::Mode::Jwt if raw.auth.issuers.is_empty() => {
                return Err(invalid(
                    "auth.issuers",
                    "`jwt` needs at least one issuer (--issuer URL, or [[auth.issuers]])",
                ));
            }
            _ => {}
        }
        for issuer in &raw.auth.issuers {
            if !(issuer.issuer.starts_with("https://") || issuer.issuer.starts_with("http://")) {
                return Err(invalid(
                    "auth.issuers.issuer",
                    format!("`{}` is not an http(s) URL", issuer.issuer),
                ));
            }
            if issuer.forward_token && issuer.token_exchange.is_some() {
                return Err(invalid(
                    "auth.issuers.forward_token",
                    format!(
                        "issuer `{}` both forwards callers' tokens and exchanges them; choose one",
                        issuer.issuer
                    ),
                ));
            }
            if let Some(exchange) = &issuer.token_exchange {
                if exchange.client_id.is_empty() {
                    return Err(invalid(
                        "auth.issuers.token_exchange.client_id",
                        "must not be empty",
                    ));
                }
                if let Some(url) = &exchange.endpoint {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid(
                            "auth.issuers.token_exchange.endpoint",
                            format!("`{url}` is not an http(s) URL"),
                        ));
                    }
                }
            }
            for alg in &issuer.algorithms {
                if !auth::ALGORITHMS.contains(&alg.as_str()) {
                    return Err(invalid(
                        "auth.issuers.algorithms",
                        format!(
                            "`{alg}` is not allowed; choose from {}",
                            auth::ALGORITHMS.join(", ")
                        ),
                    ));
                }
            }
        }
        if raw.auth.max_concurrent_introspections == 0 {
            return Err(invalid(
                "auth.max_concurrent_introspections",
                "must be greater than 0, or no opaque token could ever be checked",
            ));
        }
        if let Some(url) = &raw.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    "public_url",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        let encryption_key = raw
            .encryption_key
            .as_deref()
            .map(Ring::from_config)
            .transpose()
            // The value itself is a secret and is never echoed; ring errors never quote keys.
            .map_err(|e| Error::InvalidSecret {
                key: "encryption_key",
                message: format!("must be 64 hex characters (32 bytes) or a key-ring file: {e}"),
            })?;
        if let Some(secret) = &raw.cluster_secret {
            if secret.len() < 16 {
                return Err(Error::InvalidSecret {
                    key: "cluster_secret",
                    message: "must be at least 16 characters".to_owned(),
                });
            }
        }
        let raft_listen: SocketAddr = raw.raft.listen.parse().map_err(|_| {
            invalid(
                "raft.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:7000",
                    raw.raft.listen
                ),
            )
        })?;
        if raft_listen == listen && listen.port() != 0 {
            return Err(invalid(
                "raft.listen",
                "must differ from listen: the public listener never serves Raft",
            ));
        }
        // Without a configured id the node's recorded id is checked at start instead.
        if node_id_given
            && !raw.raft.peers.is_empty()
            && !raw.raft.peers.contains_key(&raw.raft.node_id)
        {
            return Err(invalid(
                "raft.peers",
                format!(
                    "does not list this node (raft.node_id = {})",
                    raw.raft.node_id
                ),
            ));
        }
        for addr in raw.raft.peers.values() {
            crate::raft::parse_peers(&format!("0={addr}")).map_err(|e| invalid("raft.peers", e))?;
        }
        if raw.raft.heartbeat_interval.is_zero()
            || raw.raft.election_timeout <= raw.raft.heartbeat_interval
        {
            return Err(invalid(
                "raft.election_timeout",
                "must be longer than raft.heartbeat_interval, which must be above 0",
            ));
        }
        if raw.raft.snapshot_after == 0 {
            return Err(invalid("raft.snapshot_after", "must be greater than 0"));
        }
        check_raft_sizes(&raw.raft)?;
        if raw.raft.cache_bytes < MIN_CACHE_BYTES {
            return Err(invalid(
                "raft.cache_bytes",
                format!("must be at least {MIN_CACHE_BYTES} (1 MiB)"),
            ));
        }
        if raw.http.max_body_bytes == 0 {
            return Err(invalid("http.max_body_bytes", "must be greater than 0"));
        }
        if raw.http.max_stream_events == 0 {
            return Err(invalid("http.max_stream_events", "must be greater than 0"));
        }
        if raw.http.max_stream_bytes == 0 {
            return Err(invalid("http.max_stream_bytes", "must be greater than 0"));
        }
        if raw.http.stream_retention.is_zero() {
            return Err(invalid(
                "http.stream_retention",
                "must be greater than 0 (a broken stream could never be resumed)",
            ));
        }
        if raw.sessions.ttl.is_zero() {
            return Err(invalid("sessions.ttl", "must be greater than 0"));
        }
        if raw.sessions.max_per_principal == 0 {
            return Err(invalid(
                "sessions.max_per_principal",
                "must be greater than 0 (legacy clients could never start a session)",
            ));
        }
        if raw.mcp.page_size == 0 {
            return Err(invalid("mcp.page_size", "must be greater than 0"));
        }
        Self::validate_limits(&raw)?;
        let http = &raw.tools.http;
        for (key, timeout) in [
            ("tools.http.connect_timeout", http.connect_timeout),
            ("tools.http.timeout", http.timeout),
        ] {
            if timeout.is_zero() {
                return Err(invalid(
                    key,
                    "must be greater than 0 (0 would mean no timeout)",
                ));
            }
        }
        if http.max_response_bytes == 0 {
            return Err(invalid(
                "tools.http.max_response_bytes",
                "must be greater than 0",
            ));
        }
        check_storage_caps(&raw)?;
        check_tasks(&raw.tasks)?;
        check_stdio_tokens(&raw.stdio)?;
        let limits = std::iter::once(&raw.tools.default).chain(raw.tools.per_tool.values());
        for limit in limits {
            if limit.concurrency == 0 {
                return Err(invalid("tools.concurrency", "must be greater than 0"));
            }
            if limit.timeout.is_zero() {
                return Err(invalid("tools.timeout", "must be greater than 0"));
            }
        }
        let mut auth = raw.auth;
        if let Some(path) = &auth.ca_file {
            auth.ca_certs =
                auth::IssuerCas::load(path).map_err(|e| invalid("auth.ca_file", e.to_string()))?;
        }
        Ok(Self {
            listen,
            data_dir: raw.data_dir,
            auth,
            public_url: raw.public_url,
            encryption_key,
            cluster_secret: raw.cluster_secret,
            configured_node_id: node_id_given.then_some(raw.raft.node_id),
            raft: raw.raft,
            raft_listen,
            log: raw.log,
            http: raw.http,
            sessions: raw.sessions,
            mcp: raw.mcp,
            tools: raw.tools,
            secrets: raw.secrets,
            tool_state: raw.tool_state,
            tasks: raw.tasks,
            stdio: raw.stdio,
        })
    }
}

/// `[stdio.tokens]`: each audience is one `ctx.token_for` may ask for (1 to 1024 bytes,
/// as on a fleet), and each names exactly one place to read its token from.
fn check_stdio_tokens(stdio: &crate::stdio::Config) -> Result<(), Error> {
    for (audience, source) in &stdio.tokens {
        if audience.is_empty() || audience.len() > 1024 {
            return Err(invalid(
                "stdio.tokens",
                format!("the audience `{audience}` must be 1 to 1024 bytes"),
            ));
        }
        match (&source.env, &source.file) {
            (Some(var), None) if var.is_empty() => {
                return Err(invalid(
                    "stdio.tokens",
                    format!("audience `{audience}`: env must name a variable"),
                ))
            }
            (None, Some(path)) if path.as_os_str().is_empty() => {
                return Err(invalid(
                    "stdio.tokens",
                    format!("audience `{audience}`: file must name a file"),
                ))
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    "stdio.tokens",
                    format!(
                        "audience `{audience}` needs exactly one of env = \"VARIABLE\" and \
                         file = \"PATH\" (the token itself never goes in the configuration)"
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Tenant secrets' and tool state's caps: none may be zero (nothing could be stored). A
/// value that passes its cap but not `raft.max_entry_bytes` is refused by the store.
fn check_storage_caps(raw: &Raw) -> Result<(), Error> {
    let s = &raw.secrets;
    let t = &raw.tool_state;
    for (key, value) in [
        ("secrets.max_name_bytes", s.max_name_bytes),
        ("secrets.max_tenant_bytes", s.max_tenant_bytes),
        ("secrets.max_value_bytes", s.max_value_bytes),
        ("secrets.max_per_tenant", s.max_per_tenant),
        ("tool_state.max_key_bytes", t.max_key_bytes),
        ("tool_state.max_value_bytes", t.max_value_bytes),
        (
            "tool_state.max_keys_per_principal",
            t.max_keys_per_principal,
        ),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    if t.ttl.is_zero() {
        return Err(invalid("tool_state.ttl", "must be greater than 0"));
    }
    Ok(())
}

/// Tasks: no cap or duration may be zero (no task could be held, or every task would end
/// at once).
fn check_tasks(tasks: &crate::mcp::TasksConfig) -> Result<(), Error> {
    for (key, value) in [
        ("tasks.max_result_bytes", tasks.max_result_bytes),
        (
            "tasks.max_tasks_per_principal",
            tasks.max_tasks_per_principal,
        ),
        ("tasks.max_input_bytes", tasks.max_input_bytes),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    for (key, value) in [
        ("tasks.ttl", tasks.ttl),
        ("tasks.poll_interval", tasks.poll_interval),
    ] {
        if value.is_zero() {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    // The lease is renewed every third of it: below 300 ms renewals would crowd the log.
    if tasks.owner_lost_after < std::time::Duration::from_millis(300) {
        return Err(invalid(
            "tasks.owner_lost_after",
            "must be at least 300ms (the running node renews its lease every third of it)",
        ));
    }
    Ok(())
}

/// Smallest `raft.cache_bytes` accepted: below a few pages, every write reads its page
/// back from disk.
const MIN_CACHE_BYTES: u64 = 1024 * 1024;

/// Largest `raft.max_append_bytes` accepted: one AppendEntries must complete within a
/// heartbeat interval, and the internal listener reads it into memory whole.
const MAX_APPEND_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// The entry cap and the AppendEntries budget must agree: one entry of the largest size,
/// with the request around it, fits the budget (else no split could ever send it within
/// the RPC timeout). The internal listener's body limit is derived from the budget
/// ([`crate::raft::Config::internal_body_bytes`]), so it agrees by construction.
fn check_raft_sizes(raft: &crate::raft::Config) -> Result<(), Error> {
    if raft.max_append_bytes == 0 || raft.max_append_bytes > MAX_APPEND_BYTES_CEILING {
        return Err(invalid(
            "raft.max_append_bytes",
            format!("must be between 1 and {MAX_APPEND_BYTES_CEILING}"),
        ));
    }
    if raft.max_entry_bytes == 0 {
        return Err(invalid("raft.max_entry_bytes", "must be greater than 0"));
    }
    if raft.max_entry_writes == 0 {
        return Err(invalid("raft.max_entry_writes", "must be at least 1"));
    }
    if raft.max_proposed_entries == 0 {
        return Err(invalid("raft.max_proposed_entries", "must be at least 1"));
    }
    let needed = raft
        .max_entry_bytes
        .saturating_add(crate::raft::APPEND_ENVELOPE_BYTES);
    if needed > raft.max_append_bytes {
        return Err(invalid(
            "raft.max_entry_bytes",
            format!(
                "must leave {} bytes of raft.max_append_bytes ({}) for the request around \
                 the entry: at most {}",
                crate::raft::APPEND_ENVELOPE_BYTES,
                raft.max_append_bytes,
                raft.max_append_bytes
                    .saturating_sub(crate::raft::APPEND_ENVELOPE_BYTES)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("listen = \"nope\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen`"), "{err}");
        let err = Config::from_toml("[http]\nmax_body_bytes = \"big\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = Config::from_toml("bogus = 1").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = Config::from_toml("[tools.default]\ntimeout = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tools.timeout"), "{err}");
        let err = Config::from_toml("[sessions]\nmax_per_principal = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sessions.max_per_principal"), "{err}");
    }

    #[test]
    fn stream_caps_are_read_under_the_old_name_too_and_zero_is_refused_by_key() {
        let c = Config::from_toml("[http]\nevent_buffer = 7\nstream_retention = \"2m\"").unwrap();
        assert_eq!(c.http.max_stream_events, 7);
        assert_eq!(c.http.stream_retention, std::time::Duration::from_secs(120));
        for key in [
            "max_stream_events = 0",
            "max_stream_bytes = 0",
            "stream_retention = \"0s\"",
        ] {
            let err = Config::from_toml(&format!("[http]\n{key}"))
                .unwrap_err()
                .to_string();
            let name = key.split(' ').next().unwrap_or_default();
            assert!(err.contains(&format!("http.{name}")), "{err}");
        }
    }

    #[test]
    fn log_batching_is_read_and_nonsense_is_refused_by_key() {
        let c =
            Config::from_toml("[log]\nflush_interval = \"0s\"\nmax_buffered_bytes = 8192").unwrap();
        assert_eq!(
            c.log.flush_interval,
            Duration::ZERO,
            "0s writes every line at once"
        );
        assert_eq!(c.log.max_buffered_bytes, 8192);
        for (toml, key) in [
            ("[log]\nflush_interval = \"61s\"", "log.flush_interval"),
            ("[log]\nmax_buffered_bytes = 4095", "log.max_buffered_bytes"),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn upstream_settings_are_read_and_nonsense_is_refused_by_key() {
        let c = Config::from_toml(
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://i\"\n\
             [auth.issuers.token_exchange]\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [tools.http]\ntimeout = \"3s\"\nmax_response_bytes = 100",
        )
        .unwrap();
        let exchange = c.auth.issuers[0].token_exchange.as_ref().unwrap();
        assert_eq!(
            (exchange.client_id.as_str(), exchange.endpoint.as_deref()),
            ("c", None)
        );
        assert!(!c.auth.issuers[0].forward_token, "off unless asked for");
        assert_eq!(c.tools.http.timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.tools.http.max_response_bytes, 100);
        for (toml, key) in [
            (
                "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://i\"\n\
                 forward_token = true\n[auth.issuers.token_exchange]\nclient_id = \"c\"\n\
                 client_secret = \"s\"",
                "auth.issuers.forward_token",
            ),
            (
                "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://i\"\n\
                 [auth.issuers.token_exchange]\nclient_id = \"c\"\nclient_secret = \"s\"\n\
                 endpoint = \"ftp://i/token\"",
                "auth.issuers.token_exchange.endpoint",
            ),
            ("[tools.http]\ntimeout = \"0s\"", "tools.http.timeout"),
            (
                "[tools.http]\nconnect_timeout = \"0s\"",
                "tools.http.connect_timeout",
            ),
            (
                "[tools.http]\nmax_response_bytes = 0",
                "tools.http.max_response_bytes",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn secrets_and_state_caps_are_checked_naming_the_key() {
        for (toml, key) in [
            ("[secrets]\nmax_value_bytes = 0", "secrets.max_value_bytes"),
            ("[secrets]\nmax_per_tenant = 0", "secrets.max_per_tenant"),
            (
                "[tool_state]\nmax_keys_per_principal = 0",
                "tool_state.max_keys_per_principal",
            ),
            ("[tool_state]\nttl = \"0s\"", "tool_state.ttl"),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let c = Config::from_toml("[stdio]\nsecrets_env_prefix = \"ACME_\"").unwrap();
        assert_eq!(c.stdio.secrets_env_prefix.as_deref(), Some("ACME_"));
        assert_eq!(c.secrets.max_per_tenant, 100);
    }

    #[test]
    fn task_caps_and_durations_are_checked_naming_the_key() {
        for (toml, key) in [
            ("[tasks]\nmax_result_bytes = 0", "tasks.max_result_bytes"),
            (
                "[tasks]\nmax_tasks_per_principal = 0",
                "tasks.max_tasks_per_principal",
            ),
            ("[tasks]\nmax_input_bytes = 0", "tasks.max_input_bytes"),
            ("[tasks]\nttl = \"0s\"", "tasks.ttl"),
            ("[tasks]\npoll_interval = \"0s\"", "tasks.poll_interval"),
            (
                "[tasks]\nowner_lost_after = \"100ms\"",
                "tasks.owner_lost_after",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.tasks.max_result_bytes, 1024 * 1024);
        assert_eq!(c.tasks.owner_lost_after, std::time::Duration::from_secs(5));
    }

    #[test]
    fn stdio_tokens_are_named_not_given_and_nonsense_is_refused_by_key() {
        let c = Config::from_toml(
            "[stdio.tokens]\n\"https://api.acme.com\" = { env = \"ACME_API_TOKEN\" }\n\
             crm = { file = \"crm-token\" }",
        )
        .unwrap();
        assert_eq!(
            c.stdio.tokens["https://api.acme.com"].env.as_deref(),
            Some("ACME_API_TOKEN")
        );
        assert_eq!(
            c.stdio.tokens["crm"].file.as_deref(),
            Some(std::path::Path::new("crm-token"))
        );
        for toml in [
            "[stdio.tokens]\n\"\" = { env = \"T\" }",
            "[stdio.tokens]\napi = { env = \"\" }",
            "[stdio.tokens]\napi = { file = \"\" }",
            "[stdio.tokens]\napi = {}",
            "[stdio.tokens]\napi = { env = \"T\", file = \"t\" }",
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains("`stdio.tokens`"), "{toml}: {err}");
        }
        let too_long = format!(
            "[stdio.tokens]\n\"{}\" = {{ env = \"T\" }}",
            "a".repeat(1025)
        );
        assert!(Config::from_toml(&too_long).is_err());
        // The token itself has no key to go under.
        let err = Config::from_toml("[stdio.tokens]\napi = { value = \"s3cret\" }")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn read_errors_name_the_key_without_internal_prefixes() {
        let err = Config::from_toml("[http]\nmax_body_bytes = \"big\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration key `http.max_body_bytes`: invalid type"),
            "{err}"
        );
        assert!(!err.contains("default."), "{err}");
    }

    #[test]
    fn auth_none_needs_loopback() {
        let err = Config::from_toml("listen = \"0.0.0.0:8080\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`auth.mode`"), "{err}");
        let err = Config::from_toml("listen = \"0.0.0.0:8080\"\n[auth]\nmode = \"dev\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`auth.mode`"), "{err}");
        let err = Config::from_toml("[auth]\nmode = \"jwt\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.issuers"), "{err}");
        let c = Config::from_toml(
            "listen = \"0.0.0.0:8080\"\n[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://id.example.com\"\npreset = \"entra\"",
        )
        .unwrap();
        assert_eq!(c.auth.issuers[0].preset, auth::Preset::Entra);
        let err = Config::from_toml(
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://i\"\nalgorithms = [\"HS256\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("HS256"), "{err}");
    }

    #[test]
    fn introspection_rules_and_their_defaults() {
        let c = Config::from_toml(
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://i\"\n\
             [auth.issuers.introspection]\nendpoint = \"https://i/introspect\"\n\
             client_id = \"c\"\nclient_secret = \"s\"",
        )
        .unwrap();
        let rules = c.auth.issuers[0].introspection.as_ref().unwrap();
        assert!(rules.require_audience && rules.allowed_client_ids.is_empty());
        assert_eq!(
            c.auth.negative_cache_ttl,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(c.auth.max_negative_cache, 10_000);
        assert_eq!(c.auth.max_concurrent_introspections, 16);
        assert_eq!(c.auth.introspection_wait, std::time::Duration::from_secs(1));
        let c = Config::from_toml(
            "[auth]\nnegative_cache_ttl = \"5s\"\n[[auth.issuers]]\nissuer = \"https://i\"\n\
             [auth.issuers.introspection]\nendpoint = \"e\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nrequire_audience = false\nallowed_client_ids = [\"app\"]",
        )
        .unwrap();
        let rules = c.auth.issuers[0].introspection.as_ref().unwrap();
        assert!(!rules.require_audience);
        assert_eq!(rules.allowed_client_ids, ["app"]);
        assert_eq!(c.auth.negative_cache_ttl, std::time::Duration::from_secs(5));
        let err = Config::from_toml("[auth]\nmax_concurrent_introspections = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.max_concurrent_introspections"), "{err}");
    }

    #[test]
    fn an_empty_issuer_ca_file_is_none_and_a_missing_one_is_refused_by_key_and_path() {
        let c = Config::from_toml("[auth]\nca_file = \"\"").unwrap();
        assert_eq!(c.auth.ca_file, None);
        assert!(c.auth.ca_certs.is_empty());
        assert!(Config::from_toml("").unwrap().auth.ca_certs.is_empty());
        let err = Config::from_toml("[auth]\nca_file = \"/nonexistent/issuer-ca.pem\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`auth.ca_file`") && err.contains("/nonexistent/issuer-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_not_echoed() {
        let err = Config::from_toml("cluster_secret = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster_secret")
                && err.contains("MCP_FLEET_CLUSTER_SECRET")
                && !err.contains("short\""),
            "{err}"
        );
        let err = Config::from_toml("encryption_key = \"secretsecret\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("encryption_key")
                && err.contains("MCP_FLEET_ENCRYPTION_KEY")
                && !err.contains("secretsecret"),
            "{err}"
        );
    }

    #[test]
    fn raft_settings_are_checked() {
        let c = Config::from_toml(
            "[raft]\nnode_id = 2\nlisten = \"127.0.0.1:7002\"\n[raft.peers]\n1 = \"a:7001\"\n2 = \"b:7002\"",
        )
        .unwrap();
        assert_eq!(c.raft.peers.len(), 2);
        assert_eq!(c.raft_listen.port(), 7002);
        assert_eq!(c.configured_node_id, Some(2));
        let err = Config::from_toml("[raft]\nnode_id = 1\n[raft.peers]\n2 = \"b:7002\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.peers"), "{err}");
        // Without an id, the one recorded in the data directory is checked at start.
        let c = Config::from_toml("[raft.peers]\n2 = \"b:7002\"").unwrap();
        assert_eq!(c.configured_node_id, None);
        let err = Config::from_toml("[raft]\nlisten = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.listen"), "{err}");
    }

    #[test]
    fn caps_parse_and_are_checked() {
        let c = Config::from_toml(
            "[http]\nmax_connections = 100\nworkers = 3\nbody_read_timeout = \"2s\"\n\
             [sessions]\nmemory_bytes = 1048576\nmax_client_bytes = 512\n\
             [mcp]\nmax_request_state_bytes = 4096",
        )
        .unwrap();
        assert_eq!(c.http.connections_per_worker(), 33);
        assert_eq!(c.http.body_read_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.sessions.memory_bytes, 1 << 20);
        assert_eq!(c.mcp.max_request_state_bytes, 4096);
        for (toml, key) in [
            ("[http]\nmax_connections = 0", "http.max_connections"),
            (
                "[http]\nbody_read_timeout = \"0s\"",
                "http.body_read_timeout",
            ),
            ("[http]\nhead_timeout = \"0s\"", "http.head_timeout"),
            ("[http]\nmax_listen_uris = 0", "http.max_listen_uris"),
            (
                "[http]\nmax_pending_requests_per_session = 0",
                "http.max_pending_requests_per_session",
            ),
            (
                "[http]\nmax_parsed_body_bytes = 10",
                "http.max_parsed_body_bytes",
            ),
            ("[sessions]\nmemory_bytes = 0", "sessions.memory_bytes"),
            (
                "[sessions]\nmax_client_bytes = 2",
                "sessions.max_client_bytes",
            ),
            (
                "[mcp]\nmax_request_state_bytes = 10",
                "mcp.max_request_state_bytes",
            ),
            ("[raft]\ncache_bytes = 65536", "raft.cache_bytes"),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        // The count of the memory tier is gone; its bytes replace it.
        let err = Config::from_toml("[sessions]\nmemory_capacity = 10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_capacity"), "{err}");
    }

    #[test]
    fn an_entry_must_fit_the_append_budget() {
        let c =
            Config::from_toml("[raft]\nmax_append_bytes = 65536\nmax_entry_bytes = 16384").unwrap();
        assert_eq!(c.raft.max_append_bytes, 65536);
        let err = Config::from_toml("[raft]\nmax_append_bytes = 65536\nmax_entry_bytes = 65536")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("raft.max_entry_bytes") && err.contains("64512"),
            "{err}"
        );
        let err = Config::from_toml("[raft]\nmax_append_bytes = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.max_append_bytes"), "{err}");
        let err = Config::from_toml("[raft]\nmax_entry_bytes = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.max_entry_bytes"), "{err}");
    }

    #[test]
    fn entries_carry_at_least_one_write_and_one_is_always_proposed() {
        let c = Config::from_toml(
            "[raft]
max_entry_writes = 1
max_proposed_entries = 4",
        )
        .unwrap();
        assert_eq!(
            (c.raft.max_entry_writes, c.raft.max_proposed_entries),
            (1, 4)
        );
        for key in ["max_entry_writes", "max_proposed_entries"] {
            let err = Config::from_toml(&format!("[raft]\n{key} = 0"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("raft.{key}")), "{err}");
        }
    }

    #[test]
    fn durations_and_tool_limits_parse() {
        let c = Config::from_toml(
            "[tools.default]\nconcurrency = 4\ntimeout = \"2s\"\n[tools.per_tool.echo]\ntimeout = \"250ms\"",
        )
        .unwrap();
        assert_eq!(c.tools.limits("other").concurrency, 4);
        assert_eq!(
            c.tools.limits("echo").timeout,
            std::time::Duration::from_millis(250)
        );
    }
}
