//! Asks issuers about opaque tokens (RFC 7662 token introspection).
//!
//! An opaque token does not say who issued it, so it goes to every issuer that configures
//! an introspection endpoint, in configuration order, until one calls it active. Only
//! list issuers you trust with each other's tokens.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::claims::{self, Facts};
use super::config::{Config, Introspection, IssuerConfig, ResolvedClaims};
use super::{AuthError, Principal};
use crate::actors::jwks::{check_url, http_client, read_limited};

/// Largest introspection response we read.
const RESPONSE_LIMIT: usize = 64 * 1024;

/// Least time between two warnings about failing introspection.
const WARN_EVERY_MS: u64 = 30_000;

/// An active token as its issuer described it.
#[derive(Debug, Clone)]
pub(crate) struct Introspected {
    /// Who it speaks for.
    pub principal: Principal,
    /// Its `jti`, `iat` and `exp`, when the issuer said.
    pub facts: Facts,
}

/// One issuer's introspection endpoint and the rules for its answers.
struct Endpoint {
    config: IssuerConfig,
    names: ResolvedClaims,
    audiences: Vec<String>,
    introspection: Introspection,
    /// `Basic` client credentials, marked sensitive so they never reach a log.
    authorization: HeaderValue,
}

/// The introspection clients of every issuer that has one.
pub(crate) struct Introspector {
    endpoints: Vec<Endpoint>,
    client: reqwest::Client,
    leeway_secs: u64,
    last_warning_ms: AtomicU64,
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

impl Introspector {
    /// Clients for the issuers of `config` that configure introspection; `resource` is the
    /// default audience.
    pub fn new(config: &Config, resource: &str) -> Self {
        let endpoints = config
            .issuers
            .iter()
            .filter_map(|issuer| {
                let introspection = issuer.introspection.clone()?;
                // RFC 6749 2.3.1: both parts are form-encoded before Basic encoding.
                let credentials = STANDARD.encode(format!(
                    "{}:{}",
                    form_encode(&introspection.client_id),
                    form_encode(&introspection.client_secret)
                ));
                let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
                    .expect("base64 is a valid header value");
                authorization.set_sensitive(true);
                Some(Endpoint {
                    names: issuer.claim_names(),
                    audiences: claims::audiences(issuer, resource),
                    config: issuer.clone(),
                    introspection,
                    authorization,
                })
            })
            .collect();
        Self {
            endpoints,
            client: http_client(config.fetch_timeout),
            leeway_secs: config.leeway.as_secs(),
            last_warning_ms: AtomicU64::new(0),
        }
    }

    /// Asks the issuers about `token`. Inactive everywhere → `Invalid`; unreachable where
    /// no one called it active → `Unavailable`.
    pub async fn introspect(&self, token: &str) -> Result<Introspected, AuthError> {
        if self.endpoints.is_empty() {
            return Err(AuthError::Invalid(
                "not a JWT, and no issuer introspects opaque tokens".into(),
            ));
        }
        let mut failure = None;
        for endpoint in &self.endpoints {
            match self.ask(endpoint, token).await {
                Ok(Some(response)) => return self.accept(endpoint, &response),
                Ok(None) => {}
                Err(error) => {
                    if self.should_warn() {
                        tracing::warn!(issuer = %endpoint.config.issuer, %error, "token introspection failed");
                    } else {
                        tracing::debug!(issuer = %endpoint.config.issuer, %error, "token introspection failed");
                    }
                    failure = Some(format!(
                        "introspection at {}: {error}",
                        endpoint.config.issuer
                    ));
                }
            }
        }
        Err(match failure {
            Some(why) => AuthError::Unavailable(why),
            None => AuthError::Invalid("inactive token".into()),
        })
    }

