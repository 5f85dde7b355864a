//! The internal listener's side of `mcp-fleet secrets`: set, list and delete a tenant's
//! secrets, behind the cluster secret like every internal route. Answers never carry a
//! value; refusals name the field and the cap.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::tools::{SecretError, Secrets};

/// Where `secrets set` posts.
pub(crate) const SET: &str = "/secrets/set";
/// Where `secrets list` posts.
pub(crate) const LIST: &str = "/secrets/list";
/// Where `secrets delete` posts.
pub(crate) const DELETE: &str = "/secrets/delete";

/// Registers the routes; the caller puts them behind the cluster-secret check.
pub(crate) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route(SET, web::post().to(set))
        .route(LIST, web::post().to(list))
        .route(DELETE, web::post().to(delete))
}

/// What `POST /secrets/set` takes.
#[derive(Deserialize)]
struct SetBody {
    tenant: String,
    name: String,
    value: String,
}

/// What `POST /secrets/delete` takes.
#[derive(Deserialize)]
struct NameBody {
    tenant: String,
    name: String,
}

/// What `POST /secrets/list` takes.
#[derive(Deserialize)]
struct TenantBody {
    tenant: String,
}

async fn set(secrets: web::Data<Secrets>, body: web::Json<SetBody>) -> HttpResponse {
    let SetBody {
        tenant,
        name,
        value,
    } = body.into_inner();
    match secrets.set(&tenant, &name, &value).await {
        Ok(()) => {
            tracing::info!(tenant, name, "a tenant secret was set");
            HttpResponse::Ok().json(json!({ "tenant": tenant, "name": name, "set": true }))
        }
        Err(e) => refusal(&e),
    }
}

async fn delete(secrets: web::Data<Secrets>, body: web::Json<NameBody>) -> HttpResponse {
    match secrets.delete(&body.tenant, &body.name).await {
        Ok(existed) => {
            tracing::info!(
                tenant = body.tenant,
                name = body.name,
                existed,
                "a tenant secret was deleted"
            );
            HttpResponse::Ok().json(
                json!({ "tenant": body.tenant, "name": body.name, "deleted": true, "existed": existed }),
            )
        }
        Err(e) => refusal(&e),
    }
}

async fn list(secrets: web::Data<Secrets>, body: web::Json<TenantBody>) -> HttpResponse {
    match secrets.list(&body.tenant).await {
        Ok(listed) => HttpResponse::Ok().json(json!({ "tenant": body.tenant, "secrets": listed })),
        Err(e) => refusal(&e),
    }
}

/// The status of a refusal: the operator's input (400), a full tenant (429), the store
/// (503). The message names fields and caps, never a value.
fn refusal(e: &SecretError) -> HttpResponse {
    let mut response = match e {
        SecretError::Empty(_) | SecretError::TooLarge { .. } | SecretError::NoTenant(_) => {
            HttpResponse::BadRequest()
        }
        SecretError::TooMany { .. } => HttpResponse::TooManyRequests(),
        SecretError::Missing(_) => HttpResponse::NotFound(),
        SecretError::Store(_) => HttpResponse::ServiceUnavailable(),
    };
    response.json(json!({ "error": e.to_string() }))
}
