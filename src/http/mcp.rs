//! The MCP endpoint: Streamable HTTP for 2026-07-28 (stateless) and for the session-based
//! versions, on `/mcp` and `/mcp/`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::live::{AttachError, LiveSession, STANDALONE};
use super::sse::{self, Outgoing, Rx, Tx};
use super::{guard, live, State};
use crate::actors::Session;
use crate::mcp::jsonrpc::{self, error_response, notification, response};
use crate::mcp::{Call, Era, Message, ModernMeta, RpcError, Version, META_PROTOCOL_VERSION};
use crate::tools::{self, Peer};

const MCP_SESSION_ID: &str = "mcp-session-id";
const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
const MCP_METHOD: &str = "mcp-method";
const MCP_NAME: &str = "mcp-name";
const LAST_EVENT_ID: &str = "last-event-id";

/// Registers the endpoint on `/mcp` and `/mcp/`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/mcp", "/mcp/"] {
        cfg.service(
            web::resource(path)
                .route(web::post().to(post))
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        );
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An error response with a JSON-RPC error body.
fn rpc_error(status: StatusCode, id: Option<&Value>, error: &RpcError) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(error_response(id, error).to_string())
}

/// The HTTP status for a JSON-RPC error, by era.
fn status_for(code: i64, modern: bool) -> StatusCode {
    use jsonrpc::*;
    match code {
        PARSE_ERROR | INVALID_REQUEST => StatusCode::BAD_REQUEST,
        _ if !modern => StatusCode::OK,
        INVALID_PARAMS | HEADER_MISMATCH | MISSING_REQUIRED_CLIENT_CAPABILITY
        | UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// Whether the client takes an SSE stream. Lenient: only an `Accept` that names JSON and
/// not SSE rules streams out.
fn accepts_sse(req: &HttpRequest) -> bool {
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
fn accepts_only_sse(req: &HttpRequest) -> bool {
    header(req, ACCEPT.as_str())
        .is_some_and(|a| a.contains("text/event-stream") && !a.contains("application/json") && !a.contains("*/*"))
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Bytes, BodyError> {
    let declared = header(req, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn forbidden(reason: String) -> HttpResponse {
    tracing::warn!(%reason, "refused a request to the MCP endpoint");
    rpc_error(StatusCode::FORBIDDEN, None, &RpcError::new(jsonrpc::BAD_REQUEST, reason))
}

async fn post(req: HttpRequest, payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    if let Err(reason) = guard::check(&state.config, state.loopback, &req) {
        return forbidden(reason);
    }
    let limit = state.config.max_body_bytes;
    let body = match read_body(&req, payload, limit).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                &RpcError::invalid_request(format!("the request body exceeds {limit} bytes")),
            )
        }
        Err(BodyError::Broken) => {
            return rpc_error(StatusCode::BAD_REQUEST, None, &RpcError::invalid_request("the request body could not be read"))
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, None, &RpcError::parse(format!("Parse error: {e}"))),
    };
    let version_header = header(&req, MCP_PROTOCOL_VERSION);
    if value.is_array() {
        return post_batch(&req, value, &state).await;
    }
    let message = match Message::from_value(value) {
        Ok(m) => m,
        Err((id, e)) => return rpc_error(StatusCode::BAD_REQUEST, id.as_ref(), &e),
    };
    if let Message::Request { id, method, params } = &message {
        if method == "initialize" {
            return initialize(&req, id, params, &state).await;
        }
    }
    let has_modern_meta = match &message {
        Message::Request { params, .. } | Message::Notification { params, .. } => params
            .get("_meta")
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .is_some(),
        Message::Response { .. } => false,
    };
    let session_id = header(&req, MCP_SESSION_ID);
    let modern = match version_header.map(Version::parse) {
        Some(Some(v)) => !v.is_legacy(),
        Some(None) if session_id.is_some() || !has_modern_meta => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::unsupported_version(version_header.unwrap_or_default()),
            )
        }
        Some(None) => true,
        None => session_id.is_none() && has_modern_meta,
    };
    if modern {
        post_modern(&req, message, &state).await
    } else {
        post_legacy(&req, message, &state).await
    }
}

/// Answers `initialize`: a new session, stored durably before its id is handed out.
async fn initialize(req: &HttpRequest, id: &Value, params: &Map<String, Value>, state: &State) -> HttpResponse {
    let (session, result) = match state.engine.initialize(params, (*state.principal).clone()) {
        Ok(r) => r,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, Some(id), &e),
    };
    let session_id = session.id.clone();
    let version = session.version;
    if let Err(e) = state.engine.sessions().put(session).await {
        tracing::error!(error = %e, "could not store a new session");
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(id),
            &RpcError::internal("the session could not be created"),
        );
    }
    tracing::info!(version = %version, "legacy session created");
    let body = response(id, result);
    let mut builder = HttpResponse::Ok();
    builder.insert_header((MCP_SESSION_ID, session_id));
    if accepts_only_sse(req) {
        let out = Outgoing { id: None, message: body, is_final: true };
        builder
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .body(sse::event(&out))
    } else {
        builder.content_type("application/json").body(body.to_string())
    }
}