    /// Whether a failure should be logged as a warning: at most one per [`WARN_EVERY_MS`],
    /// so an outage is reported without a line per request.
    fn should_warn(&self) -> bool {
        let now = crate::raft::now_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The response when the token is active, `None` when it is not.
    async fn ask(
        &self,
        endpoint: &Endpoint,
        token: &str,
    ) -> Result<Option<Map<String, Value>>, String> {
        let url = check_url(&endpoint.introspection.endpoint)?;
        let response = self
            .client
            .post(url)
            .header(AUTHORIZATION, endpoint.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(format!(
                "token={}&token_type_hint=access_token",
                form_encode(token)
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = read_limited(response, RESPONSE_LIMIT).await?;
        let response: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|e| format!("not a JSON object: {e}"))?;
        // RFC 7662 2.2: only a literal `true` means active.
        Ok((response.get("active") == Some(&Value::Bool(true))).then_some(response))
    }

    /// Checks an active response the way a JWT's claims are checked.
    fn accept(
        &self,
        endpoint: &Endpoint,
        response: &Map<String, Value>,
    ) -> Result<Introspected, AuthError> {
        let invalid = |why: &str| AuthError::Invalid(why.to_owned());
        if let Some(iss) = response.get("iss") {
            if iss.as_str() != Some(endpoint.config.issuer.as_str()) {
                return Err(invalid("introspection names another issuer"));
            }
        }
        if let Some(aud) = response.get("aud") {
            if !claims::audience_matches(aud, &endpoint.audiences) {
                return Err(invalid("wrong audience"));
            }
        }
        let now = jsonwebtoken::get_current_timestamp();
        if claims::seconds(response, "exp").is_some_and(|exp| exp + self.leeway_secs < now) {
            return Err(invalid("expired"));
        }
        if claims::seconds(response, "nbf").is_some_and(|nbf| nbf > now + self.leeway_secs) {
            return Err(invalid("not yet valid (nbf)"));
        }
        let (principal, facts) = claims::principal(response, &endpoint.config, &endpoint.names)
            .map_err(AuthError::Invalid)?;
        Ok(Introspected { principal, facts })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::authenticator::tests::{config, reason, store, RESOURCE};
    use crate::auth::authenticator::StoredSession;
    use crate::auth::test_issuer::{now, Mode, TestIssuer};
    use crate::auth::Authenticator;
    use crate::raft::Table;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b+c/d=é~"), "a+b%2Bc%2Fd%3D%C3%A9%7E");
        assert_eq!(form_encode("Az09*-._"), "Az09*-._");
    }

    #[actix_web::test]
    async fn introspection_results_are_shared_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let issuer = TestIssuer::start(&[]);
        let exp = now() + 60;
        let fields =
            json!({"sub": "carol", "scope": "mcp read", "exp": exp, "iss": issuer.issuer()});
        issuer.activate("opaque-1", fields);
        // An issuer that only introspects: no jwks_uri, so no key fetch until a JWT names it.
        let mut config = config(&issuer);
        config.issuers[0].jwks_uri = None;
        let config = &config;
        let a = Authenticator::start(config, RESOURCE, store.clone());
        let p = a.authenticate("opaque-1").await.unwrap();
        assert_eq!((p.subject.as_str(), p.scopes.len()), ("carol", 2));
        a.authenticate("opaque-1").await.unwrap();
        assert_eq!((a.stats().introspected, a.stats().memory_hits), (1, 1));
        // Stored until the token's exp (sooner than the 5 min cache period).
        let stored = store
            .get::<StoredSession>(Table::AuthSessions, b"opaque-1")
            .unwrap()
            .unwrap();
        assert_eq!(stored.deadline_ms, Some(exp * 1000));

        // Another node (here: another authenticator on the same store) asks no issuer.
        let b = Authenticator::start(config, RESOURCE, store.clone());
        assert_eq!(b.authenticate("opaque-1").await.unwrap().subject, "carol");
        assert_eq!((b.stats().replica_hits, b.stats().introspected), (1, 0));
        assert_eq!(issuer.introspections(), 1);

        // Inactive, or active for someone else: refused, and never cached anywhere.
        for _ in 0..2 {
            assert_eq!(reason(a.authenticate("opaque-2").await), "inactive token");
        }
        issuer.activate("opaque-3", json!({"sub": "dan", "aud": "https://other"}));
        assert_eq!(reason(a.authenticate("opaque-3").await), "wrong audience");
        assert_eq!(reason(a.authenticate("opaque-3").await), "wrong audience");
        assert_eq!(issuer.introspections(), 5);
        for token in [&b"opaque-2"[..], b"opaque-3"] {
            let found = store.get::<StoredSession>(Table::AuthSessions, token);
            assert!(found.unwrap().is_none());
        }

        // The issuer goes down: what is cached still works, the rest is unavailable.
        issuer.set_mode(Mode::Failing);
        let c = Authenticator::start(config, RESOURCE, store);
        assert_eq!(c.authenticate("opaque-1").await.unwrap().subject, "carol");
        let down = c.authenticate("opaque-4").await;
        assert!(matches!(down, Err(AuthError::Unavailable(_))), "{down:?}");
        assert_eq!(c.stats().refused, 0);
        assert_eq!((issuer.jwks_requests(), issuer.metadata_requests()), (0, 0));
    }
}
