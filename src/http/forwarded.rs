//! What a legacy client sends to a node other than the one running its request: a
//! `Last-Event-ID` GET for a stream another node holds, forwarded there and relayed back,
//! and `notifications/cancelled`, sent on to the node running the call. Streams and
//! requests in flight live in one node's memory ([`super::live`]); nothing here is
//! replicated, so a plain `tools/call` pays nothing for it.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::legacy::{forward_updates, FORWARD_TIMEOUT};
use super::live::{self, AttachError, LiveSession, STANDALONE};
use super::mcp::{conflict, rpc_error, sse_response};
use super::State;
use crate::mcp::RpcError;
use crate::raft::network::CallError;

/// What a GET with `Last-Event-ID` found.
pub(super) enum Resumed {
    /// The answer: the stream resumed (here or relayed from its holder), or a refusal to
    /// retry (409 while another connection holds it, 503 while its holder is slow).
    Answer(HttpResponse),
    /// Nothing is left of the stream: no node knows it, or the node that held it (and its
    /// events, kept in memory) is gone. The 400 that says so.
    Lost(HttpResponse),
}

/// Answers a GET with `Last-Event-ID` on `session`: the stream is resumed here when this
/// node holds it, else on the node that does.
pub(super) async fn resume(
    state: &State,
    session: &str,
    live: Arc<LiveSession>,
    last: &str,
) -> Resumed {
    match resume_here(state, session, live, last) {
        Ok(response) => Resumed::Answer(response),
        Err(AttachError::Elsewhere(node)) => forward_resume(state, session, node, last).await,
        Err(AttachError::Busy) => Resumed::Answer(conflict()),
        Err(AttachError::Unknown) => Resumed::Lost(unknown_stream()),
    }
}

fn unknown_stream() -> HttpResponse {
    rpc_error(
        StatusCode::BAD_REQUEST,
        None,
        &RpcError::invalid_request("Last-Event-ID names no stream this server can resume"),
    )
}

/// Resumes a stream of `session` that this node holds, from event `last`: for a GET here,
/// or one another node forwarded.
pub(super) fn resume_here(
    state: &State,
    session: &str,
    live: Arc<LiveSession>,
    last: &str,
) -> Result<HttpResponse, AttachError> {
    let (tx, rx) = live::channel();
    let reader = tx.clone();
    let stream = live.resume(last, tx)?;
    // The GET stream has no end of its own: it carries updates and closes at shutdown.
    let shutdown = (stream == STANDALONE).then(|| {
        forward_updates(state, session, live, reader);
        state.shutdown.clone()
    });
    Ok(sse_response(
        VecDeque::new(),
        rx,
        None,
        Some(state.config.sse_keepalive),
        shutdown,
    ))
}

/// Resumes a stream that node `node` holds: the GET is forwarded over the internal
/// listener and the holder's event stream relayed as it comes. The answer is "gone" only
/// when that node cannot be reached at all; its events lived in its memory.
async fn forward_resume(state: &State, session: &str, node: u64, last: &str) -> Resumed {
    let gone = || {
        Resumed::Lost(rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::invalid_request(format!(
                "Last-Event-ID names a stream held by node {node}, which is gone, and its \
                 events with it"
            )),
        ))
    };
    let Some(addr) = state.store.member_addr(node) else {
        return gone();
    };
    let request = super::internal::ForwardedResume {
        session: session.to_owned(),
        last_event_id: last.to_owned(),
    };
    let client = state.store.client();
    let open = || client.open(&addr, super::internal::RESUME, &request, FORWARD_TIMEOUT);
    let mut opened = open().await;
    if matches!(opened, Err(CallError::Transport(_))) {
        // A pooled connection to a node that died fails this way; a new connection tells
        // whether the node is gone (refused) or only slow.
        opened = open().await;
    }
    match opened {
        Ok(upstream) if upstream.status().is_success() => {
            tracing::info!(node, "relaying a stream resumed from another node");
            // The holder sends keep-alives; a relay silent for three of them is dead.
            let idle = state.config.sse_keepalive.saturating_mul(3);
            Resumed::Answer(relay(upstream, idle, state.shutdown.clone()))
        }
        Ok(upstream) if upstream.status() == reqwest::StatusCode::CONFLICT => {
            Resumed::Answer(conflict())
        }
        Ok(upstream) if upstream.status() == reqwest::StatusCode::NOT_FOUND => {
            Resumed::Lost(unknown_stream())
        }
        Err(CallError::Unreachable(why)) => {
            tracing::info!(node, reason = %why, "a resumed stream's node is unreachable");
            gone()
        }
        failed => {
            let why = match failed {
                Ok(upstream) => format!("HTTP {}", upstream.status()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(node, reason = %why, "could not resume a stream held by another node");
            Resumed::Answer(rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &RpcError::internal(format!(
                    "node {node}, which holds this stream, did not answer; retry shortly"
                )),
            ))
        }
    }
}

/// An event stream relayed from another node, chunk by chunk, until it ends, stays
/// silent for `idle`, or this node shuts down.
fn relay(
    upstream: reqwest::Response,
    idle: std::time::Duration,
    shutdown: CancellationToken,
) -> HttpResponse {
    let body = futures_util::stream::unfold(upstream, move |mut upstream| {
        let shutdown = shutdown.clone();
        async move {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(idle, upstream.chunk()) => chunk,
                () = shutdown.cancelled() => return None,
            };
            match chunk {
                Ok(Ok(Some(bytes))) => Some((Ok::<_, actix_web::Error>(bytes), upstream)),
                _ => None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// Applies a client's notification. `notifications/cancelled` stops the request it
/// names: here when it runs here, else on whichever node runs it. Request ids are the
/// client's and name no node, so every other member is asked; the one running it cancels
/// it. Cancellations are rare, and the fleet is a few nodes.
pub(super) fn notified(
    state: &State,
    session: &str,
    live: &LiveSession,
    method: &str,
    params: &Map<String, Value>,
) {
    if method != "notifications/cancelled" {
        return;
    }
    let Some(id) = params.get("requestId") else {
        return;
    };
    if live.inflight.cancel(id) {
        return;
    }
    let peers = state.store.peers();
    if peers.is_empty() {
        return;
    }
    let cancel = super::internal::ForwardedCancel {
        session: session.to_owned(),
        request: id.to_string(),
    };
    let client = state.store.client().clone();
    actix_web::rt::spawn(
        async move {
            let asks = peers.iter().map(|(node, addr)| {
                let (client, cancel) = (&client, &cancel);
                async move {
                    let cancelled: Result<bool, _> = client
                        .call(addr, super::internal::CANCEL, cancel, FORWARD_TIMEOUT)
                        .await;
                    match cancelled {
                        Ok(true) => {
                            tracing::info!(node, "cancelled a request running on another node")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(node, error = %e, "could not forward a cancellation")
                        }
                    }
                }
            });
            futures_util::future::join_all(asks).await;
        }
        .in_current_span(),
    );
}
