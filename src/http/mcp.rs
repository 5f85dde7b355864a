//! The MCP endpoint on `/mcp` and `/mcp/`: reading the request, telling the eras apart,
//! and writing responses as JSON or SSE. [`legacy`](super::legacy) serves the session-based
//! versions, [`modern`](super::modern) serves 2026-07-28.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::http::header::{AsHeaderName, HeaderName, HeaderValue, ACCEPT};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::body;
use super::keys::{BODY_READ_TIMEOUT, MAX_PARSED_BODY_BYTES};
use super::sse::{self, Outgoing, Rx, Tx};
use super::{guard, legacy, modern, State};
use crate::mcp::jsonrpc::{self, error_response, notification};
use crate::mcp::{Message, ModernMeta, RpcError, Version};
use crate::tools::{self, Peer};

// Names built once: a lookup by `&str` parses the name again on every request.
pub(super) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub(super) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub(super) const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub(super) const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
pub(super) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Registers the endpoint on `/mcp` and `/mcp/`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/mcp", "/mcp/"] {
        cfg.service(
            web::resource(path)
                // The last wrap runs first: a node outside any group says so, before
                // the key check, which it cannot finish without a group.
                .wrap(actix_web::middleware::from_fn(
                    super::ops::refuse_unless_serving,
                ))
                .wrap(actix_web::middleware::from_fn(refuse_unless_member))
                .route(web::post().to(post))
                .route(web::get().to(legacy::get))
                .route(web::delete().to(legacy::delete)),
        );
    }
}

/// Answers 503 at once, with the reason as a JSON-RPC error, while this node is not a
/// member of a group (waiting to be added, or removed): its requests would otherwise wait
/// `raft.write_timeout` for a leader that is not coming.
async fn refuse_unless_member(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let reason = req
        .app_data::<web::Data<State>>()
        .and_then(|state| state.store.not_serving());
    if let Some(reason) = reason {
        let response = rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &RpcError::new(jsonrpc::INTERNAL_ERROR, reason),
        );
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

pub(super) fn header(req: &HttpRequest, name: impl AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An error response with a JSON-RPC error body.
pub(super) fn rpc_error(status: StatusCode, id: Option<&Value>, error: &RpcError) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((actix_web::http::header::RETRY_AFTER, RETRY_AFTER_S));
    }
    response.body(json_bytes(&error_response(id, error)))
}

/// How long a client refused with a 503 is asked to wait before it tries again
/// (`Retry-After`, in seconds), whatever the cause: a node cut off from its group or not
/// yet a member (by then a balancer has usually taken it out, and the retry reaches one
/// that serves), an election under way (they take well under a second), a key check or
/// a stream's holder that did not answer. Every 503 of the MCP endpoint says it.
const RETRY_AFTER_S: &str = "1";

/// `value` as compact JSON text, the same bytes as its `to_string()`: written straight
/// into a buffer, where `Display` goes through a formatter per token and takes about
/// three times the instructions.
pub(super) fn json_bytes(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    // Serialising a `Value` into memory cannot fail: its keys are strings.
    let _ = serde_json::to_writer(&mut out, value);
    Bytes::from(out)
}

