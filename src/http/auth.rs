//! The resource-server side of every MCP request: the bearer token becomes a principal,
//! or the answer is a challenge clients know how to follow (RFC 6750, RFC 9728).
//!
//! 401 means "authenticate" (no token, or one we refuse); 403 means "ask for more scope";
//! an unknown session stays 404 (see `legacy`), because a 401 sends clients to log in again.

use std::sync::Arc;

use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::mcp::rpc_error;
use super::State;
use crate::auth::{AuthError, Authenticator, Principal};
use crate::mcp::jsonrpc;
use crate::mcp::RpcError;
use crate::tools;

/// What the HTTP layer needs to authenticate requests.
pub(crate) struct Guard {
    /// Validates tokens; `None` with `--auth none`.
    pub authenticator: Option<Authenticator>,
    /// The public MCP URL: the resource tokens must name.
    pub resource: String,
    /// Where the protected-resource metadata of `resource` is.
    pub metadata_url: String,
    /// Scopes every request needs.
    pub required_scopes: Vec<String>,
    /// The caller of every request while authentication is off.
    pub anonymous: Arc<Principal>,
}

impl Guard {
    /// A guard for `resource` (an absolute URL).
    pub(crate) fn new(
        authenticator: Option<Authenticator>,
        resource: &str,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            authenticator,
            metadata_url: metadata_url(resource),
            resource: resource.to_owned(),
            required_scopes: scopes,
            anonymous: Arc::new(Principal::anonymous()),
        }
    }
}

/// The RFC 9728 metadata URL of `resource`: the well-known path inserted between the
/// origin and the resource's path.
pub(crate) fn metadata_url(resource: &str) -> String {
    let (origin, path) = split_origin(resource);
    format!("{origin}/.well-known/oauth-protected-resource{path}")
}

/// `https://host:port` and `/path` of an absolute URL.
pub(crate) fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

/// The caller of `req`, or the response refusing it.
pub(super) async fn authenticate(
    req: &HttpRequest,
    state: &State,
) -> Result<Arc<Principal>, HttpResponse> {
    let guard = &state.guard;
    let Some(authenticator) = &guard.authenticator else {
        return Ok(guard.anonymous.clone());
    };
    let Some(token) = bearer_token(req) else {
        return Err(challenge(guard, &AuthError::Missing));
    };
    // A node that may have fallen behind could hold tokens the fleet has since revoked:
    // catch up with the leader and forget what it validated before deciding.
    if !state.store.is_current() {
        if let Err(e) = state.store.read_barrier().await {
            tracing::warn!(error = %e, "could not catch up with the leader to check a token");
            return Err(challenge(guard, &AuthError::Unavailable(e.to_string())));
        }
        authenticator.forget_cached();
    }
    match authenticator.authenticate(token).await {
        Ok(principal) => {
            if principal.has_scopes(&guard.required_scopes) {
                Ok(principal)
            } else {
                tracing::info!(
                    subject = %principal.subject,
                    "refused: the token lacks the scopes every request needs"
                );
                Err(insufficient_scope(guard, &guard.required_scopes))
            }
        }
        Err(e) => {
            // The reason names the check that failed, never the token.
            tracing::info!(reason = %e, "refused a bearer token");
            Err(challenge(guard, &e))
        }
    }
}

/// The token of an `Authorization: Bearer` header, when there is one.
fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.as_bytes();
    // What `HeaderValue::to_str` accepts (visible ASCII and tabs), tested without a
    // branch per byte: a token is hundreds of bytes, checked on every request.
    let visible = value.iter().fold(true, |ok, &b| {
        ok & ((b' '..=b'~').contains(&b) | (b == b'\t'))
    });
    if !visible {
        return None;
    }
    let (scheme, token) = std::str::from_utf8(value).ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a tool needs to act for the caller of `req` upstream: its bearer token (when
/// authentication is on; `req` has passed [`authenticate`]) and the request id.
pub(super) fn caller(req: &HttpRequest, state: &State) -> tools::Caller {
    let token = state
        .guard
        .authenticator
        .as_ref()
        .and_then(|_| bearer_token(req))
        .map(tools::Bearer::new);
    let request_id = req
        .extensions()
        .get::<super::RequestId>()
        .map(|id| id.0.clone());
    tools::Caller { token, request_id }
}

/// 401 (or 503 when tokens cannot be checked right now) with the challenge that tells a
/// client where to get a token.
fn challenge(guard: &Guard, error: &AuthError) -> HttpResponse {
    let mut params = Vec::new();
    let (status, message) = match error {
        AuthError::Missing => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized: a bearer token is required".to_owned(),
        ),
        AuthError::Invalid(reason) => {
            params.push("error=\"invalid_token\"".to_owned());
            params.push(format!("error_description=\"{}\"", quoted(reason)));
            (StatusCode::UNAUTHORIZED, format!("Unauthorized: {reason}"))
        }
        AuthError::Unavailable(reason) => {
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    format!("authentication is unavailable, retry shortly: {reason}"),
                ),
            )
        }
    };
    params.push(format!("resource_metadata=\"{}\"", guard.metadata_url));
    if !guard.required_scopes.is_empty() {
        params.push(format!("scope=\"{}\"", guard.required_scopes.join(" ")));
    }
    with_challenge(
        rpc_error(status, None, &RpcError::new(jsonrpc::BAD_REQUEST, message)),
        &params,
    )
}

/// 403 asking for `needed` (every scope the request needs, held ones included).
pub(super) fn insufficient_scope(guard: &Guard, needed: &[String]) -> HttpResponse {
    let params = [
        "error=\"insufficient_scope\"".to_owned(),
        format!("scope=\"{}\"", needed.join(" ")),
        format!("resource_metadata=\"{}\"", guard.metadata_url),
    ];
    with_challenge(
        rpc_error(
            StatusCode::FORBIDDEN,
            None,
            &RpcError::new(
                jsonrpc::BAD_REQUEST,
                format!("Forbidden: this needs the scopes {}", needed.join(" ")),
            ),
        ),
        &params,
    )
}

fn with_challenge(mut response: HttpResponse, params: &[String]) -> HttpResponse {
    if let Ok(value) = format!("Bearer {}", params.join(", ")).parse() {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// `text` made safe inside a quoted-string: no quotes, backslashes or control characters.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_before() {
        let token = |value: &[u8]| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((
                    AUTHORIZATION,
                    actix_web::http::header::HeaderValue::from_bytes(value).unwrap(),
                ))
                .to_http_request();
            bearer_token(&req).map(str::to_owned)
        };
        assert_eq!(token(b"Bearer abc.def").as_deref(), Some("abc.def"));
        assert_eq!(token(b" bEaReR \t a-b_c~ ").as_deref(), Some("a-b_c~"));
        assert_eq!(token(b"Bearer a b").as_deref(), Some("a b"));
        for refused in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer   ",
            b"Bearerabc",
            b"Bearer ab\xc3\xa9c",
            b"Bearer ab\x80c",
        ] {
            assert_eq!(token(refused), None, "{}", String::from_utf8_lossy(refused));
        }
        let req = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(bearer_token(&req), None);
    }

    #[test]
    fn metadata_urls_insert_the_well_known_path() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
        assert_eq!(quoted("a\"b\\c\nd"), "a'b'c'd");
    }
}
