//! Tokens for upstream APIs on a caller's behalf (`ctx.token_for`): OAuth 2.0 Token
//! Exchange (RFC 8693) at the caller's issuer, the caller's token as the subject.
//!
//! An exchanged token is shared fleet-wide: sealed in the store's `AuthSessions` table
//! under a key derived from the caller (issuer, tenant, subject, scopes) and the audience, kept
//! until shortly before it expires. Its natural key starts with a NUL byte, which no
//! bearer token (the other natural keys of that table) can contain, so the two never meet.
//! Concurrent calls for one caller and audience on a node share one exchange; a node
//! that finds nothing catches up with the leader before asking the issuer, so a token
//! another node stored a moment ago is found, not exchanged again.
//!
//! Passing the caller's own token through is offered only per issuer, by opt-in
//! (`forward_token`): the upstream would accept a token not issued for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::introspect::form_encode;
use super::{Config, Principal};
use crate::actors::jwks::{call_error, check_url, metadata_field};
use crate::raft::{now_ms, Store, Table};

/// The grant type of RFC 8693.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of the subject token and of the token asked for.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Largest token endpoint answer we read.
const RESPONSE_LIMIT: usize = 64 * 1024;
/// Longest audience a tool may ask for.
const MAX_AUDIENCE_LEN: usize = 1024;
/// The most of a token's life given up so that no tool is handed a token about to
/// expire: a cached token is reused until this long (or a quarter of its lifetime, if
/// that is less) before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How long a call waits for its new token to reach the fleet store before it goes on
/// without (other nodes then exchange once more).
const SHARE_WAIT: Duration = Duration::from_secs(2);

/// Why no token could be had; shown to the tool (and the model) as a tool error, so
/// never with token content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    /// The caller has no issuer: authentication is off.
    #[error("no caller token to exchange: authentication is off")]
    NoIssuer,
    /// The caller's issuer is not configured for it.
    #[error(
        "the caller's issuer {0} has no token exchange configured \
         ([auth.issuers.token_exchange], or forward_token = true)"
    )]
    NotConfigured(String),
    /// The audience asked for is empty or too long.
    #[error("the audience must be 1 to {MAX_AUDIENCE_LEN} bytes")]
    BadAudience,
    /// The issuer refused the exchange.
    #[error("the token exchange at {issuer} was refused: {error}")]
    Refused {
        /// The issuer.
        issuer: String,
        /// Its `error` and `error_description`, or the status.
        error: String,
    },
    /// The issuer could not be asked, or its answer made no sense.
    #[error("the token exchange at {issuer} failed: {reason}")]
    Unavailable {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
}

/// An exchanged token as the fleet store keeps it (sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredToken {
    access_token: String,
    /// When the issuer says it expires, in milliseconds since the epoch.
    expires_at_ms: u64,
}

/// One issuer's side of `ctx.token_for`.
struct Endpoint {
    issuer: String,
    /// The configured token endpoint; discovered from the metadata when `None`.
    configured: Option<String>,
    discovered: tokio::sync::OnceCell<String>,
    /// `Basic` client credentials, marked sensitive so they never reach a log.
    authorization: HeaderValue,
}

enum Policy {
    Exchange(Endpoint),
    Forward,
}

type Work = BoxFuture<'static, Result<Arc<str>, ExchangeError>>;
type Flight = Shared<Work>;
/// Exchanges in flight by key digest, with an id so a finished one never removes its
/// successor.
type Flights = HashMap<[u8; 32], (u64, WeakShared<Work>)>;

struct Inner {
    issuers: HashMap<String, Policy>,
    client: reqwest::Client,
    store: Store,
    flights: Mutex<Flights>,
    next_flight: AtomicU64,
    /// Exchanges sent to issuers.
    sent: AtomicU64,
    /// Tokens found in the fleet store instead.
    reused: AtomicU64,
    /// Exchanges that failed (refused, or the issuer unreachable).
    failed: AtomicU64,
}

/// Counters of an [`Exchanger`], for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Exchanges sent to issuers.
    pub sent: u64,
    /// Tokens found in the fleet store, no exchange needed.
    pub reused: u64,
    /// Exchanges that failed.
    pub failed: u64,
}

