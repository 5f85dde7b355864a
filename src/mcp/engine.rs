//! Dispatch: every MCP method, for both eras, over any transport.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::jsonrpc::RpcError;
use super::{
    Version, META_CLIENT_CAPABILITIES, META_LOG_LEVEL, META_PROTOCOL_VERSION, META_SERVER_INFO,
};
use crate::actors::{Session, SessionHandle, ToolPool};
use crate::auth::Principal;
use crate::crypto::Sealer;
use crate::tools::{self, Context, LogLevel, Peer, Registry, Updates};

/// Protocol settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a `requestState` handed to a client stays valid.
    #[serde(with = "humantime_serde")]
    pub request_state_ttl: Duration,
    /// `ttlMs` on list results and discovery.
    #[serde(with = "humantime_serde")]
    pub list_ttl: Duration,
    /// Items per page of a list result.
    pub page_size: usize,
    /// Guidance for the model, returned by `initialize` and `server/discover`.
    pub instructions: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_state_ttl: Duration::from_secs(600),
            list_ttl: Duration::from_secs(60),
            page_size: 100,
            instructions: None,
        }
    }
}

/// This server's name and version, as clients see them.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self {
            name: "mcp-fleet".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What a 2026-07-28 request declares in its `_meta`.
#[derive(Debug, Clone)]
pub struct ModernMeta {
    /// The protocol version.
    pub version: Version,
    /// The client's capabilities for this request.
    pub client_capabilities: Value,
    /// The log level the client asked for, if any.
    pub log_level: Option<LogLevel>,
}

impl ModernMeta {
    /// Whether `params` declare a 2026-07-28 request (a protocol version in `_meta`).
    pub fn declared(params: &Map<String, Value>) -> bool {
        params
            .get("_meta")
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .is_some()
    }

    /// Reads a request's `_meta`. `Ok(None)` when it carries no protocol version (a legacy
    /// request); an error when the version is unsupported or the rest is malformed.
    pub fn parse(params: &Map<String, Value>) -> Result<Option<Self>, RpcError> {
        let Some(meta) = params.get("_meta").and_then(Value::as_object) else {
            return Ok(None);
        };
        let Some(version) = meta.get(META_PROTOCOL_VERSION) else {
            return Ok(None);
        };
        let requested = version.as_str().ok_or_else(|| {
            RpcError::invalid_params(format!("_meta {META_PROTOCOL_VERSION} must be a string"))
        })?;
        let version = match Version::parse(requested) {
            Some(v) if !v.is_legacy() => v,
            _ => return Err(RpcError::unsupported_version(requested)),
        };
        let client_capabilities = match meta.get(META_CLIENT_CAPABILITIES) {
            Some(c @ Value::Object(_)) => c.clone(),
            Some(_) => {
                return Err(RpcError::invalid_params(format!(
                    "_meta {META_CLIENT_CAPABILITIES} must be an object"
                )))
            }
            None => {
                return Err(RpcError::invalid_params(format!(
                    "_meta {META_CLIENT_CAPABILITIES} is required"
                )))
            }
        };
        let log_level = match meta.get(META_LOG_LEVEL) {
            None => None,
            Some(v) => Some(v.as_str().and_then(LogLevel::parse).ok_or_else(|| {
                RpcError::invalid_params(format!("_meta {META_LOG_LEVEL} is not a log level"))
            })?),
        };
        Ok(Some(Self {
            version,
            client_capabilities,
            log_level,
        }))
    }
}

/// Which era a request belongs to.
#[derive(Debug, Clone)]
pub enum Era {
    /// A request on a legacy session.
    Legacy(Arc<Session>),
    /// A stateless 2026-07-28 request.
    Modern(ModernMeta),
}

/// One request as the engine sees it.
pub struct Call {
    /// The caller.
    pub principal: Arc<Principal>,
    /// The era and its state.
    pub era: Era,
    /// How to reach the client while the request runs.
    pub peer: Arc<dyn Peer>,
    /// Cancelled when the client cancels or goes away.
    pub cancel: CancellationToken,
}

/// The protocol engine shared by every transport.
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) info: ServerInfo,
    pub(super) config: Config,
    pub(super) registry: Registry,
    pub(super) tools: ToolPool,
    pub(super) sessions: SessionHandle,
    pub(super) sealer: Sealer,
    pub(super) updates: Updates,
    /// Per-tool scopes, when authentication enforces them.
    pub(super) access: Option<crate::auth::Config>,
    /// Refusal counters and in-use gauges of the caps.
    pub(super) limits: crate::limits::Limits,
}

