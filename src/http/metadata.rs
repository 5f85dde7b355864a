//! Discovery documents: the protected-resource metadata (RFC 9728) that tells clients
//! which issuers to get tokens from, and the development issuer's own endpoints.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::split_origin;
use super::{guard, State};
use crate::auth::{self, dev, Principal};

/// Registers the metadata paths, and the development issuer's when it runs.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/.well-known/oauth-protected-resource",
        web::get().to(protected_resource),
    )
    .route(
        "/.well-known/oauth-protected-resource/{path:.*}",
        web::get().to(protected_resource),
    )
    .route(
        &format!("{}/.well-known/openid-configuration", dev::PATH),
        web::get().to(dev_metadata),
    )
    .route(
        &format!("/.well-known/oauth-authorization-server{}", dev::PATH),
        web::get().to(dev_metadata),
    )
    .route(
        &format!("/.well-known/openid-configuration{}", dev::PATH),
        web::get().to(dev_metadata),
    )
    .route(&format!("{}/jwks.json", dev::PATH), web::get().to(dev_jwks))
    .route(&format!("{}/token", dev::PATH), web::post().to(dev_token));
}

/// The protected-resource metadata document of this node's MCP endpoint.
pub(crate) fn document(resource: &str, config: &auth::Config) -> Value {
    let issuers: Vec<&str> = config.issuers.iter().map(|i| i.issuer.as_str()).collect();
    json!({
        "resource": resource,
        "authorization_servers": issuers,
        "scopes_supported": config.all_scopes(),
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-fleet",
    })
}

async fn protected_resource(
    state: web::Data<State>,
    path: Option<web::Path<String>>,
) -> HttpResponse {
    let Some(document) = &state.metadata else {
        return HttpResponse::NotFound().finish();
    };
    // Only the resource's own path-inserted form exists (and the bare one).
    if let Some(path) = path {
        let (_, resource_path) = split_origin(&state.guard.resource);
        if format!("/{}", path.into_inner()) != resource_path {
            return HttpResponse::NotFound().finish();
        }
    }
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(document)
}

async fn dev_metadata(state: web::Data<State>) -> HttpResponse {
    match &state.dev {
        Some(issuer) => HttpResponse::Ok().json(issuer.metadata()),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn dev_jwks(state: web::Data<State>) -> HttpResponse {
    match &state.dev {
        Some(issuer) => HttpResponse::Ok().json(issuer.jwks()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// What `POST /dev-issuer/token` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    subject: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// Mints a token for any subject: the development issuer only runs on loopback listeners.
///
/// Loopback alone does not keep a web page out: after DNS rebinding, a page from
/// `evil.example.com` reaches `127.0.0.1` as its own origin, and could mint itself a token
/// for the node. So the endpoint has the MCP endpoint's `Host` and `Origin` checks.
async fn dev_token(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Json<TokenRequest>,
) -> HttpResponse {
    let Some(issuer) = &state.dev else {
        return HttpResponse::NotFound().finish();
    };
    if let Err(reason) = guard::check(&state.config, state.listen, &req) {
        tracing::warn!(%reason, "refused a request to the development issuer");
        return HttpResponse::Forbidden()
            .json(json!({ "error": "access_denied", "error_description": reason }));
    }
    let body = body.into_inner();
    if body.subject.is_empty() {
        return HttpResponse::BadRequest().json(json!({ "error": "subject is empty" }));
    }
    let token = issuer.mint(&Principal {
        subject: body.subject,
        tenant: body.tenant,
        email: body.email,
        scopes: body.scopes,
        issuer: None,
    });
    HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": dev::TOKEN_TTL.as_secs(),
    }))
}
