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

/// Ready: a single node is ready once it serves HTTP, because its store opened before the
/// listener started. The replicated store will add "leader known and caught up".
async fn ready() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ready" }))
}