/// The HTTP status for a JSON-RPC error, by era.
pub(super) fn status_for(code: i64, modern: bool) -> StatusCode {
    use jsonrpc::*;
    match code {
        PARSE_ERROR | INVALID_REQUEST => StatusCode::BAD_REQUEST,
        crate::limits::LIMIT_EXCEEDED => StatusCode::TOO_MANY_REQUESTS,
        _ if !modern => StatusCode::OK,
        INVALID_PARAMS
        | HEADER_MISMATCH
        | MISSING_REQUIRED_CLIENT_CAPABILITY
        | UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// Whether the client takes an SSE stream. Lenient: only an `Accept` that names JSON and
/// not SSE rules streams out.
pub(super) fn accepts_sse(req: &HttpRequest) -> bool {
    match req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(accept) => {
            accept.contains("text/event-stream")
                || accept.contains("*/*")
                || !accept.contains("application/json")
        }
    }
}

/// Whether the client takes only SSE (so even a plain answer must be an SSE stream).
pub(super) fn accepts_only_sse(req: &HttpRequest) -> bool {
    header(req, ACCEPT).is_some_and(|a| {
        a.contains("text/event-stream") && !a.contains("application/json") && !a.contains("*/*")
    })
}

pub(super) fn forbidden(reason: String) -> HttpResponse {
    tracing::warn!(%reason, "refused a request to the MCP endpoint");
    rpc_error(
        StatusCode::FORBIDDEN,
        None,
        &RpcError::new(jsonrpc::BAD_REQUEST, reason),
    )
}

async fn post(req: HttpRequest, payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    if let Err(reason) = guard::check(&state.config, state.listen, &req) {
        return forbidden(reason);
    }
    let principal = match super::auth::authenticate(&req, &state).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    let limit = state.config.max_body_bytes;
    let timeout = state.config.body_read_timeout;
    let body = match body::read(&req, payload, limit, timeout).await {
        Ok(body) => body,
        Err(body::ReadError::TimedOut) => {
            state.engine.limits().refused(BODY_READ_TIMEOUT);
            tracing::info!(
                limit = BODY_READ_TIMEOUT,
                "refused: a request body too slow"
            );
            let error = RpcError::invalid_request(format!(
                "the request body did not arrive within {timeout:?} ({BODY_READ_TIMEOUT})"
            ))
            .with_data(json!({ "limit": BODY_READ_TIMEOUT }));
            let mut response = rpc_error(StatusCode::REQUEST_TIMEOUT, None, &error);
            // The rest of the body may never come: end the connection, do not drain it.
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            return response;
        }
        Err(body::ReadError::TooLarge) => {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                &RpcError::invalid_request(format!("the request body exceeds {limit} bytes")),
            )
        }
        Err(body::ReadError::Broken) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::invalid_request("the request body could not be read"),
            )
        }
    };
    let budget = state.config.max_parsed_body_bytes;
    let parsed = match body::parse_message(&body, budget) {
        Ok(parsed) => parsed,
        Err(body::ParseError::OverBudget) => {
            state.engine.limits().refused(MAX_PARSED_BODY_BYTES);
            tracing::info!(
                limit = MAX_PARSED_BODY_BYTES,
                "refused: a body too large parsed"
            );
            let error = RpcError::invalid_request(format!(
                "the request body would take more than {budget} bytes once parsed \
                 ({MAX_PARSED_BODY_BYTES})"
            ))
            .with_data(json!({ "limit": MAX_PARSED_BODY_BYTES, "max": budget }));
            return rpc_error(StatusCode::PAYLOAD_TOO_LARGE, None, &error);
        }
        Err(body::ParseError::Syntax(e)) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::parse(format!("Parse error: {e}")),
            )
        }
    };
    let version_header = header(&req, MCP_PROTOCOL_VERSION);
    let message = match parsed {
        body::Parsed::Other(value) if value.is_array() => {
            return legacy::post_batch(&req, value, &state, &principal).await;
        }
        body::Parsed::Other(value) => Message::from_value(value),
        body::Parsed::Object(members) => Message::from_members(members),
    };
    let message = match message {
        Ok(m) => m,
        Err((id, e)) => return rpc_error(StatusCode::BAD_REQUEST, id.as_ref(), &e),
    };
    let has_modern_meta = match &message {
        Message::Request { params, .. } | Message::Notification { params, .. } => {
            ModernMeta::declared(params)
        }
        Message::Response { .. } => false,
    };
    if let Message::Request { id, method, params } = &message {
        // `initialize` starts a legacy session, unless it comes dressed as 2026-07-28,
        // where the method no longer exists.
        if method == "initialize" && !has_modern_meta {
            return legacy::initialize(&req, id, params, &state, &principal).await;
        }
        // A tool the caller's scopes do not cover is a step-up challenge, in both eras.
        if method == "tools/call" {
            let tool = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(needed) = state.engine.missing_scopes(&principal, tool) {
                tracing::info!(subject = %principal.subject, tool, "refused: insufficient scope");
                return super::auth::insufficient_scope(&state.guard, &needed);
            }
        }
    }
    let session_id = header(&req, MCP_SESSION_ID);
    // A body carrying 2026-07-28 `_meta` and no session is modern whatever the headers say;
    // the modern path then reports a header that disagrees with the body.
    let modern = if session_id.is_none() && has_modern_meta {
        true
    } else {
        match version_header.map(Version::parse) {
            Some(Some(v)) => !v.is_legacy(),
            Some(None) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    &RpcError::unsupported_version(version_header.unwrap_or_default()),
                )
            }
            None => false,
        }
    };
    if modern {
        modern::post(&req, message, &state, principal).await
    } else {
        legacy::post(&req, message, &state, &principal).await
    }
}

