//! Dispatch: every MCP method, for both eras, over any transport.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{RpcError, SESSION_NOT_FOUND};
use super::{
    Version, META_CLIENT_CAPABILITIES, META_LOG_LEVEL, META_PROTOCOL_VERSION, META_SERVER_INFO,
};
use crate::actors::{Session, SessionHandle, ToolPool, MAX_CLIENT_BYTES, MAX_SUBSCRIPTIONS};
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
    /// Largest `requestState`, in bytes (its base64 text), taken in or handed out: a
    /// larger incoming one is refused with `-32602` naming `params.requestState`, and a
    /// round whose answers would seal larger ends with that error instead of a state the
    /// client could not send back. Default 256 KiB: room for several elicitation answers
    /// and model completions of tens of KB, while a retry stays a small request.
    pub max_request_state_bytes: usize,
    /// Longest resource URI a client may make this server keep, in bytes: legacy
    /// subscriptions (stored with the session) and the URIs of a `subscriptions/listen`
    /// stream (held while it is open); longer ones are refused with `-32602`. Default
    /// 2 KiB: longer URIs do not survive common HTTP stacks and browsers anyway.
    pub max_uri_bytes: usize,
}

/// The cap on a `requestState`, as refusals name it.
pub const MAX_REQUEST_STATE_BYTES: &str = "mcp.max_request_state_bytes";
/// The cap on a URI the server keeps, as refusals name it.
pub const MAX_URI_BYTES: &str = "mcp.max_uri_bytes";

impl Default for Config {
    fn default() -> Self {
        Self {
            request_state_ttl: Duration::from_secs(600),
            list_ttl: Duration::from_secs(60),
            page_size: 100,
            instructions: None,
            max_request_state_bytes: 256 * 1024,
            max_uri_bytes: 2048,
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
    // Checked, not yet read: 2026-07-28 is the only modern version so far.
    #[allow(dead_code)]
    pub version: Version,
    /// The client's capabilities for this request, shared with the call's context.
    pub client_capabilities: Arc<Value>,
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
            Some(c @ Value::Object(_)) => Arc::new(c.clone()),
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
    /// The caller's bearer token and the request id, for tools acting on its behalf
    /// upstream; empty under stdio and `--auth none`.
    pub(crate) caller: tools::Caller,
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
    /// The digest of this node's tools, as legacy sessions record what they last listed.
    pub(super) tools_digest: String,
    /// Per-tool scopes, when authentication enforces them.
    pub(super) access: Option<crate::auth::Config>,
    /// Refusal counters and in-use gauges of the caps.
    pub(super) limits: crate::limits::Limits,
    /// The shared upstream client and token exchanger handed to every tool call.
    pub(super) upstream: Arc<tools::Upstream>,
    /// Tenant secrets and tool state, handed to every call.
    pub(super) storage: tools::Storage,
    /// Tasks, in the replicated store.
    pub(super) tasks: super::Tasks,
    /// What `initialize` answers, one per version of [`Version::ALL`], in its order (the
    /// 2026-07-28 one is never used: `initialize` negotiates a legacy version).
    greetings: Vec<Greeting>,
}

/// The result of `initialize` for one version. It depends on nothing a client sends, so
/// it is built and serialised once, when the engine is made; each answer copies the bytes.
#[derive(Debug)]
pub struct Greeting {
    value: Value,
    json: Box<[u8]>,
}

impl Greeting {
    fn new(value: Value) -> Self {
        let json = serde_json::to_vec(&value)
            .unwrap_or_default()
            .into_boxed_slice();
        Self { value, json }
    }

    /// The result, for a caller that builds its message as a value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The JSON-RPC response to request `id` carrying this result, as JSON text: the
    /// bytes `serde_json` writes for `jsonrpc::response(id, result)` (members in key
    /// order), with the result copied from the bytes serialised when the engine was made.
    pub fn response_json(&self, id: &super::jsonrpc::Id) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json.len() + 48);
        out.extend_from_slice(b"{\"id\":");
        // Serialising a `Value` into memory cannot fail: its keys are strings.
        let _ = serde_json::to_writer(&mut out, id);
        out.extend_from_slice(b",\"jsonrpc\":\"2.0\",\"result\":");
        out.extend_from_slice(&self.json);
        out.push(b'}');
        out
    }
}