/// Looks up the session a legacy request names; the error is the response to send.
fn load_session(req: &HttpRequest, state: &State) -> Result<Arc<Session>, HttpResponse> {
    let Some(id) = header(req, MCP_SESSION_ID) else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(jsonrpc::BAD_REQUEST, "Bad Request: Mcp-Session-Id header is required"),
        ));
    };
    let not_found = || {
        rpc_error(
            StatusCode::NOT_FOUND,
            None,
            &RpcError::new(jsonrpc::SESSION_NOT_FOUND, "Session not found"),
        )
    };
    match state.engine.sessions().get(id) {
        // Someone else's session is as absent as one that never existed.
        Ok(Some(s)) if s.principal.binding() == state.principal.binding() => Ok(s),
        Ok(_) => Err(not_found()),
        Err(e) => {
            tracing::error!(error = %e, "could not read a session");
            Err(rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &RpcError::internal("the session could not be read"),
            ))
        }
    }
}

async fn post_legacy(req: &HttpRequest, message: Message, state: &web::Data<State>) -> HttpResponse {
    let session = match load_session(req, state) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let live = state.live.session(&session.id, state.config.event_buffer);
    match message {
        Message::Notification { method, params } => {
            if method == "notifications/cancelled" {
                if let Some(request_id) = params.get("requestId") {
                    live.cancel(request_id);
                }
            }
            HttpResponse::Accepted().finish()
        }
        Message::Response { id, outcome } => {
            if !live.answer(&id, outcome) {
                tracing::debug!("a response arrived for a request this instance is not waiting for");
            }
            HttpResponse::Accepted().finish()
        }
        Message::Request { id, method, params } => {
            let sse_ok = accepts_sse(req);
            let (tx, rx) = live::channel();
            let stream = live.open_stream(tx);
            let priming = (sse_ok && session.version.primes_streams())
                .then(|| live.reserve_id(stream))
                .flatten();
            let cancel = CancellationToken::new();
            live.track(&id, cancel.clone());
            let call = Call {
                principal: session.principal.clone(),
                era: Era::Legacy(session.clone()),
                peer: Arc::new(LegacyPeer {
                    live: live.clone(),
                    stream,
                    sse: sse_ok,
                    cancel: cancel.clone(),
                }),
                cancel,
            };
            let engine = state.engine.clone();
            let task_live = live.clone();
            // A dropped connection is not cancellation in these versions: the request runs
            // on, and its messages wait in the stream's buffer for a resuming GET.
            actix_web::rt::spawn(async move {
                let outcome = engine.handle(&call, &method, params).await;
                task_live.untrack(&id);
                let message = match outcome {
                    Ok(result) => response(&id, result),
                    Err(e) => error_response(Some(&id), &e),
                };
                task_live.push(stream, message, true);
            });
            let prelude = priming
                .map(|id| sse::priming(&id, state.config.sse_retry.as_millis()))
                .into_iter()
                .collect();
            respond(rx, prelude, false, None, Some((live, stream)), state.config.sse_keepalive).await
        }
    }
}

/// Sends what a running request produces: plain JSON when its first message is the final
/// response, otherwise an SSE stream that ends with it.
async fn respond(
    mut rx: Rx,
    prelude: Vec<Bytes>,
    modern: bool,
    guard: Option<DropGuard>,
    stream: Option<(Arc<LiveSession>, u64)>,
    keepalive: Duration,
) -> HttpResponse {
    let Some(first) = rx.recv().await else {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            &RpcError::internal("the request ended without a response"),
        );
    };
    if first.is_final {
        if let Some((live, id)) = &stream {
            live.close_stream(*id);
        }
        drop(guard.map(DropGuard::disarm));
        let status = first
            .message
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
            .map_or(StatusCode::OK, |code| status_for(code, modern));
        return HttpResponse::build(status)
            .content_type("application/json")
            .body(first.message.to_string());
    }
    let mut queue: VecDeque<Bytes> = prelude.into();
    queue.push_back(sse::event(&first));
    sse_response(queue, rx, guard.map(Hold::Guard), stream, Some(keepalive))
}

