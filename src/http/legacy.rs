//! The session-based versions (2025-03-26, 2025-06-18, 2025-11-25): `initialize`,
//! `Mcp-Session-Id`, batches, the GET stream, resumption, server-to-client requests, DELETE.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::live::{self, LiveSession, STANDALONE};
use super::mcp::{
    accepts_only_sse, accepts_sse, conflict, forbidden, header, json_bytes, method_not_allowed,
    respond, rpc_error, sse_response, status_for, ChannelPeer, LAST_EVENT_ID, MCP_PROTOCOL_VERSION,
    MCP_SESSION_ID,
};
use super::sse::{self, Outgoing};
use super::{forwarded, guard, State};
use crate::actors::{Created, Session, MAX_PER_PRINCIPAL};
use crate::auth::Principal;
use crate::mcp::jsonrpc::{self, error_response, notification, reply, response};
use crate::mcp::{Call, Era, Message, RpcError, Version};
use crate::tools::{self, Peer};

/// Answers `initialize`: a new session, stored durably before its id is handed out.
pub(super) async fn initialize(
    req: &HttpRequest,
    id: &Value,
    params: &Map<String, Value>,
    state: &State,
    principal: &Arc<Principal>,
) -> HttpResponse {
    let (session, greeting) = match state.engine.initialize(params, (**principal).clone()) {
        Ok(r) => r,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, Some(id), &e),
    };
    let session_id = session.id.clone();
    let version = session.version;
    match state.engine.sessions().create(session).await {
        Ok(Created::Stored) => {}
        Ok(Created::Refused { cap }) => {
            let what = "legacy sessions for this principal";
            let refusal = state
                .engine
                .limits()
                .exhausted(MAX_PER_PRINCIPAL, what, cap);
            return rpc_error(StatusCode::TOO_MANY_REQUESTS, Some(id), &refusal);
        }
        Err(e) => return store_failure(&e, Some(id), "the session could not be created"),
    }
    tracing::info!(version = %version, subject = %principal.subject, "legacy session created");
    let mut builder = HttpResponse::Ok();
    builder.insert_header((MCP_SESSION_ID, session_id));
    if accepts_only_sse(req) {
        let out = Outgoing::plain(response(id, greeting.value().clone()), true);
        builder
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .body(sse::event(&out))
    } else {
        builder
            .content_type("application/json")
            .body(greeting.response_json(id))
    }
}

/// The answer when the fleet store failed a write: 503 when it could not commit in time
/// (no leader, no quorum: retrying later may work), -32602 when the record is over
/// `raft.max_entry_bytes`, 500 otherwise.
fn store_failure(error: &crate::raft::Error, id: Option<&Value>, what: &str) -> HttpResponse {
    if let crate::raft::Error::TooLarge { .. } = error {
        // The caps on what a session holds keep it far below this; say so all the same.
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            &RpcError::invalid_params(format!("{what}: {error}")),
        );
    }
    if let crate::raft::Error::Unavailable(why) = error {
        tracing::warn!(reason = %why, "the fleet store could not commit a write");
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            id,
            &RpcError::internal(format!(
                "{what}: the fleet store is unavailable; retry shortly"
            )),
        );
    }
    tracing::error!(error = %error, "the fleet store failed a write");
    rpc_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        id,
        &RpcError::internal(what),
    )
}

/// Why a legacy request's session could not be used.
enum SessionRefusal {
    /// No `Mcp-Session-Id` header.
    Missing,
    /// Unknown, ended, expired, or someone else's.
    NotFound,
    /// The store failed.
    Store,
    /// The fleet store could not confirm the session in time (no leader, no quorum).
    Unavailable,
}

impl SessionRefusal {
    fn response(self) -> HttpResponse {
        let (status, error) = match self {
            Self::Missing => (
                StatusCode::BAD_REQUEST,
                RpcError::new(
                    jsonrpc::BAD_REQUEST,
                    "Bad Request: Mcp-Session-Id header is required",
                ),
            ),
            // 404, never 401: clients answer 404 by starting a new session, not a new login.
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                RpcError::new(jsonrpc::SESSION_NOT_FOUND, "Session not found"),
            ),
            Self::Store => (
                StatusCode::INTERNAL_SERVER_ERROR,
                RpcError::internal("the session could not be read"),
            ),
            // Not 404: the session may well exist, and a 404 would make the client drop it.
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    "the session store is unavailable; retry shortly",
                ),
            ),
        };
        rpc_error(status, None, &error)
    }
}

