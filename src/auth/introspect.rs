//! Asks issuers about opaque tokens (RFC 7662 token introspection).
//!
//! An opaque token does not say who issued it, so it goes to every issuer that configures
//! an introspection endpoint, in configuration order, until one calls it active. Only
//! list issuers you trust with each other's tokens.
//!
//! An issuer answers for every token it issued, whichever application it was issued to,
//! so an active answer is not enough: it must name this server in `aud` (or name an
//! allowed `client_id`), unless the operator opted out for that issuer.
//!
//! Opaque tokens the tiers have never seen all end here, so a flood of made-up bearers
//! would become a flood of calls to every issuer. At most
//! `auth.max_concurrent_introspections` run at once per node; a token that finds no free
//! slot within `auth.introspection_wait` is answered "cannot check now" (503).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::claims::{self, Facts};
use super::config::{Config, Introspection, IssuerConfig, ResolvedClaims};
use super::{AuthError, Principal};
use crate::actors::jwks::{call_error, check_url, read_limited};
use crate::limits::Limits;

/// The configuration key of the cap on introspections running at once on one node.
pub(crate) const MAX_CONCURRENT: &str = "auth.max_concurrent_introspections";

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
    /// Tokens sent to introspection.
    sent: AtomicU64,
    /// One permit per introspection allowed to run at once ([`MAX_CONCURRENT`]).
    slots: tokio::sync::Semaphore,
    cap: usize,
    wait: Duration,
    limits: Limits,
}

/// A slot held for one introspection; counted in `mcp_fleet_limit_in_use` until dropped.
struct Slot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(super) fn form_encode(value: &str) -> String {
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
    /// default audience. Refusals by the concurrency cap are counted in `limits`. Calls
    /// the issuers with `client` (built by `http_client` from the same `config`,
    /// and shared with the node's other calls to them).
    pub(crate) fn new(
        config: &Config,
        resource: &str,
        limits: Limits,
        client: reqwest::Client,
    ) -> Self {
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
        limits.declare(MAX_CONCURRENT);
        let cap = config.max_concurrent_introspections.max(1);
        Self {
            endpoints,
            client,
            leeway_secs: config.leeway.as_secs(),
            last_warning_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            slots: tokio::sync::Semaphore::new(cap),
            cap,
            wait: config.introspection_wait,
            limits,
        }
    }