/// What an SSE body keeps alive for as long as the client reads it; never read, only held.
#[allow(dead_code)]
enum Hold {
    /// Cancels the request when the body is dropped (the client went away).
    Guard(DropGuard),
    /// Keeps the channel open for a stream that has no producer of its own.
    Sender(Tx),
}

/// An SSE response: `queue` first, then whatever `rx` carries until a final message.
fn sse_response(
    queue: VecDeque<Bytes>,
    rx: Rx,
    hold: Option<Hold>,
    stream: Option<(Arc<LiveSession>, u64)>,
    keepalive: Option<Duration>,
) -> HttpResponse {
    struct Body {
        queue: VecDeque<Bytes>,
        rx: Rx,
        done: bool,
        _hold: Option<Hold>,
        stream: Option<(Arc<LiveSession>, u64)>,
        keepalive: Option<tokio::time::Interval>,
    }
    let keepalive = keepalive.map(|period| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let body = Body {
        queue,
        rx,
        done: false,
        _hold: hold,
        stream,
        keepalive,
    };
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        if let Some(bytes) = body.queue.pop_front() {
            return Some((Ok::<_, actix_web::Error>(bytes), body));
        }
        if body.done {
            return None;
        }
        let next = match body.keepalive.as_mut() {
            Some(interval) => tokio::select! {
                msg = body.rx.recv() => Some(msg),
                _ = interval.tick() => None,
            },
            None => Some(body.rx.recv().await),
        };
        match next {
            None => Some((Ok(sse::keepalive()), body)),
            Some(None) => None,
            Some(Some(out)) => {
                if out.is_final {
                    body.done = true;
                    if let Some((live, id)) = &body.stream {
                        live.close_stream(*id);
                    }
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

/// How a legacy request reaches its client: on its own SSE stream, with answers to server
/// requests arriving as later POSTs.
struct LegacyPeer {
    live: Arc<LiveSession>,
    stream: u64,
    sse: bool,
    cancel: CancellationToken,
}

impl Peer for LegacyPeer {
    fn notify(&self, method: &str, params: Value) {
        if self.sse {
            self.live.push(self.stream, notification(method, params), false);
        }
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'static, Result<Value, tools::Error>> {
        if !self.sse {
            return Box::pin(async {
                Err(tools::Error::Client(
                    "the request did not accept an event stream, so the server cannot ask the client".into(),
                ))
            });
        }
        let (id, rx) = self.live.register_request();
        self.live
            .push(self.stream, jsonrpc::request(&json!(id), method, params), false);
        let live = self.live.clone();
        let cancel = self.cancel.clone();
        Box::pin(async move {
            tokio::select! {
                answer = rx => match answer {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(tools::Error::Client(e.message)),
                    Err(_) => Err(tools::Error::Client("the session ended".into())),
                },
                () = cancel.cancelled() => {
                    live.forget_request(&id);
                    Err(tools::Error::Cancelled)
                }
            }
        })
    }
}

/// How a 2026-07-28 request reaches its client: notifications on its response stream;
/// questions become input-required results (see the engine).
struct ModernPeer {
    tx: Tx,
    sse: bool,
}

impl Peer for ModernPeer {
    fn notify(&self, method: &str, params: Value) {
        if self.sse {
            let _ = self.tx.send(Outgoing {
                id: None,
                message: notification(method, params),
                is_final: false,
            });
        }
    }

    fn request(&self, _method: &str, _params: Value) -> BoxFuture<'static, Result<Value, tools::Error>> {
        Box::pin(async { Err(tools::Error::Client("no live channel to the client".into())) })
    }
}

/// Decodes an `Mcp-Name` value, which may use the `=?base64?…?=` form.
fn decode_header_value(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

/// Checks the mirrored headers of a 2026-07-28 request against its body.
fn check_modern_headers(req: &HttpRequest, method: &str, params: &Map<String, Value>) -> Result<(), RpcError> {
    let body_version = params
        .get("_meta")
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("_meta {META_PROTOCOL_VERSION} is required")))?;
    match header(req, MCP_PROTOCOL_VERSION) {
        None => return Err(RpcError::header_mismatch("the MCP-Protocol-Version header is required")),
        Some(h) if h != body_version => {
            return Err(RpcError::header_mismatch(format!(
                "MCP-Protocol-Version header value '{h}' does not match body value '{body_version}'"
            )))
        }
        Some(_) => {}
    }
    match header(req, MCP_METHOD) {
        None => return Err(RpcError::header_mismatch("the Mcp-Method header is required")),
        Some(h) if h != method => {
            return Err(RpcError::header_mismatch(format!(
                "Mcp-Method header value '{h}' does not match body value '{method}'"
            )))
        }
        Some(_) => {}
    }
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key {
        let body_name = params.get(key).and_then(Value::as_str).unwrap_or_default();
        match header(req, MCP_NAME).map(decode_header_value) {
            None => return Err(RpcError::header_mismatch("the Mcp-Name header is required")),
            Some(None) => return Err(RpcError::header_mismatch("the Mcp-Name header is not valid base64")),
            Some(Some(h)) if h != body_name => {
                return Err(RpcError::header_mismatch(format!(
                    "Mcp-Name header value '{h}' does not match body value '{body_name}'"
                )))
            }
            Some(Some(_)) => {}
        }
    }
    Ok(())
}

async fn post_modern(req: &HttpRequest, message: Message, state: &web::Data<State>) -> HttpResponse {
    let (id, method, params) = match message {
        Message::Notification { .. } => return HttpResponse::Accepted().finish(),
        Message::Response { id, .. } => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Some(&id),
                &RpcError::invalid_request("clients do not send responses in this protocol version"),
            )
        }
        Message::Request { id, method, params } => (id, method, params),
    };
    let fail = |e: RpcError| rpc_error(status_for(e.code, true), Some(&id), &e);
    if let Err(e) = check_modern_headers(req, &method, &params) {
        return fail(e);
    }
    let meta = match ModernMeta::parse(&params) {
        Ok(Some(meta)) => meta,
        Ok(None) => return fail(RpcError::invalid_params("_meta is required")),
        Err(e) => return fail(e),
    };
    if method == "subscriptions/listen" {
        return listen(id, state);
    }
    let sse_ok = accepts_sse(req);
    let (tx, rx) = live::channel();
    let cancel = CancellationToken::new();
    let call = Call {
        principal: state.principal.clone(),
        era: Era::Modern(meta),
        peer: Arc::new(ModernPeer { tx: tx.clone(), sse: sse_ok }),
        cancel: cancel.clone(),
    };
    let engine = state.engine.clone();
    actix_web::rt::spawn(async move {
        let outcome = engine.handle(&call, &method, params).await;
        let message = match outcome {
            Ok(result) => response(&id, result),
            Err(e) => error_response(Some(&id), &e),
        };
        let _ = tx.send(Outgoing { id: None, message, is_final: true });
    });
    // Closing the response stream is cancellation in this version.
    respond(rx, Vec::new(), true, Some(cancel.drop_guard()), None, state.config.sse_keepalive).await
}

/// `subscriptions/listen`: a long-lived stream that acknowledges the subscription. This
/// server's lists do not change at run time, so nothing else is sent but keep-alives.
fn listen(id: Value, state: &State) -> HttpResponse {
    let (tx, rx) = live::channel();
    let ack = Outgoing {
        id: None,
        message: notification(
            "notifications/subscriptions/acknowledged",
            json!({ "_meta": { "io.modelcontextprotocol/subscriptionId": id } }),
        ),
        is_final: false,
    };
    // The stream holds its own sender, so it stays open until the client leaves.
    let queue = VecDeque::from([sse::event(&ack)]);
    sse_response(queue, rx, Some(Hold::Sender(tx)), None, Some(state.config.sse_keepalive))
}

async fn post_batch(req: &HttpRequest, value: Value, state: &web::Data<State>) -> HttpResponse {
    let session = match load_session(req, state) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if !session.version.allows_batch() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::invalid_request(format!("JSON-RPC batches are not allowed in protocol version {}", session.version)),
        );
    }
    let Value::Array(items) = value else { unreachable!("checked by the caller") };
    if items.is_empty() {
        return rpc_error(StatusCode::BAD_REQUEST, None, &RpcError::invalid_request("an empty batch"));
    }
    let live = state.live.session(&session.id, state.config.event_buffer);
    let mut responses = Vec::new();
    for item in items {
        match Message::from_value(item) {
            Err((id, e)) => responses.push(error_response(id.as_ref(), &e)),
            Ok(Message::Request { id, method, .. }) if method == "initialize" => responses.push(error_response(
                Some(&id),
                &RpcError::invalid_request("initialize must not be part of a batch"),
            )),
            Ok(Message::Request { id, method, params }) => {
                let (tx, _rx) = live::channel();
                let call = Call {
                    principal: session.principal.clone(),
                    era: Era::Legacy(session.clone()),
                    peer: Arc::new(ModernPeer { tx, sse: false }),
                    cancel: CancellationToken::new(),
                };
                responses.push(match state.engine.handle(&call, &method, params).await {
                    Ok(result) => response(&id, result),
                    Err(e) => error_response(Some(&id), &e),
                });
            }
            Ok(Message::Response { id, outcome }) => {
                live.answer(&id, outcome);
            }
            Ok(Message::Notification { method, params }) => {
                if method == "notifications/cancelled" {
                    if let Some(request_id) = params.get("requestId") {
                        live.cancel(request_id);
                    }
                }
            }
        }
    }
    if responses.is_empty() {
        return HttpResponse::Accepted().finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(Value::Array(responses).to_string())
}

fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("allow", HeaderValue::from_static("POST")))
        .finish()
}

async fn get(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Err(reason) = guard::check(&state.config, state.loopback, &req) {
        return forbidden(reason);
    }
    // 2026-07-28 has no GET stream; only a legacy session has one.
    if header(&req, MCP_SESSION_ID).is_none() {
        return method_not_allowed();
    }
    if let Some(v) = header(&req, MCP_PROTOCOL_VERSION) {
        if Version::parse(v).is_none_or(|v| !v.is_legacy()) {
            return rpc_error(StatusCode::BAD_REQUEST, None, &RpcError::unsupported_version(v));
        }
    }
    let session = match load_session(&req, &state) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if !accepts_sse(&req) {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            &RpcError::invalid_request("the GET stream needs Accept: text/event-stream"),
        );
    }
    let live = state.live.session(&session.id, state.config.event_buffer);
    let (tx, rx) = live::channel();
    if let Some(last) = header(&req, LAST_EVENT_ID) {
        return match live.resume(last, tx) {
            Ok(stream) if stream == STANDALONE => sse_response(VecDeque::new(), rx, None, None, Some(state.config.sse_keepalive)),
            Ok(stream) => sse_response(VecDeque::new(), rx, None, Some((live, stream)), Some(state.config.sse_keepalive)),
            Err(AttachError::Busy) => conflict(),
            Err(AttachError::Unknown) => rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::invalid_request("Last-Event-ID names no stream this server can resume"),
            ),
        };
    }
    match live.open_standalone(tx) {
        Ok(()) => {
            let prelude = if session.version.primes_streams() {
                live.reserve_id(STANDALONE)
                    .map(|id| sse::priming(&id, state.config.sse_retry.as_millis()))
                    .into_iter()
                    .collect()
            } else {
                VecDeque::new()
            };
            sse_response(prelude, rx, None, None, Some(state.config.sse_keepalive))
        }
        Err(_) => conflict(),
    }
}