/// Sends what a running request produces: plain JSON when its first message is the final
/// response, otherwise an SSE stream that ends with it.
pub(super) async fn respond(
    mut rx: Rx,
    prelude: Vec<Bytes>,
    modern: bool,
    guard: Option<DropGuard>,
    keepalive: Duration,
) -> HttpResponse {
    let Some(first) = rx.recv().await else {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            &RpcError::internal("the request ended without a response"),
        );
    };
    // A legacy stream whose final message comes first has already ended (`LiveSession::push`).
    if first.is_final {
        drop(guard.map(DropGuard::disarm));
        let status = first
            .message
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
            .map_or(StatusCode::OK, |code| status_for(code, modern));
        return HttpResponse::build(status)
            .content_type("application/json")
            .body(json_bytes(&first.message));
    }
    let mut queue: VecDeque<Bytes> = prelude.into();
    if first.is_detach() {
        // The request asked to end the connection at once; the client resumes later.
        return sse_response(queue, rx, Some(Hold::Ended), None, None);
    }
    queue.push_back(sse::event(&first));
    // The stream stays with its session after its final message: that message is
    // written, not known to be read, and the client may resume from an earlier event.
    sse_response(queue, rx, guard.map(Hold::Guard), Some(keepalive), None)
}

/// What an SSE body keeps alive for as long as the client reads it; never read, only held.
#[allow(dead_code)]
pub(super) enum Hold {
    /// Cancels the request when the body is dropped (the client went away).
    Guard(DropGuard),
    /// The body ends after what is queued.
    Ended,
}

/// An SSE response: `queue` first, then whatever `rx` carries until a final message.
pub(super) fn sse_response(
    queue: VecDeque<Bytes>,
    rx: Rx,
    hold: Option<Hold>,
    keepalive: Option<Duration>,
    shutdown: Option<CancellationToken>,
) -> HttpResponse {
    struct Body {
        queue: VecDeque<Bytes>,
        rx: Rx,
        done: bool,
        _hold: Option<Hold>,
        keepalive: Option<tokio::time::Interval>,
        shutdown: Option<CancellationToken>,
    }
    let keepalive = keepalive.map(|period| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let body = Body {
        queue,
        rx,
        done: matches!(hold, Some(Hold::Ended)),
        _hold: hold,
        keepalive,
        shutdown,
    };
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        if let Some(bytes) = body.queue.pop_front() {
            return Some((Ok::<_, actix_web::Error>(bytes), body));
        }
        if body.done {
            return None;
        }
        let shutdown = body.shutdown.clone();
        let stopping = async move {
            match shutdown {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        };
        let next = match body.keepalive.as_mut() {
            Some(interval) => tokio::select! {
                msg = body.rx.recv() => Some(msg),
                _ = interval.tick() => None,
                // Streams with no end of their own close when the node shuts down.
                () = stopping => return None,
            },
            None => tokio::select! {
                msg = body.rx.recv() => Some(msg),
                () = stopping => return None,
            },
        };
        match next {
            None => Some((Ok(sse::keepalive()), body)),
            Some(None) => None,
            Some(Some(out)) if out.is_detach() => None,
            Some(Some(out)) => {
                if out.is_final {
                    body.done = true;
                }
                Some((Ok(sse::event(&out)), body))
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream)
}

pub(super) fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("allow", HeaderValue::from_static("POST")))
        .finish()
}

pub(super) fn conflict() -> HttpResponse {
    rpc_error(
        StatusCode::CONFLICT,
        None,
        &RpcError::invalid_request("another connection is already reading this stream"),
    )
}

/// A peer that sends notifications down one response channel and cannot ask the client
/// anything: 2026-07-28 turns questions into input-required results (see the engine), and
/// a legacy batch has no stream to ask on.
pub(super) struct ChannelPeer {
    pub tx: Tx,
    /// Whether the client takes an SSE stream; without one, notifications are dropped.
    pub sse: bool,
}

impl Peer for ChannelPeer {
    fn notify(&self, method: &str, params: Value) {
        if self.sse {
            let _ = self
                .tx
                .send(Outgoing::plain(notification(method, params), false));
        }
    }

    fn request(
        &self,
        _method: &str,
        _params: Value,
    ) -> BoxFuture<'static, Result<Value, tools::Error>> {
        Box::pin(async { Err(tools::Error::Client("no live channel to the client".into())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_era() {
        assert_eq!(
            status_for(jsonrpc::METHOD_NOT_FOUND, true),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status_for(jsonrpc::METHOD_NOT_FOUND, false), StatusCode::OK);
        assert_eq!(
            status_for(jsonrpc::HEADER_MISMATCH, true),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_for(jsonrpc::PARSE_ERROR, false),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_for(jsonrpc::INTERNAL_ERROR, true), StatusCode::OK);
        for modern in [true, false] {
            assert_eq!(
                status_for(crate::limits::LIMIT_EXCEEDED, modern),
                StatusCode::TOO_MANY_REQUESTS
            );
        }
    }
}