impl Engine {
    /// An engine over a registry whose tool actors are already running.
    pub fn new(
        info: ServerInfo,
        config: Config,
        registry: Registry,
        tools: ToolPool,
        sessions: SessionHandle,
        sealer: Sealer,
        limits: crate::limits::Limits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                info,
                config,
                registry,
                tools,
                sessions,
                sealer,
                updates: Updates::default(),
                access: None,
                limits,
            }),
        }
    }

    /// Enforces per-tool scopes: `tools/list` then shows a caller only the tools its
    /// scopes allow, and `tools/call` refuses the others. Call before sharing the engine.
    pub fn with_access(mut self, access: crate::auth::Config) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.access = Some(access);
        }
        self
    }

    /// The scopes `principal` lacks to call `tool`, when per-tool scopes are enforced.
    pub fn missing_scopes(&self, principal: &Principal, tool: &str) -> Option<Vec<String>> {
        let needed = self.inner.access.as_ref()?.scopes_for_tool(tool);
        (!principal.has_scopes(&needed)).then_some(needed)
    }

    /// Parameters tool `name` mirrors into `Mcp-Param-*` headers (none for unknown tools).
    pub fn header_params(&self, name: &str) -> &[crate::tools::HeaderParam] {
        self.inner
            .tools
            .get(name)
            .map_or(&[], |tool| tool.header_params())
    }

    /// Resource update announcements on this node.
    pub fn updates(&self) -> &Updates {
        &self.inner.updates
    }

    /// The refusal counters and in-use gauges of this node's caps.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.inner.limits
    }

    /// The legacy sessions.
    pub fn sessions(&self) -> &SessionHandle {
        &self.inner.sessions
    }

    fn capabilities(&self) -> Value {
        json!({
            "tools": { "listChanged": false },
            "resources": { "subscribe": true, "listChanged": false },
            "prompts": { "listChanged": false },
            "completions": {},
            "logging": {},
        })
    }

    /// Answers `initialize`: negotiates a legacy version and returns the new (not yet
    /// stored) session with the result to send.
    pub fn initialize(
        &self,
        params: &Map<String, Value>,
        principal: Principal,
    ) -> Result<(Session, Value), RpcError> {
        let requested = str_param(params, "protocolVersion")?;
        let version = match Version::parse(requested) {
            Some(v) if v.is_legacy() => v,
            _ => Version::LATEST_LEGACY,
        };
        let capabilities = match params.get("capabilities") {
            Some(c @ Value::Object(_)) => c.clone(),
            None => json!({}),
            Some(_) => return Err(RpcError::invalid_params("capabilities must be an object")),
        };
        let client_info = params
            .get("clientInfo")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let session = Session::new(
            version,
            principal,
            client_info,
            capabilities,
            self.inner.sessions.ttl(),
        );
        let mut result = json!({
            "protocolVersion": version.as_str(),
            "capabilities": self.capabilities(),
            "serverInfo": { "name": self.inner.info.name, "version": self.inner.info.version },
        });
        if let Some(instructions) = &self.inner.config.instructions {
            result["instructions"] = json!(instructions);
        }
        Ok((session, result))
    }

    /// Handles one request and returns its result (with the era's envelope applied).
    pub async fn handle(
        &self,
        call: &Call,
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let modern = matches!(call.era, Era::Modern(_));
        tracing::debug!(method, modern, subject = %call.principal.subject, "request");
        let mut result = match method {
            // 2026-07-28 removed ping, logging/setLevel and resource subscriptions.
            "ping" if !modern => Ok(json!({})),
            "server/discover" if modern => self.discover(),
            "tools/list" => self.list(
                &params,
                self.inner
                    .tools
                    .all()
                    .iter()
                    .filter(|t| self.missing_scopes(&call.principal, t.name()).is_none())
                    .map(|t| t.listing().clone()),
                "tools",
            ),
            "tools/call" => self.call_tool(call, &params).await,
            "resources/list" => self.list(
                &params,
                self.inner
                    .registry
                    .resources
                    .iter()
                    .map(|r| r.listing.clone()),
                "resources",
            ),
            "resources/templates/list" => self.list(
                &params,
                self.inner
                    .registry
                    .templates
                    .iter()
                    .map(|t| t.listing.clone()),
                "resourceTemplates",
            ),
            "resources/read" => self.read_resource(call, &params).await,
            "resources/subscribe" if !modern => self.subscribe(call, &params, true).await,
            "resources/unsubscribe" if !modern => self.subscribe(call, &params, false).await,
            "prompts/list" => self.list(
                &params,
                self.inner
                    .registry
                    .prompts
                    .iter()
                    .map(|p| p.listing.clone()),
                "prompts",
            ),
            "prompts/get" => self.get_prompt(call, &params).await,
            "completion/complete" => self.complete(&params),
            "logging/setLevel" if !modern => self.set_level(call, &params).await,
            _ => Err(RpcError::method_not_found(method)),
        }?;
        if modern {
            self.envelope(method, &mut result);
        }
        Ok(result)
    }

    /// Adds what every 2026-07-28 result carries: `resultType`, server info, cache hints.
    fn envelope(&self, method: &str, result: &mut Value) {
        let Some(obj) = result.as_object_mut() else {
            return;
        };
        obj.entry("resultType").or_insert_with(|| json!("complete"));
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                META_SERVER_INFO.into(),
                json!({ "name": self.inner.info.name, "version": self.inner.info.version }),
            );
        }
        let cache_scope = match method {
            // What a caller sees of the tool list depends on its scopes.
            "tools/list" if self.inner.access.is_some() => "private",
            "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list" => "public",
            "resources/read" => "private",
            _ => return,
        };
        if obj.get("resultType") == Some(&json!("complete")) {
            obj.insert(
                "ttlMs".into(),
                json!(self.inner.config.list_ttl.as_millis() as u64),
            );
            obj.insert("cacheScope".into(), json!(cache_scope));
        }
    }

    fn discover(&self) -> Result<Value, RpcError> {
        let mut result = json!({
            "supportedVersions": Version::supported_strings(),
            "capabilities": self.capabilities(),
        });
        if let Some(instructions) = &self.inner.config.instructions {
            result["instructions"] = json!(instructions);
        }
        Ok(result)
    }

    pub(super) fn context(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        peer: Arc<dyn Peer>,
    ) -> Context {
        let (log_level, client_capabilities) = match &call.era {
            Era::Legacy(session) => (session.log_level, session.client_capabilities.clone()),
            Era::Modern(meta) => (meta.log_level, meta.client_capabilities.clone()),
        };
        let progress_token = params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
            .cloned();
        Context::new(tools::Scope {
            principal: call.principal.clone(),
            peer,
            progress_token,
            log_level,
            client_capabilities,
            cancel: call.cancel.clone(),
            updates: self.inner.updates.clone(),
        })
    }

    async fn set_level(&self, call: &Call, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let Era::Legacy(session) = &call.era else {
            return Err(RpcError::method_not_found("logging/setLevel"));
        };
        let level = params
            .get("level")
            .and_then(Value::as_str)
            .and_then(LogLevel::parse)
            .ok_or_else(|| RpcError::invalid_params("level must be a log level"))?;
        let mut updated = (**session).clone();
        updated.log_level = Some(level);
        self.store(updated).await?;
        Ok(json!({}))
    }

    async fn subscribe(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        on: bool,
    ) -> Result<Value, RpcError> {
        let Era::Legacy(session) = &call.era else {
            return Err(RpcError::method_not_found("resources/subscribe"));
        };
        let uri = str_param(params, "uri")?;
        let mut updated = (**session).clone();
        updated.subscriptions.retain(|s| s != uri);
        if on {
            updated.subscriptions.push(uri.to_owned());
        }
        if updated.subscriptions != session.subscriptions {
            self.store(updated).await?;
        }
        Ok(json!({}))
    }

    async fn store(&self, session: Session) -> Result<(), RpcError> {
        self.inner.sessions.put(session).await.map_err(|e| {
            tracing::error!(error = %e, "could not store a session");
            RpcError::internal("the session could not be stored")
        })
    }
}

/// The string parameter `key`, which the method requires.
pub(super) fn str_param<'a>(
    params: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, RpcError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("params.{key} must be a string")))
}

/// The object parameter `key`; empty when absent or null.
pub(super) fn object_param(
    params: &Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(_) => Err(RpcError::invalid_params(format!(
            "params.{key} must be an object"
        ))),
    }
}
