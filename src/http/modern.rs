//! 2026-07-28: stateless requests with mirrored headers, per-request `_meta`, and
//! cancellation by closing the response stream.

use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::live;
use super::mcp::{
    accepts_sse, header, respond, rpc_error, status_for, ChannelPeer, MCP_METHOD, MCP_NAME,
    MCP_PROTOCOL_VERSION,
};
use super::sse::Outgoing;
use super::State;
use crate::auth::Principal;
use crate::mcp::jsonrpc::reply;
use crate::mcp::{Call, Era, Message, ModernMeta, RpcError, META_PROTOCOL_VERSION};

/// Decodes an `Mcp-Name` value, which may use the `=?base64?…?=` form.
fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

/// Checks the mirrored headers of a 2026-07-28 request against its body.
fn check_modern_headers(
    req: &HttpRequest,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), RpcError> {
    let body_version = params
        .get("_meta")
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RpcError::invalid_params(format!("_meta {META_PROTOCOL_VERSION} is required"))
        })?;
    expect_header(
        req,
        MCP_PROTOCOL_VERSION,
        "MCP-Protocol-Version",
        body_version,
        false,
    )?;
    expect_header(req, MCP_METHOD, "Mcp-Method", method, false)?;
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        // SEP-2663: a task method is routed by the task it names.
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    if let Some(key) = name_key {
        let body_name = params.get(key).and_then(Value::as_str).unwrap_or_default();
        expect_header(req, MCP_NAME, "Mcp-Name", body_name, true)?;
    }
    Ok(())
}

/// Checks the `Mcp-Param-*` headers of a `tools/call` against the arguments they mirror.
fn check_param_headers(
    req: &HttpRequest,
    state: &State,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), RpcError> {
    if method != "tools/call" {
        return Ok(());
    }
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mirrored = state.engine.header_params(name);
    if mirrored.is_empty() {
        return Ok(());
    }
    let empty = Map::new();
    let args = params
        .get("arguments")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for param in mirrored {
        let value = match req.headers().get(param.header.as_str()) {
            None => None,
            Some(raw) => {
                let raw = raw.to_str().map_err(|_| {
                    RpcError::header_mismatch(format!(
                        "the {} header contains invalid characters",
                        param.header
                    ))
                })?;
                Some(decode_header_value(raw).ok_or_else(|| {
                    RpcError::header_mismatch(format!(
                        "the {} header is not valid base64",
                        param.header
                    ))
                })?)
            }
        };
        param
            .check(value.as_deref(), args)
            .map_err(RpcError::header_mismatch)?;
    }
    Ok(())
}

/// Checks that header `name` is present and equals `body_value`, after decoding the
/// `=?base64?…?=` form where the header allows it (`Mcp-Name`).
fn expect_header(
    req: &HttpRequest,
    name: HeaderName,
    label: &str,
    body_value: &str,
    base64_allowed: bool,
) -> Result<(), RpcError> {
    let Some(raw) = header(req, name) else {
        return Err(RpcError::header_mismatch(format!(
            "the {label} header is required"
        )));
    };
    let value = if base64_allowed {
        decode_header_value(raw).ok_or_else(|| {
            RpcError::header_mismatch(format!("the {label} header is not valid base64"))
        })?
    } else {
        raw.to_owned()
    };
    if value != body_value {
        return Err(RpcError::header_mismatch(format!(
            "{label} header value '{value}' does not match body value '{body_value}'"
        )));
    }
    Ok(())
}

pub(super) async fn post(
    req: &HttpRequest,
    message: Message,
    state: &web::Data<State>,
    principal: Arc<Principal>,
) -> HttpResponse {
    let (id, method, params) = match message {
        Message::Notification { .. } => return HttpResponse::Accepted().finish(),
        Message::Response { id, .. } => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Some(&id),
                &RpcError::invalid_request(
                    "clients do not send responses in this protocol version",
                ),
            )
        }
        Message::Request { id, method, params } => (id, method, params),
    };
    let fail = |e: RpcError| rpc_error(status_for(e.code, true), Some(&id), &e);
    if let Err(e) = check_modern_headers(req, &method, &params)
        .and_then(|()| check_param_headers(req, state, &method, &params))
    {
        return fail(e);
    }
    let meta = match ModernMeta::parse(&params) {
        Ok(Some(meta)) => meta,
        Ok(None) => return fail(RpcError::invalid_params("_meta is required")),
        Err(e) => return fail(e),
    };
    if method == "subscriptions/listen" {
        // The stream's own call: a task it follows whose node is lost is acted on (failed,
        // or run again here) for this caller, as a tasks/get of theirs would. Nothing is
        // sent to the client through its peer; the stream has its own channel.
        let (quiet, _) = live::channel();
        let call = Call {
            principal,
            era: Era::Modern(meta),
            peer: Arc::new(ChannelPeer {
                tx: quiet,
                sse: false,
            }),
            cancel: CancellationToken::new(),
            caller: super::auth::caller(req, state),
        };
        return super::listen::listen(id, &params, call, state).await;
    }
    let sse_ok = accepts_sse(req);
    let (tx, rx) = live::channel();
    let cancel = CancellationToken::new();
    let call = Call {
        principal,
        era: Era::Modern(meta),
        peer: Arc::new(ChannelPeer {
            tx: tx.clone(),
            sse: sse_ok,
        }),
        cancel: cancel.clone(),
        caller: super::auth::caller(req, state),
    };
    let engine = state.engine.clone();
    actix_web::rt::spawn(
        async move {
            let outcome = engine.handle(&call, &method, params).await;
            let message = reply(&id, outcome);
            let _ = tx.send(Outgoing::plain(message, true));
        }
        // The call's log lines carry the request's id.
        .in_current_span(),
    );
    // Closing the response stream is cancellation in this version: the connection's end
    // drops this handler, or the streaming body, and the guard in it cancels the call
    // (see `connections`).
    respond(
        rx,
        Vec::new(),
        true,
        Some(cancel.drop_guard()),
        state.config.sse_keepalive,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_decode() {
        assert_eq!(decode_header_value("echo").as_deref(), Some("echo"));
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }
}