fn conflict() -> HttpResponse {
    rpc_error(
        StatusCode::CONFLICT,
        None,
        &RpcError::invalid_request("another connection is already reading this stream"),
    )
}

async fn delete(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Err(reason) = guard::check(&state.config, state.loopback, &req) {
        return forbidden(reason);
    }
    if header(&req, MCP_SESSION_ID).is_none() {
        return method_not_allowed();
    }
    let session = match load_session(&req, &state) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match state.engine.sessions().delete(&session.id).await {
        Ok(_) => {
            state.live.remove(&session.id);
            tracing::info!("legacy session ended by the client");
            HttpResponse::NoContent().finish()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not delete a session");
            rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &RpcError::internal("the session could not be ended"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_decode() {
        assert_eq!(decode_header_value("echo").as_deref(), Some("echo"));
        assert_eq!(decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(), Some("Hello, 世界"));
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }

    #[test]
    fn statuses_by_era() {
        assert_eq!(status_for(jsonrpc::METHOD_NOT_FOUND, true), StatusCode::NOT_FOUND);
        assert_eq!(status_for(jsonrpc::METHOD_NOT_FOUND, false), StatusCode::OK);
        assert_eq!(status_for(jsonrpc::HEADER_MISMATCH, true), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(jsonrpc::PARSE_ERROR, false), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(jsonrpc::INTERNAL_ERROR, true), StatusCode::OK);
    }
}
