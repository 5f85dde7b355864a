//! Operational endpoints: liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

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
/// advance again, so a load balancer sends its traffic to nodes that can serve it.
async fn ready(state: web::Data<super::State>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "draining" }));
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
    });
    if status.stalled_ms.is_some() {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "writes stalled", "raft": body }))
    } else if state.store.is_ready() {
        HttpResponse::Ok().json(json!({ "status": "ready", "raft": body }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not ready", "raft": body }))
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