/// Looks up the session a legacy request names. A session this node has not seen is
/// confirmed with the leader before the answer is 404: it may have been created through
/// another node a moment ago.
async fn load_session(
    req: &HttpRequest,
    state: &State,
    principal: &Principal,
) -> Result<Arc<Session>, SessionRefusal> {
    let id = header(req, MCP_SESSION_ID).ok_or(SessionRefusal::Missing)?;
    match state.engine.sessions().get_fresh(id).await {
        // Someone else's session is as absent as one that never existed.
        Ok(Some(s)) if s.principal.same_as(principal) => Ok(s),
        Ok(_) => Err(SessionRefusal::NotFound),
        Err(crate::raft::Error::Unavailable(why)) => {
            tracing::warn!(reason = %why, "could not confirm a session with the leader");
            Err(SessionRefusal::Unavailable)
        }
        Err(crate::raft::Error::Sealed { .. }) => {
            tracing::error!(
                "a stored session failed authentication with this node's key ring; \
                 answering 503, not 404, so the client keeps it for a node that can open it"
            );
            Err(SessionRefusal::Unavailable)
        }
        Err(e) => {
            tracing::error!(error = %e, "could not read a session");
            Err(SessionRefusal::Store)
        }
    }
}

pub(super) async fn post(
    req: &HttpRequest,
    message: Message,
    state: &web::Data<State>,
    principal: &Arc<Principal>,
) -> HttpResponse {
    let session = match load_session(req, state, principal).await {
        Ok(s) => s,
        Err(refusal) => return refusal.response(),
    };
    state.engine.sessions().touch(&session);
    let live = state.live.session(&session.id);
    match message {
        Message::Notification { method, params } => {
            forwarded::notified(state, &session.id, &live, &method, &params);
            HttpResponse::Accepted().finish()
        }
        Message::Response { id, outcome } => {
            if !live.outbound.answer(&id, outcome.clone()) {
                forward_answer(state, &session.id, &id, &outcome).await;
            }
            HttpResponse::Accepted().finish()
        }
        Message::Request { id, method, params } => {
            let sse_ok = accepts_sse(req);
            let (tx, rx) = live::channel();
            let stream = match live.open_stream(tx) {
                Ok(stream) => stream,
                Err(e) => return rpc_error(status_for(e.code, false), Some(&id), &e),
            };
            let priming = (sse_ok && session.version.primes_streams())
                .then(|| live.reserve_id(stream))
                .flatten();
            let cancel = CancellationToken::new();
            live.inflight.track(&id, cancel.clone());
            let call = Call {
                principal: principal.clone(),
                era: Era::Legacy(session.clone()),
                peer: Arc::new(LegacyPeer {
                    live: live.clone(),
                    stream,
                    sse: sse_ok,
                    resumable: priming.is_some(),
                    cancel: cancel.clone(),
                }),
                cancel,
                caller: super::auth::caller(req, state),
            };
            let engine = state.engine.clone();
            let task_live = live.clone();
            // A dropped connection is not cancellation in these versions: the request runs
            // on, and its messages wait in the stream's buffer for a resuming GET.
            actix_web::rt::spawn(
                async move {
                    let outcome = engine.handle(&call, &method, params).await;
                    task_live.inflight.untrack(&id);
                    let message = reply(&id, outcome);
                    task_live.push(stream, message, true);
                }
                // The call's log lines carry the request's id.
                .in_current_span(),
            );
            let prelude = priming
                .map(|id| sse::priming(&id, state.config.sse_retry.as_millis()))
                .into_iter()
                .collect();
            respond(rx, prelude, false, None, state.config.sse_keepalive).await
        }
    }
}

/// How a legacy request reaches its client: on its own SSE stream, with answers to server
/// requests arriving as later POSTs.
struct LegacyPeer {
    live: Arc<LiveSession>,
    stream: u64,
    sse: bool,
    /// Whether the client was given a priming event id, so it can resume this stream.
    resumable: bool,
    cancel: CancellationToken,
}

