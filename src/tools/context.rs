//! What a running tool call can see and do: its caller, progress, logs, questions to the
//! client, and cancellation.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::Error;
use crate::auth::Principal;

/// Severity of a log message sent to the client (RFC 5424 levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Notice.
    Notice,
    /// Warning.
    Warning,
    /// Error.
    Error,
    /// Critical.
    Critical,
    /// Alert.
    Alert,
    /// Emergency.
    Emergency,
}

impl LogLevel {
    /// Parses a level name as the protocol spells it.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

/// A question the server needs the client to answer before a call can go on.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRequest {
    /// Server-assigned key for the answer.
    pub key: String,
    /// `elicitation/create`, `sampling/createMessage` or `roots/list`.
    pub method: String,
    /// The request's params.
    pub params: Value,
}

/// How a running call reaches its client; each transport and era provides one.
pub trait Peer: Send + Sync {
    /// Sends a notification related to the call (progress, log message).
    fn notify(&self, method: &str, params: Value);

    /// Asks the client something and waits for the answer.
    fn request(&self, method: &str, params: Value) -> BoxFuture<'static, Result<Value, Error>>;

    /// Like [`Peer::request`], naming the key the answer comes back under in a 2026-07-28
    /// multi round-trip request; other transports ignore the key.
    fn request_as(
        &self,
        _key: &str,
        method: &str,
        params: Value,
    ) -> BoxFuture<'static, Result<Value, Error>> {
        self.request(method, params)
    }

    /// Ends the response stream early where the client can resume it later.
    fn close_stream(&self) {}

    /// Whether [`Context::run_as_task`] must end this round so the call goes on as a task:
    /// only in a 2026-07-28 round of a request that declared the tasks extension.
    fn detaches(&self) -> bool {
        false
    }
}

/// Everything a tool call knows about the request it serves.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Scope>,
}

/// The parts of a [`Context`], filled in by the protocol engine.
pub(crate) struct Scope {
    pub principal: Arc<Principal>,
    pub peer: Arc<dyn Peer>,
    pub progress_token: Option<Value>,
    pub log_level: Option<LogLevel>,
    /// Shared with the session (or the request's `_meta`): never copied per call.
    pub client_capabilities: Arc<Value>,
    pub cancel: CancellationToken,
    pub updates: super::Updates,
    /// The node's shared upstream client and token exchanger (`upstream.rs`).
    pub upstream: Arc<super::upstream::Upstream>,
    /// The caller's token and request id, for acting on its behalf upstream.
    pub caller: super::upstream::Caller,
    /// Tenant secrets and tool state (see [`super::Storage`]).
    pub storage: super::Storage,
    /// The tool being called, which owns the state [`Context::state`] reaches.
    pub tool: Arc<str>,
}

/// A client that is never asked anything: the peer of unit tests whose tools make no
/// requests of the client.
#[cfg(test)]
pub(crate) struct Silent;

#[cfg(test)]
impl Peer for Silent {
    fn notify(&self, _method: &str, _params: Value) {}

    fn request(&self, _method: &str, _params: Value) -> BoxFuture<'static, Result<Value, Error>> {
        Box::pin(async { Err(Error::Client("not in this test".into())) })
    }
}

impl Context {
    pub(crate) fn new(scope: Scope) -> Self {
        Self {
            inner: Arc::new(scope),
        }
    }

    /// The caller.
    pub fn principal(&self) -> &Principal {
        &self.inner.principal
    }

    /// The capabilities the client declared.
    pub fn client_capabilities(&self) -> &Value {
        &self.inner.client_capabilities
    }