/// What tool calls are given besides the catalog, fixed when the engine is made: once it
/// is shared (every HTTP worker holds a clone), nothing can change them.
pub(crate) struct Services {
    /// Per-tool scopes, when authentication enforces them: `tools/list` then shows a
    /// caller only the tools its scopes allow, and `tools/call` refuses the others.
    pub access: Option<crate::auth::Config>,
    /// The shared upstream client and where `ctx.token_for` gets tokens.
    pub upstream: tools::Upstream,
    /// Tenant secrets and tool state.
    pub storage: tools::Storage,
    /// Where `ctx.resource_updated` announces: this node only, or relayed to the fleet.
    pub updates: Updates,
}

impl Engine {
    /// An engine over a registry and the handles that run its tools.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        info: ServerInfo,
        config: Config,
        registry: Registry,
        tools: ToolPool,
        sessions: SessionHandle,
        sealer: Sealer,
        limits: crate::limits::Limits,
        services: Services,
        tasks: super::Tasks,
    ) -> Self {
        for key in [MAX_REQUEST_STATE_BYTES, MAX_URI_BYTES] {
            limits.declare(key);
        }
        let Services {
            access,
            upstream,
            storage,
            updates,
        } = services;
        let tools_digest = registry.tools_digest();
        let greetings = Version::ALL
            .iter()
            .map(|version| {
                let mut result = json!({
                    "protocolVersion": version.as_str(),
                    "capabilities": Self::capabilities(true),
                    "serverInfo": { "name": info.name, "version": info.version },
                });
                if let Some(instructions) = &config.instructions {
                    result["instructions"] = json!(instructions);
                }
                Greeting::new(result)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                greetings,
                tools_digest,
                info,
                config,
                registry,
                tools,
                sessions,
                sealer,
                updates,
                access,
                upstream: Arc::new(upstream),
                limits,
                storage,
                tasks,
            }),
        }
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

    /// Resource update announcements: this node's subscribers listen here.
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

    /// The protocol settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// What this server offers. `tools.listChanged` holds for legacy sessions only: a
    /// session remembers which tools it last listed, so a node with other tools (during a
    /// rolling upgrade) can say so; a 2026-07-28 client's lists carry `ttlMs` instead,
    /// and each node's own list never changes while it runs.
    fn capabilities(legacy: bool) -> Value {
        json!({
            "tools": { "listChanged": legacy },
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
    ) -> Result<(Session, &Greeting), RpcError> {
        let requested = str_param(params, "protocolVersion")?;
        let version = match Version::parse(requested) {
            Some(v) if v.is_legacy() => v,
            _ => Version::LATEST_LEGACY,
        };
        let empty = json!({});
        let capabilities = match params.get("capabilities") {
            Some(c @ Value::Object(_)) => c,
            None => &empty,
            Some(_) => return Err(RpcError::invalid_params("capabilities must be an object")),
        };
        let client_info = params.get("clientInfo").unwrap_or(&empty);
        // Measured as stored (JSON text) before anything is copied: a session is one Raft
        // entry and a memory tier entry on every node.
        let cap = self.inner.sessions.config().max_client_bytes;
        let info_len = json_len(client_info);
        let capabilities_len = json_len(capabilities);
        let field = if info_len > cap {
            "params.clientInfo"
        } else if capabilities_len > cap {
            "params.capabilities"
        } else {
            "params.clientInfo + params.capabilities"
        };
        if info_len + capabilities_len > cap {
            let size = info_len.saturating_add(capabilities_len);
            return Err(self
                .inner
                .limits
                .too_large(MAX_CLIENT_BYTES, field, size, cap));
        }
        let client_info = client_info.to_string();
        let capabilities = capabilities.clone();
        let session = Session::new(
            version,
            principal,
            client_info,
            capabilities,
            self.inner.sessions.ttl(),
        );
        let greeting = Version::ALL
            .iter()
            .position(|v| *v == version)
            .and_then(|i| self.inner.greetings.get(i))
            .ok_or_else(|| RpcError::internal("no initialize result for the version"))?;
        Ok((session, greeting))
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
        if let Era::Legacy(session) = &call.era {
            self.compare_listed_tools(call, session, method).await;
        }
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
            // 2026-07-28's tasks extension; `tasks/result` and `tasks/list` were removed.
            "tasks/get" if modern => self.tasks_get(call, &params).await,
            "tasks/update" if modern => self.tasks_update(call, &params).await,
            "tasks/cancel" if modern => self.tasks_cancel(call, &params).await,
            _ => Err(RpcError::method_not_found(method)),
        }?;
        if modern {
            self.envelope(method, &mut result);
        }
        Ok(result)
    }

    /// Keeps a legacy session's idea of the tools truthful across nodes with different
    /// catalogs (a rolling upgrade that adds a tool): a request reaching a node whose tools
    /// differ from those the session last listed gets `notifications/tools/list_changed`
    /// on its stream first, and a `tools/list` here records this node's tools as listed
    /// (one fleet write, only when they differ from what the session had).
    async fn compare_listed_tools(&self, call: &Call, session: &Session, method: &str) {
        let here = &self.inner.tools_digest;
        if session.listed_tools.as_ref() == Some(here) {
            return;
        }
        if method == "tools/list" {
            let changed = self.inner.sessions.update(&session.id, |s| {
                let changed = s.listed_tools.as_ref() != Some(here);
                s.listed_tools = Some(here.clone());
                Ok::<_, ()>(changed)
            });
            if let Err(crate::actors::UpdateError::Store(e)) = changed.await {
                // The list is still answered; the session may hear list_changed once more.
                tracing::warn!(error = %e, "could not record the tools a session listed");
            }
        } else if session.listed_tools.is_some() {
            call.peer
                .notify("notifications/tools/list_changed", json!({}));
        }
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
        let mut capabilities = Self::capabilities(false);
        capabilities["extensions"] = json!({ super::TASKS_EXTENSION: {} });
        let mut result = json!({
            "supportedVersions": Version::supported_strings(),
            "capabilities": capabilities,
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
        // Shared, not copied: capabilities may be kilobytes, and this runs on every call.
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
            upstream: self.inner.upstream.clone(),
            caller: call.caller.clone(),
            storage: self.inner.storage.clone(),
            tool: Arc::from(params.get("name").and_then(Value::as_str).unwrap_or("")),
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
        self.update(&session.id, |s| {
            let changed = s.log_level != Some(level);
            s.log_level = Some(level);
            Ok(changed)
        })
        .await?;
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
        if on {
            // Each subscription grows the stored session, a Raft entry: both are capped.
            let max_uri = self.inner.config.max_uri_bytes;
            if uri.len() > max_uri {
                let limits = &self.inner.limits;
                return Err(limits.too_large(MAX_URI_BYTES, "params.uri", uri.len(), max_uri));
            }
        }
        let cap = self.inner.sessions.config().max_subscriptions;
        self.update(&session.id, |s| {
            let subscribed = s.subscriptions.iter().any(|x| x == uri);
            if on == subscribed {
                return Ok(false);
            }
            if on {
                if s.subscriptions.len() >= cap {
                    return Err(self.inner.limits.exhausted(
                        MAX_SUBSCRIPTIONS,
                        "resource subscriptions on this session",
                        cap,
                    ));
                }
                s.subscriptions.push(uri.to_owned());
            } else {
                s.subscriptions.retain(|x| x != uri);
            }
            Ok(true)
        })
        .await?;
        Ok(json!({}))
    }

    /// Changes the stored legacy session `id` as it stands in the fleet (see
    /// [`crate::actors::SessionHandle::update`]); a session ended meanwhile is not
    /// written back (404, as for any request on it).
    async fn update(
        &self,
        id: &str,
        change: impl FnMut(&mut Session) -> Result<bool, RpcError>,
    ) -> Result<(), RpcError> {
        use crate::actors::{UpdateError, Updated};
        match self.inner.sessions.update(id, change).await {
            Ok(Updated::Stored | Updated::Unchanged) => Ok(()),
            Ok(Updated::Gone) => Err(RpcError::new(SESSION_NOT_FOUND, "Session not found")),
            Err(UpdateError::Refused(e)) => Err(e),
            // The caps on what a session holds keep it far below this; say so all the same.
            Err(UpdateError::Store(e @ crate::raft::Error::TooLarge { .. })) => Err(
                RpcError::invalid_params(format!("the session could not be stored: {e}")),
            ),
            Err(UpdateError::Store(e)) => {
                tracing::error!(error = %e, "could not store a session");
                Err(RpcError::internal("the session could not be stored"))
            }
        }
    }
}

/// The length of `value`'s JSON text, counted without building the text.
pub(crate) fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
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
    object_param_in(params, key).map(|o| o.cloned().unwrap_or_default())
}

/// The object parameter `key`, borrowed; `None` when absent or null.
pub(super) fn object_param_in<'a>(
    params: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(RpcError::invalid_params(format!(
            "params.{key} must be an object"
        ))),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::crypto::{Key, Ring};
    use crate::tools::Silent;

    async fn engine(toml: &str) -> (Engine, tempfile::TempDir, crate::raft::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::single(Key::generate());
        let (store, runtime) = crate::raft::Store::open_single(dir.path(), ring.clone())
            .await
            .unwrap();
        let config = crate::Config::from_toml(toml).unwrap();
        let metrics = crate::metrics::Metrics::new();
        let catalog = crate::node::Catalog {
            registry: {
                let mut registry = crate::tools::Registry::new();
                crate::tools::builtin::register(&mut registry);
                registry
            },
            ..Default::default()
        };
        let services = Services {
            access: None,
            upstream: tools::Upstream::new(
                config.tools.http,
                metrics.limits().clone(),
                tools::Tokens::None,
            ),
            storage: crate::node::fleet_storage(&config, &store, &metrics),
            updates: tools::Updates::default(),
        };
        let engine = crate::node::engine(&config, &catalog, store, ring.sealer, &metrics, services);
        (engine, dir, runtime)
    }

    fn call(era: Era) -> Call {
        Call {
            principal: Arc::new(Principal::anonymous()),
            era,
            peer: Arc::new(Silent),
            cancel: CancellationToken::new(),
            caller: tools::Caller::default(),
        }
    }

    fn initialize(capabilities: Value, client_info: Value) -> Map<String, Value> {
        json!({
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities,
            "clientInfo": client_info,
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[actix_web::test]
    async fn initialize_answers_the_same_bytes_as_the_result_built_as_a_value() {
        let (engine, _dir, _rt) = engine("[mcp]\ninstructions = \"Use \\\"echo\\\" first.\"").await;
        for (asked, answered) in [
            ("2025-03-26", "2025-03-26"),
            ("2025-06-18", "2025-06-18"),
            ("2025-11-25", "2025-11-25"),
            ("2026-07-28", "2025-11-25"),
            ("1999-01-01", "2025-11-25"),
        ] {
            let mut params = initialize(json!({}), json!({ "name": "c" }));
            params.insert("protocolVersion".into(), json!(asked));
            let (session, greeting) = engine.initialize(&params, Principal::anonymous()).unwrap();
            assert_eq!(session.version.as_str(), answered);
            let expected = json!({
                "protocolVersion": answered,
                "capabilities": {
                    "tools": { "listChanged": true },
                    "resources": { "subscribe": true, "listChanged": false },
                    "prompts": { "listChanged": false },
                    "completions": {},
                    "logging": {},
                },
                "serverInfo": { "name": engine.inner.info.name, "version": engine.inner.info.version },
                "instructions": "Use \"echo\" first.",
            });
            assert_eq!(*greeting.value(), expected);
            for id in [
                json!(1),
                json!("a\"b"),
                json!(-7),
                json!(u64::MAX),
                json!(null),
            ] {
                let bytes = greeting.response_json(&id);
                let reference =
                    serde_json::to_vec(&super::super::jsonrpc::response(&id, expected.clone()))
                        .unwrap();
                assert_eq!(
                    String::from_utf8(bytes).unwrap(),
                    String::from_utf8(reference).unwrap()
                );
            }
        }
    }

    #[actix_web::test]
    async fn a_call_shares_the_capabilities_instead_of_copying_them() {
        let (engine, _dir, _rt) = engine("").await;
        let capabilities = json!({ "elicitation": {}, "x": "y".repeat(15 * 1024) });
        let params = initialize(capabilities.clone(), json!({ "name": "c" }));
        let (session, _) = engine.initialize(&params, Principal::anonymous()).unwrap();
        let session = Arc::new(session);
        let legacy = call(Era::Legacy(session.clone()));
        let peer: Arc<dyn Peer> = Arc::new(Silent);
        let first = engine.context(&legacy, &Map::new(), peer.clone());
        let second = engine.context(&legacy, &Map::new(), peer.clone());
        assert_eq!(*first.client_capabilities(), capabilities);
        // The very value the session holds, in every call's context.
        assert!(std::ptr::eq(
            first.client_capabilities(),
            &*session.client_capabilities
        ));
        assert!(std::ptr::eq(
            first.client_capabilities(),
            second.client_capabilities()
        ));

        let mut modern = Map::new();
        modern.insert(
            "_meta".into(),
            json!({
                META_PROTOCOL_VERSION: "2026-07-28",
                META_CLIENT_CAPABILITIES: capabilities,
            }),
        );
        let meta = ModernMeta::parse(&modern).unwrap().unwrap();
        let shared = meta.client_capabilities.clone();
        let modern = call(Era::Modern(meta));
        let ctx = engine.context(&modern, &Map::new(), peer);
        assert!(std::ptr::eq(ctx.client_capabilities(), &*shared));
    }

    #[actix_web::test]
    async fn client_data_over_the_cap_is_refused_naming_field_and_cap() {
        let (engine, _dir, _rt) = engine("[sessions]\nmax_client_bytes = 1024").await;
        let big = json!({ "name": "n".repeat(2000) });
        let refused = engine
            .initialize(&initialize(json!({}), big), Principal::anonymous())
            .unwrap_err();
        assert_eq!(refused.code, crate::mcp::jsonrpc::INVALID_PARAMS);
        assert!(
            refused.message.contains("params.clientInfo")
                && refused.message.contains("1024")
                && refused.message.contains("sessions.max_client_bytes"),
            "{}",
            refused.message
        );
        // Together over the cap, each under it.
        let half = json!({ "x": "h".repeat(600) });
        let refused = engine
            .initialize(
                &initialize(half.clone(), half.clone()),
                Principal::anonymous(),
            )
            .unwrap_err();
        assert!(
            refused
                .message
                .contains("params.clientInfo + params.capabilities"),
            "{}",
            refused.message
        );
        assert_eq!(engine.limits().refusals("sessions.max_client_bytes"), 2);
        let (session, _) = engine
            .initialize(
                &initialize(half, json!({ "name": "ok" })),
                Principal::anonymous(),
            )
            .unwrap();
        assert_eq!(session.client_info, r#"{"name":"ok"}"#);
    }

    #[actix_web::test]
    async fn session_changes_apply_to_the_stored_session_and_never_bring_back_an_ended_one() {
        let (engine, _dir, _rt) = engine("").await;
        let (session, _) = engine
            .initialize(&initialize(json!({}), json!({})), Principal::anonymous())
            .unwrap();
        let id = session.id.clone();
        engine.sessions().put(session).await.unwrap();
        // Two requests on the same session, each with the session as it was read at its
        // start (as two nodes serving it at once would have): neither change is lost.
        let stale = engine.sessions().get(&id).unwrap().unwrap();
        let level = json!({ "level": "debug" }).as_object().unwrap().clone();
        let uri = json!({ "uri": "test://kept" }).as_object().unwrap().clone();
        engine
            .handle(&call(Era::Legacy(stale.clone())), "logging/setLevel", level)
            .await
            .unwrap();
        engine
            .handle(
                &call(Era::Legacy(stale.clone())),
                "resources/subscribe",
                uri,
            )
            .await
            .unwrap();
        let stored = engine.sessions().get(&id).unwrap().unwrap();
        assert_eq!(stored.log_level, Some(LogLevel::Debug));
        assert_eq!(stored.subscriptions, ["test://kept"]);

        // Ended (through another node, say) while a request on it was being served: the
        // request's change is refused as for an unknown session, and the session stays ended.
        assert!(engine.sessions().delete(&id).await.unwrap());
        let uri = json!({ "uri": "test://late" }).as_object().unwrap().clone();
        let refused = engine
            .handle(&call(Era::Legacy(stale)), "resources/subscribe", uri)
            .await
            .unwrap_err();
        assert_eq!(refused.code, SESSION_NOT_FOUND, "{}", refused.message);
        assert!(engine.sessions().get_fresh(&id).await.unwrap().is_none());
    }

    #[actix_web::test]
    async fn subscriptions_are_capped_in_number_and_uri_length() {
        let (engine, _dir, _rt) =
            engine("[sessions]\nmax_subscriptions = 2\n[mcp]\nmax_uri_bytes = 32").await;
        let (session, _) = engine
            .initialize(&initialize(json!({}), json!({})), Principal::anonymous())
            .unwrap();
        let id = session.id.clone();
        engine.sessions().put(session).await.unwrap();
        let subscribe = |uri: &str| {
            let session = engine.sessions().get(&id).unwrap().unwrap();
            let params = json!({ "uri": uri }).as_object().unwrap().clone();
            let engine = engine.clone();
            async move {
                engine
                    .handle(&call(Era::Legacy(session)), "resources/subscribe", params)
                    .await
            }
        };
        let long = format!("test://{}", "u".repeat(40));
        let refused = subscribe(&long).await.unwrap_err();
        assert_eq!(refused.code, crate::mcp::jsonrpc::INVALID_PARAMS);
        assert!(
            refused.message.contains("mcp.max_uri_bytes"),
            "{}",
            refused.message
        );
        subscribe("test://a").await.unwrap();
        subscribe("test://b").await.unwrap();
        // Subscribing again to one held is no change, and allowed.
        subscribe("test://b").await.unwrap();
        let refused = subscribe("test://c").await.unwrap_err();
        assert_eq!(refused.code, crate::limits::LIMIT_EXCEEDED);
        assert!(
            refused.message.contains("sessions.max_subscriptions"),
            "{}",
            refused.message
        );
        let stored = engine.sessions().get(&id).unwrap().unwrap();
        assert_eq!(stored.subscriptions, ["test://a", "test://b"]);
    }
}