impl Peer for LegacyPeer {
    fn notify(&self, method: &str, params: Value) {
        if self.sse {
            self.live
                .push(self.stream, notification(method, params), false);
        }
    }

    fn request(
        &self,
        method: &str,
        params: Value,
    ) -> BoxFuture<'static, Result<Value, tools::Error>> {
        if !self.sse {
            return Box::pin(async {
                Err(tools::Error::Client(
                    "the request did not accept an event stream, so the server cannot ask the client".into(),
                ))
            });
        }
        let (id, answer) = match self.live.outbound.register() {
            Ok(registered) => registered,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        self.live.push(
            self.stream,
            jsonrpc::request(&json!(id), method, params),
            false,
        );
        let live = self.live.clone();
        let cancel = self.cancel.clone();
        Box::pin(async move { live.outbound.wait(&id, answer, &cancel).await })
    }

    fn close_stream(&self) {
        if self.resumable {
            self.live.detach(self.stream);
        }
    }
}

pub(super) async fn post_batch(
    req: &HttpRequest,
    value: Value,
    state: &web::Data<State>,
    principal: &Arc<Principal>,
) -> HttpResponse {
    let session = match load_session(req, state, principal).await {
        Ok(s) => s,
        Err(refusal) => return refusal.response(),
    };
    if !session.version.allows_batch() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::invalid_request(format!(
                "JSON-RPC batches are not allowed in protocol version {}",
                session.version
            )),
        );
    }
    let Value::Array(items) = value else {
        unreachable!("checked by the caller")
    };
    if items.is_empty() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::invalid_request("an empty batch"),
        );
    }
    let live = state.live.session(&session.id);
    let mut responses = Vec::new();
    for item in items {
        match Message::from_value(item) {
            Err((id, e)) => responses.push(error_response(id.as_ref(), &e)),
            Ok(Message::Request { id, method, .. }) if method == "initialize" => {
                responses.push(error_response(
                    Some(&id),
                    &RpcError::invalid_request("initialize must not be part of a batch"),
                ))
            }
            Ok(Message::Request { id, method, params }) => {
                let (tx, _rx) = live::channel();
                let call = Call {
                    principal: principal.clone(),
                    era: Era::Legacy(session.clone()),
                    peer: Arc::new(ChannelPeer { tx, sse: false }),
                    cancel: CancellationToken::new(),
                    caller: super::auth::caller(req, state),
                };
                responses.push(reply(
                    &id,
                    state.engine.handle(&call, &method, params).await,
                ));
            }
            Ok(Message::Response { id, outcome }) => {
                live.outbound.answer(&id, outcome);
            }
            Ok(Message::Notification { method, params }) => {
                forwarded::notified(state, &session.id, &live, &method, &params);
            }
        }
    }
    if responses.is_empty() {
        return HttpResponse::Accepted().finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json_bytes(&Value::Array(responses)))
}

pub(super) async fn get(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Err(reason) = guard::check(&state.config, state.listen, &req) {
        return forbidden(reason);
    }
    // 2026-07-28 has no GET stream; only a legacy session has one.
    if header(&req, MCP_SESSION_ID).is_none() {
        return method_not_allowed();
    }
    if let Some(v) = header(&req, MCP_PROTOCOL_VERSION) {
        if Version::parse(v).is_none_or(|v| !v.is_legacy()) {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::unsupported_version(v),
            );
        }
    }
    let principal = match super::auth::authenticate(&req, &state).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    let session = match load_session(&req, &state, &principal).await {
        Ok(s) => s,
        Err(refusal) => return refusal.response(),
    };
    if !accepts_sse(&req) {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            &RpcError::invalid_request("the GET stream needs Accept: text/event-stream"),
        );
    }
    let live = state.live.session(&session.id);
    if let Some(last) = header(&req, LAST_EVENT_ID) {
        match forwarded::resume(&state, &session.id, live.clone(), last).await {
            forwarded::Resumed::Answer(response) => return response,
            // The GET stream itself is lost (its node restarted or died): its missed
            // events are gone, but the stream is not over. A client refused here gives it
            // up for the rest of the session (the Python SDK after two tries) and hears
            // no notification again; so a new GET stream opens instead.
            forwarded::Resumed::Lost(_) if resumes_the_get_stream(last) => {
                tracing::info!(
                    "the GET stream to resume is lost with its events; opening a new one"
                );
            }
            forwarded::Resumed::Lost(refusal) => return refusal,
        }
    }
    let (tx, rx) = live::channel();
    let reader = tx.clone();
    match live.open_standalone(tx) {
        Ok(()) => {
            forward_updates(&state, &session.id, live.clone(), reader);
            let prelude = if session.version.primes_streams() {
                live.reserve_id(STANDALONE)
                    .map(|id| sse::priming(&id, state.config.sse_retry.as_millis()))
                    .into_iter()
                    .collect()
            } else {
                VecDeque::new()
            };
            sse_response(
                prelude,
                rx,
                None,
                Some(state.config.sse_keepalive),
                Some(state.shutdown.clone()),
            )
        }
        Err(_) => conflict(),
    }
}

