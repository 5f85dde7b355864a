//! Operational endpoints: liveness and readiness, and the refusal of MCP requests while
//! this node's key ring has not passed the fleet's key check.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::mcp::jsonrpc;
use crate::mcp::RpcError;
use crate::raft::KeyState;

/// Registers `/health` and `/ready`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready));
}

/// Alive: the process serves HTTP.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready: this node is a member of a group (a node waiting to be added, or removed, says
/// so and what to do), knows a leader, has applied everything it last heard was committed,
/// so what it serves is current, and can commit writes: once writes it started have waited
/// longer than `raft.write_timeout` with no commit advance, it is not ready until commits
/// advance again, so a load balancer sends its traffic to nodes that can serve it; a
/// leader that no quorum has acknowledged for as long as its followers wait before they
/// elect is cut off from its followers and is not ready either (`"status": "leader
/// without quorum"`), nor is a follower cut off from its group (`"status": "cut off from
/// the group"`, with the reason: see `Store::cut_off`), at once rather than after
/// `raft.write_timeout`. And its key ring has passed the fleet's key check (see
/// `raft::keycheck`); a node of one, which serves while its check runs, first waits for it
/// as its MCP requests do.
async fn ready(state: web::Data<super::State>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "draining" }));
    }
    if state.store.key_problem().is_some() {
        state.store.key_problem_held().await;
    }
    if let Some(reason) = state.store.not_serving() {
        let status = match state.store.standing() {
            crate::raft::Standing::Removed => "removed from the group",
            _ => "waiting to be added to a group",
        };
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": status, "reason": reason }));
    }
    let status = state.store.status();
    let body = json!({
        "leader_id": status.leader_id,
        "applied_index": status.applied_index,
        "committed_index": status.committed_index,
        "pending_writes": status.pending_writes,
        "stalled_ms": status.stalled_ms,
        "quorum_ack_ms": status.quorum_ack_ms,
    });
    // A ring that is not the fleet's is said first, whatever else holds; a check still
    // under way only once nothing else keeps the node out (it may be waiting for a
    // leader, and saying so helps more).
    let keys = state.store.key_state();
    if let KeyState::Failed(why) = &keys {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "key ring is not the fleet's", "keys": why, "raft": body }));
    }
    if status.stalled_ms.is_some() {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "writes stalled", "raft": body }))
    } else if state.store.lacks_quorum() {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "leader without quorum", "raft": body }))
    } else if let Some(why) = state.store.cut_off() {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "cut off from the group", "reason": why, "raft": body }))
    } else if !state.store.is_ready() {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not ready", "raft": body }))
    } else if let KeyState::Checking(why) = keys {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "checking keys", "keys": why, "raft": body }))
    } else {
        HttpResponse::Ok().json(json!({ "status": "ready", "raft": body }))
    }
}

/// Refuses an MCP request at once (503, with a JSON-RPC error saying why) while this node
/// cannot serve it:
/// - it is cut off from its group (see `Store::cut_off`): every request would wait out
///   `raft.write_timeout` for a leader or a quorum it cannot reach;
/// - its key ring has not passed the fleet's key check (a node of one first waits for a
///   check under way: see `Store::hold_requests_for_key_check`): a ring that is not the
///   fleet's would answer 404 for sessions it cannot open and miss revocations stored
///   under another index key.
///
/// A 503 (with `Retry-After`, as every 503 of the MCP endpoint) is what a client retries,
/// and a balancer's next try reaches a node that serves.
pub(crate) async fn refuse_unless_serving(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<super::State>>() else {
        return next.call(req).await;
    };
    if state.store.is_cut_off() {
        if let Some(why) = state.store.cut_off() {
            let response = super::mcp::rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    format!("this node cannot serve now, retry shortly: {why}"),
                ),
            );
            return Ok(req.into_response(response));
        }
    }
    let problem = match state.store.key_problem() {
        Some(_) => state.store.clone().key_problem_held().await,
        None => None,
    };
    match problem {
        None => next.call(req).await,
        Some(why) => {
            let response = super::mcp::rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    format!("this node cannot serve yet, retry shortly: {why}"),
                ),
            );
            Ok(req.into_response(response))
        }
    }
}

/// While the node drains, every response closes its connection: a balancer's kept-alive
/// connection then ends after an answer, never in the middle of a request.
pub(crate) async fn close_when_draining(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let draining = req
        .app_data::<web::Data<super::State>>()
        .is_some_and(|s| s.draining.load(std::sync::atomic::Ordering::Acquire));
    let mut res = next.call(req).await?;
    if draining {
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    Ok(res)
}