    /// Reports progress, when the client asked for it with a progress token.
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = &self.inner.progress_token else {
            return;
        };
        let mut params = Map::new();
        params.insert("progressToken".into(), token.clone());
        params.insert("progress".into(), json!(progress));
        if let Some(total) = total {
            params.insert("total".into(), json!(total));
        }
        if let Some(message) = message {
            params.insert("message".into(), json!(message));
        }
        self.inner
            .peer
            .notify("notifications/progress", Value::Object(params));
    }

    /// Sends a log message, when the client asked for this level or a lower one.
    pub fn log(&self, level: LogLevel, logger: Option<&str>, data: Value) {
        match self.inner.log_level {
            Some(min) if level >= min => {}
            _ => return,
        }
        let mut params = Map::new();
        params.insert("level".into(), json!(level));
        if let Some(logger) = logger {
            params.insert("logger".into(), json!(logger));
        }
        params.insert("data".into(), data);
        self.inner
            .peer
            .notify("notifications/message", Value::Object(params));
    }

    /// Asks the user for input (`elicitation/create`); returns the client's `ElicitResult`.
    ///
    /// Under 2026-07-28 the call ends with an input-required result and runs again when the
    /// client retries with the answer, so everything before the question runs again too.
    /// Ask several questions in one round by awaiting them together (`join`).
    pub async fn elicit(&self, params: Value) -> Result<Value, Error> {
        self.ask("elicitation", None, "elicitation/create", params)
            .await
    }

    /// [`Context::elicit`], with the key the answer comes back under (2026-07-28).
    pub async fn elicit_as(&self, key: &str, params: Value) -> Result<Value, Error> {
        self.ask("elicitation", Some(key), "elicitation/create", params)
            .await
    }

    /// Asks the client's model for a completion (`sampling/createMessage`).
    pub async fn sample(&self, params: Value) -> Result<Value, Error> {
        self.ask("sampling", None, "sampling/createMessage", params)
            .await
    }

    /// [`Context::sample`], with the key the answer comes back under (2026-07-28).
    pub async fn sample_as(&self, key: &str, params: Value) -> Result<Value, Error> {
        self.ask("sampling", Some(key), "sampling/createMessage", params)
            .await
    }

    /// Asks the client for its roots (`roots/list`).
    pub async fn list_roots(&self) -> Result<Value, Error> {
        self.ask("roots", None, "roots/list", json!({})).await
    }

    /// [`Context::list_roots`], with the key the answer comes back under (2026-07-28).
    pub async fn list_roots_as(&self, key: &str) -> Result<Value, Error> {
        self.ask("roots", Some(key), "roots/list", json!({})).await
    }

    async fn ask(
        &self,
        capability: &'static str,
        key: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Error> {
        if self.inner.client_capabilities.get(capability).is_none() {
            return Err(Error::MissingCapability(capability));
        }
        match key {
            Some(key) => self.inner.peer.request_as(key, method, params).await,
            None => self.inner.peer.request(method, params).await,
        }
    }

    /// From here on the call runs as a task, when its tool was declared with
    /// [`ToolInfo::asks_before_task`](super::ToolInfo::asks_before_task) and the client
    /// declared the tasks extension: this round ends with [`Error::BecomeTask`] (pass it on
    /// with `?`), and the task runs the tool again from the start with the answers
    /// gathered so far, as a later `input_required` round would. Elsewhere (legacy
    /// sessions, clients without the extension, inside the task) it returns `Ok` at once.
    pub async fn run_as_task(&self) -> Result<(), Error> {
        if self.inner.peer.detaches() {
            return Err(Error::BecomeTask);
        }
        Ok(())
    }

    /// Ends the call's response stream now, where streams are resumable (2025-11-25 SSE
    /// polling): the client reconnects with `Last-Event-ID` and receives what follows.
    /// Elsewhere it does nothing. Useful before long waits, so no connection is held open.
    pub fn close_stream(&self) {
        self.inner.peer.close_stream();
    }

    /// Announces that the resource at `uri` changed: clients subscribed to it get
    /// `notifications/resources/updated`, on whichever node of the fleet holds their stream.
    pub fn resource_updated(&self, uri: &str) {
        self.inner.updates.resource_updated(uri);
    }

    /// The HTTP client tools share, for calling upstream APIs: with timeouts, a response
    /// size cap and this request's id (see [`Http`](super::Http)).
    pub fn http(&self) -> super::Http {
        self.inner
            .upstream
            .http(self.inner.caller.request_id.clone())
    }

    /// An access token for the upstream API known to the caller's issuer as `audience`,
    /// on the caller's behalf: obtained by OAuth 2.0 Token Exchange (RFC 8693) with the
    /// caller's token, and shared by every node until shortly before it expires. A tool
    /// error when authentication is off, or the caller's issuer is not configured for
    /// it (`[auth.issuers.token_exchange]`, or `forward_token = true`). Under stdio, the
    /// local user's token for `audience` named in `[stdio.tokens]`, or a tool error
    /// naming that key.
    pub async fn token_for(&self, audience: &str) -> Result<super::AccessToken, Error> {
        self.inner
            .upstream
            .token_for(
                &self.inner.principal,
                self.inner.caller.token.as_ref(),
                audience,
            )
            .await
    }

    /// The caller's tenant's secret `name` (under stdio, the local user's), as the
    /// operator last set it on any node. A missing secret is a tool error naming it.
    pub async fn secret(&self, name: &str) -> Result<super::Secret, Error> {
        let Some(secrets) = &self.inner.storage.secrets else {
            return Err(Error::Failed(format!(
                "secret `{name}`: this server keeps no secrets"
            )));
        };
        secrets
            .get(&self.inner.principal, name)
            .await
            .map_err(|e| Error::Failed(e.to_string()))
    }

    /// This tool's small key-value state for the caller (`.tenant()` for state shared by
    /// the caller's tenant), read back the same from every node once a write returns.
    pub fn state(&self) -> super::State {
        super::State::new(
            self.inner.storage.state.clone(),
            self.inner.tool.clone(),
            self.inner.principal.clone(),
        )
    }

    /// Whether the call has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when the call is cancelled.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// A context for unit tests of tools: an anonymous caller reached through `peer`.
    #[cfg(test)]
    pub(crate) fn for_test(
        peer: Arc<dyn Peer>,
        client_capabilities: Value,
        progress_token: Option<Value>,
        log_level: Option<LogLevel>,
    ) -> Self {
        Self::new(Scope {
            principal: Arc::new(Principal::anonymous()),
            peer,
            progress_token,
            log_level,
            client_capabilities: Arc::new(client_capabilities),
            cancel: CancellationToken::new(),
            updates: super::Updates::default(),
            upstream: Arc::new(super::upstream::Upstream::new(
                super::HttpConfig::default(),
                crate::limits::Limits::default(),
                super::Tokens::None,
            )),
            caller: super::upstream::Caller::default(),
            storage: super::Storage::default(),
            tool: Arc::from("test"),
        })
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }
}