/// Whether `last_event_id` names an event of a session's GET stream (not of a request's
/// stream, whose answer nothing can give once the stream is lost).
fn resumes_the_get_stream(last_event_id: &str) -> bool {
    live::LiveSession::parse_event_id(last_event_id)
        .is_some_and(|(_, stream, _)| stream == STANDALONE)
}

/// Sends a client's answer on to the node that asked the question, when that is another
/// node: the load balancer may route the answer anywhere. The request id names its node.
async fn forward_answer(
    state: &State,
    session: &str,
    id: &Value,
    outcome: &Result<Value, RpcError>,
) {
    let Some(node) = crate::mcp::Outbound::origin_of(id) else {
        tracing::debug!("a response arrived for a request this instance is not waiting for");
        return;
    };
    if node == state.store.id() {
        tracing::debug!("a response arrived for a request that is no longer waiting");
        return;
    }
    let Some(addr) = state.store.member_addr(node) else {
        tracing::warn!(node, "an answer names a node that is not a member");
        return;
    };
    let answer = super::internal::ForwardedAnswer {
        session: session.to_owned(),
        message: reply(id, outcome.clone()).to_string(),
    };
    let client = state.store.client().clone();
    let delivered: Result<bool, _> = client
        .call(&addr, super::internal::ANSWER, &answer, FORWARD_TIMEOUT)
        .await;
    match delivered {
        Ok(true) => tracing::debug!(node, "forwarded a client's answer"),
        Ok(false) => tracing::debug!(node, "the asking node no longer waits for this answer"),
        Err(e) => tracing::warn!(node, error = %e, "could not forward a client's answer"),
    }
}

/// How long forwarding an answer (or opening a forwarded stream) to another node may take.
pub(super) const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `notifications/resources/updated` down a session's GET stream for the resources
/// it subscribed to, for as long as `reader` (that stream's connection) is open.
pub(super) fn forward_updates(
    state: &State,
    session_id: &str,
    live: Arc<LiveSession>,
    reader: super::sse::Tx,
) {
    let mut updates = state.engine.updates().listen();
    let sessions = state.engine.sessions().clone();
    let session_id = session_id.to_owned();
    actix_web::rt::spawn(async move {
        loop {
            let uri = tokio::select! {
                () = reader.closed() => return,
                update = updates.recv() => match update {
                    Ok(uri) => uri,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a GET stream fell behind resource updates");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            // Subscriptions change while the stream is open: read them as they are now.
            let subscribed = matches!(
                sessions.get(&session_id),
                Ok(Some(s)) if s.subscriptions.iter().any(|u| **u == *uri)
            );
            if subscribed {
                let params = json!({ "uri": &*uri });
                live.push(
                    STANDALONE,
                    notification("notifications/resources/updated", params),
                    false,
                );
            }
        }
    });
}

pub(super) async fn delete(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Err(reason) = guard::check(&state.config, state.listen, &req) {
        return forbidden(reason);
    }
    if header(&req, MCP_SESSION_ID).is_none() {
        return method_not_allowed();
    }
    let principal = match super::auth::authenticate(&req, &state).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    let session = match load_session(&req, &state, &principal).await {
        Ok(s) => s,
        Err(refusal) => return refusal.response(),
    };
    match state.engine.sessions().delete(&session.id).await {
        Ok(_) => {
            state.live.remove(&session.id);
            tracing::info!("legacy session ended by the client");
            HttpResponse::NoContent().finish()
        }
        Err(e) => store_failure(&e, None, "the session could not be ended"),
    }
}
