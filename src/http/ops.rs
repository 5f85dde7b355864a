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

/// Ready: this node knows a leader and has applied everything it last heard was
/// committed, so what it serves is current.
async fn ready(state: web::Data<super::State>) -> HttpResponse {
    let status = state.store.status();
    let body = json!({
        "leader_id": status.leader_id,
        "applied_index": status.applied_index,
        "committed_index": status.committed_index,
    });
    if state.store.is_ready() {
        HttpResponse::Ok().json(json!({ "status": "ready", "raft": body }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not ready", "raft": body }))
    }
}