/// The token exchange clients of every issuer that has one; cheap to clone.
#[derive(Clone)]
pub struct Exchanger(Arc<Inner>);

impl std::fmt::Debug for Exchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanger")
            .field("sent", &self.sent())
            .finish_non_exhaustive()
    }
}

impl Exchanger {
    /// Clients for the issuers of `config`, sharing tokens through `store`, calling them
    /// with `client` (built by `http_client` from the same `config`, and shared with the
    /// node's other calls to them).
    pub(crate) fn new(config: &Config, store: Store, client: reqwest::Client) -> Self {
        let issuers = config
            .issuers
            .iter()
            .filter_map(|issuer| {
                let policy = if issuer.forward_token {
                    Policy::Forward
                } else {
                    let exchange = issuer.token_exchange.as_ref()?;
                    // RFC 6749 2.3.1: both parts are form-encoded before Basic encoding.
                    let credentials = STANDARD.encode(format!(
                        "{}:{}",
                        form_encode(&exchange.client_id),
                        form_encode(&exchange.client_secret)
                    ));
                    let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
                        .expect("base64 is a valid header value");
                    authorization.set_sensitive(true);
                    Policy::Exchange(Endpoint {
                        issuer: issuer.issuer.clone(),
                        configured: exchange.endpoint.clone(),
                        discovered: tokio::sync::OnceCell::new(),
                        authorization,
                    })
                };
                Some((issuer.issuer.clone(), policy))
            })
            .collect();
        Self(Arc::new(Inner {
            issuers,
            client,
            store,
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// Exchanges sent to issuers by this node so far.
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// This node's counters.
    pub fn stats(&self) -> ExchangeStats {
        ExchangeStats {
            sent: self.0.sent.load(Ordering::Relaxed),
            reused: self.0.reused.load(Ordering::Relaxed),
            failed: self.0.failed.load(Ordering::Relaxed),
        }
    }

    /// A token for `audience` on behalf of `principal`, whose own token is `subject`.
    pub(crate) async fn token_for(
        &self,
        principal: &Principal,
        subject: &str,
        audience: &str,
    ) -> Result<String, ExchangeError> {
        if audience.is_empty() || audience.len() > MAX_AUDIENCE_LEN {
            return Err(ExchangeError::BadAudience);
        }
        let issuer = principal.issuer.as_deref().ok_or(ExchangeError::NoIssuer)?;
        let policy = self
            .0
            .issuers
            .get(issuer)
            .or_else(|| self.0.issuers.get(issuer.trim_end_matches('/')))
            .ok_or_else(|| ExchangeError::NotConfigured(issuer.to_owned()))?;
        match policy {
            Policy::Forward => return Ok(subject.to_owned()),
            Policy::Exchange(_) => {}
        }
        let natural = natural_key(principal, audience);
        if let Some(token) = self.0.cached(&natural) {
            self.0.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(token);
        }
        let digest: [u8; 32] = Sha256::digest(&natural).into();
        let flight = self.flight(digest, || {
            let inner = self.0.clone();
            let issuer = issuer.to_owned();
            let subject = subject.to_owned();
            let audience = audience.to_owned();
            async move {
                let result = inner.resolve(&issuer, natural, &subject, &audience).await;
                if let Err(e) = &result {
                    inner.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%issuer, error = %e, "token exchange failed");
                }
                result
            }
            .boxed()
        });
        flight.await.map(|token| token.to_string())
    }

    /// The exchange for `digest` in flight, or a new one made by `work`.
    fn flight(&self, digest: [u8; 32], work: impl FnOnce() -> Work) -> Flight {
        let mut flights = lock(&self.0.flights);
        if let Some(flight) = flights.get(&digest).and_then(|(_, weak)| weak.upgrade()) {
            return flight;
        }
        let id = self.0.next_flight.fetch_add(1, Ordering::Relaxed);
        let landed = Landed {
            inner: self.0.clone(),
            digest,
            id,
        };
        let work = work();
        let flight = async move {
            // Dropped when the work ends or every caller gives up on it.
            let _landed = landed;
            work.await
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            flights.insert(digest, (id, weak));
        }
        flight
    }
}

/// Removes a finished or abandoned flight, unless a newer one took its place.
struct Landed {
    inner: Arc<Inner>,
    digest: [u8; 32],
    id: u64,
}

impl Drop for Landed {
    fn drop(&mut self) {
        let mut flights = lock(&self.inner.flights);
        if flights
            .get(&self.digest)
            .is_some_and(|(id, _)| *id == self.id)
        {
            flights.remove(&self.digest);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The natural key of `principal`'s token for `audience`: a NUL byte (never in a bearer
/// token), a label, then the principal's binding, its scopes and the audience, each
/// length-prefixed so that no two triples share a key. The scopes are part of it because
/// an issuer may grant an exchanged token no more than its subject token held: a caller
/// whose token holds fewer scopes than one exchanged earlier gets a token of its own.
fn natural_key(principal: &Principal, audience: &str) -> Vec<u8> {
    let binding = principal.binding();
    let mut scopes: Vec<&str> = principal.scopes.iter().map(String::as_str).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let scopes = scopes.join(" ");
    let mut key = Vec::with_capacity(binding.len() + scopes.len() + audience.len() + 40);
    key.extend_from_slice(b"\0token-exchange\0");
    for part in [binding.as_str(), scopes.as_str(), audience] {
        key.extend_from_slice(part.len().to_string().as_bytes());
        key.push(b':');
        key.extend_from_slice(part.as_bytes());
    }
    key
}

impl Inner {
    /// A token this replica holds that is not about to expire.
    fn cached(&self, natural: &[u8]) -> Option<String> {
        match self.store.get::<StoredToken>(Table::AuthSessions, natural) {
            Ok(Some(found)) if found.value.expires_at_ms > now_ms() => {
                Some(found.value.access_token)
            }
            Ok(_) => None,
            Err(e) => {
                // Exchanging again is safe; only slower.
                tracing::warn!(error = %e, "cannot read a stored exchanged token; exchanging");
                None
            }
        }
    }

    async fn resolve(
        &self,
        issuer: &str,
        natural: Vec<u8>,
        subject: &str,
        audience: &str,
    ) -> Result<Arc<str>, ExchangeError> {
        // Another node may have stored one a moment ago: a read of the leader's commit
        // index costs one round trip, an exchange costs the issuer's time.
        match self.store.read_barrier().await {
            Ok(()) => {
                if let Some(token) = self.cached(&natural) {
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(token.into());
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot catch up before a token exchange"),
        }
        let Some(Policy::Exchange(endpoint)) = self
            .issuers
            .get(issuer)
            .or_else(|| self.issuers.get(issuer.trim_end_matches('/')))
        else {
            return Err(ExchangeError::NotConfigured(issuer.to_owned()));
        };
        let unavailable = |reason: String| ExchangeError::Unavailable {
            issuer: endpoint.issuer.clone(),
            reason,
        };
        let url = self.endpoint(endpoint).await.map_err(unavailable)?;
        let mut form = vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", audience),
        ];
        // RFC 8707: an audience that is a URL names the resource too.
        if audience.starts_with("https://") || audience.starts_with("http://") {
            form.push(("resource", audience));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.sent.fetch_add(1, Ordering::Relaxed);
        let response = self
            .client
            .post(url)
            .header(AUTHORIZATION, endpoint.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(call_error(&e.without_url())))?;
        let status = response.status();
        let answer = read_json(response).await.map_err(unavailable)?;
        if !status.is_success() {
            let error = match (
                answer.get("error").and_then(Value::as_str),
                answer.get("error_description").and_then(Value::as_str),
            ) {
                (Some(e), Some(d)) => format!("{e}: {d}"),
                (Some(e), None) => e.to_owned(),
                _ => format!("status {status}"),
            };
            return Err(ExchangeError::Refused {
                issuer: endpoint.issuer.clone(),
                error,
            });
        }
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unavailable("the answer has no access_token".to_owned()))?;
        let token: Arc<str> = token.into();
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        match lifetime {
            Some(lifetime) => self.share(&natural, &token, lifetime).await,
            // Without a lifetime nobody can tell when it stops working: not shared.
            None => tracing::debug!(issuer, "exchanged token without expires_in; not cached"),
        }
        Ok(token)
    }

    /// The token endpoint: configured, or read once from the issuer's metadata.
    async fn endpoint(&self, endpoint: &Endpoint) -> Result<reqwest::Url, String> {
        let url = match &endpoint.configured {
            Some(url) => url.clone(),
            None => endpoint
                .discovered
                .get_or_try_init(|| {
                    metadata_field(&self.client, &endpoint.issuer, "token_endpoint")
                })
                .await?
                .clone(),
        };
        check_url(&url)
    }

    /// Stores `token` for every node, until shortly before it expires.
    async fn share(&self, natural: &[u8], token: &str, lifetime: Duration) {
        let now = now_ms();
        let expires_at_ms = now.saturating_add(lifetime.as_millis() as u64);
        let margin = EXPIRY_MARGIN.min(lifetime / 4).as_millis() as u64;
        let usable_until = expires_at_ms.saturating_sub(margin);
        if usable_until <= now {
            return;
        }
        let stored = StoredToken {
            access_token: token.to_owned(),
            expires_at_ms: usable_until,
        };
        let put = self
            .store
            .put(Table::AuthSessions, natural, &stored, Some(usable_until));
        match tokio::time::timeout(SHARE_WAIT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot share an exchanged token with the fleet")
            }
            Err(_) => tracing::debug!("sharing an exchanged token is slow; not waiting"),
        }
    }
}

/// A JSON answer of at most [`RESPONSE_LIMIT`] bytes, whatever its status.
async fn read_json(mut response: reqwest::Response) -> Result<Value, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > RESPONSE_LIMIT {
            return Err(format!("the answer is over {RESPONSE_LIMIT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: Option<&str>, subject: &str) -> Principal {
        Principal {
            subject: subject.to_owned(),
            tenant: tenant.map(str::to_owned),
            issuer: Some("https://id.example.com".into()),
            ..Principal::anonymous()
        }
    }

    #[actix_web::test]
    async fn forwarding_is_opt_in_per_issuer_and_other_issuers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _runtime) = crate::auth::authenticator::tests::store(dir.path()).await;
        let mut forwarding = crate::auth::IssuerConfig::new("https://id.example.com");
        forwarding.forward_token = true;
        let config = Config {
            issuers: vec![
                forwarding,
                crate::auth::IssuerConfig::new("https://plain.example.com"),
            ],
            ..Config::default()
        };
        let exchanger = Exchanger::new(&config, store, crate::actors::jwks::http_client(&config));
        let alice = principal(None, "alice");
        assert_eq!(
            exchanger
                .token_for(&alice, "callers-token", "https://api.test")
                .await
                .unwrap(),
            "callers-token"
        );
        let plain = Principal {
            issuer: Some("https://plain.example.com".into()),
            ..alice.clone()
        };
        let refused = exchanger
            .token_for(&plain, "callers-token", "https://api.test")
            .await;
        assert!(
            matches!(refused, Err(ExchangeError::NotConfigured(_))),
            "{refused:?}"
        );
        let anonymous = exchanger
            .token_for(&Principal::anonymous(), "t", "https://api.test")
            .await;
        assert!(
            matches!(anonymous, Err(ExchangeError::NoIssuer)),
            "{anonymous:?}"
        );
        let empty = exchanger.token_for(&alice, "t", "").await;
        assert!(
            matches!(empty, Err(ExchangeError::BadAudience)),
            "{empty:?}"
        );
        assert_eq!(exchanger.sent(), 0);
    }

    #[test]
    fn each_caller_and_audience_has_its_own_key_and_none_is_a_bearer_token() {
        let alice = principal(Some("acme"), "alice");
        let keys = [
            natural_key(&alice, "https://api.acme.test"),
            natural_key(&alice, "https://api.other.test"),
            natural_key(&principal(Some("acme"), "bob"), "https://api.acme.test"),
            natural_key(&principal(None, "alice"), "https://api.acme.test"),
            natural_key(
                &Principal {
                    scopes: vec!["write".into()],
                    ..alice.clone()
                },
                "https://api.acme.test",
            ),
            // A subject ending like an audience cannot borrow another pair's key.
            natural_key(&principal(Some("acme"), "alice5:https"), "://api.acme.test"),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a[0], 0, "starts with NUL, which no bearer token holds");
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