    /// Waits up to `auth.introspection_wait` for a free slot; refuses with
    /// `Unavailable` (503, retry later) when none frees up.
    async fn slot(&self) -> Result<Slot<'_>, AuthError> {
        match tokio::time::timeout(self.wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => {
                let gauge = self.limits.gauge(MAX_CONCURRENT);
                gauge.inc();
                Ok(Slot {
                    _permit: permit,
                    gauge,
                })
            }
            // The semaphore is never closed; treat it as busy all the same.
            Ok(Err(_)) | Err(_) => {
                self.limits.refused(MAX_CONCURRENT);
                Err(AuthError::Unavailable(format!(
                    "cannot check now: {} token introspections are already running on this \
                     node ({MAX_CONCURRENT})",
                    self.cap
                )))
            }
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
        let _slot = self.slot().await?;
        self.sent.fetch_add(1, Ordering::Relaxed);
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

    /// Tokens sent to introspection so far (each counted once, however many issuers it
    /// went to).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
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
            .map_err(|e| call_error(&e))?;
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
        match response.get("aud").filter(|aud| !aud.is_null()) {
            // An `aud` naming someone else says the token is not for us, whatever the rest.
            Some(aud) if !claims::audience_matches(aud, &endpoint.audiences) => {
                return Err(invalid("wrong audience"));
            }
            Some(_) => {}
            None => {
                let rules = &endpoint.introspection;
                let allowed_client = response
                    .get("client_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| rules.allowed_client_ids.iter().any(|a| a == id));
                if rules.require_audience && !allowed_client {
                    return Err(invalid(
                        "introspection names no audience, and no allowed client_id",
                    ));
                }
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
        let fields = json!({"sub": "carol", "scope": "mcp read", "exp": exp,
                            "iss": issuer.issuer(), "aud": RESOURCE});
        issuer.activate("opaque-1", fields);
        // An issuer that only introspects: no jwks_uri, so no key fetch until a JWT names it.
        let mut config = config(&issuer);
        config.issuers[0].jwks_uri = None;
        let config = &config;
        let a = Authenticator::start(config, RESOURCE, store.clone(), Limits::default());
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
        let b = Authenticator::start(config, RESOURCE, store.clone(), Limits::default());
        assert_eq!(b.authenticate("opaque-1").await.unwrap().subject, "carol");
        assert_eq!((b.stats().replica_hits, b.stats().introspected), (1, 0));
        assert_eq!(issuer.introspections(), 1);

        // Inactive, or active for someone else: refused, never stored in the fleet store,
        // and asked about once per negative-cache period on this node.
        for _ in 0..2 {
            assert_eq!(reason(a.authenticate("opaque-2").await), "inactive token");
        }
        issuer.activate("opaque-3", json!({"sub": "dan", "aud": "https://other"}));
        assert_eq!(reason(a.authenticate("opaque-3").await), "wrong audience");
        assert_eq!(reason(a.authenticate("opaque-3").await), "wrong audience");
        assert_eq!(issuer.introspections(), 3);
        assert_eq!((a.stats().negative_hits, a.stats().refused), (2, 4));
        for token in [&b"opaque-2"[..], b"opaque-3"] {
            let found = store.get::<StoredSession>(Table::AuthSessions, token);
            assert!(found.unwrap().is_none());
        }

        // The issuer goes down: what is cached still works, the rest is unavailable, and
        // unavailability is not remembered as a refusal.
        issuer.set_mode(Mode::Failing);
        let c = Authenticator::start(config, RESOURCE, store, Limits::default());
        assert_eq!(c.authenticate("opaque-1").await.unwrap().subject, "carol");
        for _ in 0..2 {
            let down = c.authenticate("opaque-4").await;
            assert!(matches!(down, Err(AuthError::Unavailable(_))), "{down:?}");
        }
        assert_eq!((c.stats().refused, c.stats().introspected), (0, 2));
        assert_eq!((issuer.jwks_requests(), issuer.metadata_requests()), (0, 0));
    }

    /// An authenticator of `issuer` (introspection only) with `edit` applied to its config.
    async fn introspecting(
        issuer: &TestIssuer,
        edit: impl FnOnce(&mut Config),
    ) -> (
        Authenticator,
        Limits,
        tempfile::TempDir,
        crate::raft::Runtime,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, rt) = store(dir.path()).await;
        let mut config = config(issuer);
        config.issuers[0].jwks_uri = None;
        edit(&mut config);
        let limits = Limits::default();
        let auth = Authenticator::start(&config, RESOURCE, store, limits.clone());
        (auth, limits, dir, rt)
    }

    #[actix_web::test]
    async fn an_answer_without_an_audience_needs_an_allowed_client_or_an_opt_out() {
        let issuer = TestIssuer::start(&[]);
        let exp = now() + 600;
        // What an identity provider says about a token it issued to another application.
        issuer.activate(
            "other-app",
            json!({"sub": "erin", "client_id": "billing-app", "exp": exp}),
        );
        issuer.activate("no-client", json!({"sub": "erin", "exp": exp}));
        issuer.activate(
            "elsewhere",
            json!({"sub": "erin", "client_id": "billing-app", "aud": "https://billing", "exp": exp}),
        );

        let (strict, ..) = introspecting(&issuer, |_| {}).await;
        for token in ["other-app", "no-client"] {
            assert_eq!(
                reason(strict.authenticate(token).await),
                "introspection names no audience, and no allowed client_id"
            );
        }

        let (listed, ..) = introspecting(&issuer, |c| {
            let rules = c.issuers[0].introspection.as_mut().unwrap();
            rules.allowed_client_ids = vec!["billing-app".into()];
        })
        .await;
        assert_eq!(
            listed.authenticate("other-app").await.unwrap().subject,
            "erin"
        );
        assert!(listed.authenticate("no-client").await.is_err());
        // A listed client does not make a token for another audience ours.
        assert_eq!(
            reason(listed.authenticate("elsewhere").await),
            "wrong audience"
        );

        let (lenient, ..) = introspecting(&issuer, |c| {
            c.issuers[0]
                .introspection
                .as_mut()
                .unwrap()
                .require_audience = false;
        })
        .await;
        assert_eq!(
            lenient.authenticate("no-client").await.unwrap().subject,
            "erin"
        );
        assert_eq!(
            reason(lenient.authenticate("elsewhere").await),
            "wrong audience"
        );
    }

    #[actix_web::test]
    async fn a_refusal_is_remembered_briefly_by_digest_and_within_bounds() {
        let issuer = TestIssuer::start(&[]);
        let (auth, ..) = introspecting(&issuer, |c| {
            c.negative_cache_ttl = Duration::from_millis(300);
            c.max_negative_cache = 4;
        })
        .await;
        for _ in 0..5 {
            assert_eq!(reason(auth.authenticate("bad-1").await), "inactive token");
        }
        assert_eq!(issuer.introspections(), 1);
        assert_eq!(auth.stats().negative_hits, 4);
        // Past the period the issuer is asked again (and may have changed its mind).
        tokio::time::sleep(Duration::from_millis(400)).await;
        issuer.activate("bad-1", json!({"sub": "fay", "aud": RESOURCE}));
        assert_eq!(auth.authenticate("bad-1").await.unwrap().subject, "fay");
        assert_eq!(issuer.introspections(), 2);
        // Many distinct bad tokens: the tier stays within its bound.
        for i in 0..50 {
            assert!(auth.authenticate(&format!("junk-{i}")).await.is_err());
        }
        let held = auth.refusals_held();
        assert!(held <= 4, "{held} refusals held");

        // Turned off: every refusal asks again.
        let (off, ..) = introspecting(&issuer, |c| c.negative_cache_ttl = Duration::ZERO).await;
        let before = issuer.introspections();
        for _ in 0..3 {
            assert!(off.authenticate("bad-2").await.is_err());
        }
        assert_eq!(issuer.introspections() - before, 3);
    }

    #[actix_web::test]
    async fn introspections_beyond_the_cap_wait_then_are_refused_as_unavailable() {
        let issuer = TestIssuer::start(&[]);
        issuer.set_mode(Mode::Slow(Duration::from_millis(1500)));
        let (auth, limits, ..) = introspecting(&issuer, |c| {
            c.max_concurrent_introspections = 2;
            c.introspection_wait = Duration::from_millis(200);
        })
        .await;
        let tokens: Vec<String> = (0..3).map(|i| format!("flood-{i}")).collect();
        let results =
            futures_util::future::join_all(tokens.iter().map(|t| auth.authenticate(t))).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::Unavailable(why)) if why.starts_with("cannot check now")))
            .count();
        let answered = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::Invalid(_))))
            .count();
        assert_eq!((busy, answered), (1, 2), "{results:?}");
        // The third token never reached the issuer.
        assert_eq!(issuer.introspections(), 2);
        assert_eq!(limits.refusals(MAX_CONCURRENT), 1);
        assert_eq!(auth.stats().introspected, 2);
        assert_eq!(limits.gauge(MAX_CONCURRENT).get(), 0);
        // Once the slots are free, the refused token is asked about normally.
        issuer.set_mode(Mode::Up);
        assert_eq!(reason(auth.authenticate("flood-2").await), "inactive token");
    }
}
