//! The authenticator: bearer token in, principal out, through tiers chosen by cost.
//!
//! 1. The memory tier: this node's recent results, keyed by the token's SHA-256.
//! 2. For opaque tokens, this node's negative tier: tokens refused a moment ago, under the
//!    same digest, so a bad bearer sent again and again costs one introspection per
//!    `auth.negative_cache_ttl`.
//! 3. For opaque tokens, the fleet store's `AuthSessions` (an introspection any node did).
//! 4. Full work: JWT verification, or introspection at the issuer.
//!
//! Concurrent misses of one token share one piece of work. Every miss is checked against
//! the revocations on this node's replica, and a revocation applied by the log empties
//! the memory tier. Refused JWTs are not remembered: checking one again costs a fraction
//! of a millisecond of CPU and no call to anyone.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::claims::Facts;
use super::introspect::Introspector;
use super::jwt::{self, Verifier};
use super::revocation::{self, Revocation};
use super::{Config, Principal};
use crate::actors::{install_tls_provider, JwksHandle};
use crate::limits::Limits;
use crate::raft::{self, now_ms, Change, Store, Table};

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No token was presented: 401 without an `error` parameter.
    #[error("no bearer token")]
    Missing,
    /// The token is not acceptable: 401 with `error="invalid_token"`. The reason is fit for
    /// logs; it never holds token content.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Nothing can be said about the token right now (its issuer's keys or introspection
    /// endpoint unreachable with nothing cached, the store unreadable): 503.
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

/// Counters of the authenticator, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Tokens answered from the memory tier.
    pub memory_hits: u64,
    /// Opaque tokens answered from the fleet store (introspected by some node before).
    pub replica_hits: u64,
    /// Full JWT verifications run.
    pub verified: u64,
    /// Opaque tokens sent to introspection (not those refused before, for want of a slot).
    pub introspected: u64,
    /// Opaque tokens refused from the negative tier, without asking an issuer again.
    pub negative_hits: u64,
    /// Key-set fetches started.
    pub jwks_fetches: u64,
    /// Authentications refused (missing or invalid token; not unavailability).
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    replica_hits: AtomicU64,
    verified: AtomicU64,
    negative_hits: AtomicU64,
    refused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A result kept in the memory tier.
#[derive(Clone)]
struct Entry {
    principal: Arc<Principal>,
    /// When it stops being trusted, in milliseconds since the epoch.
    until_ms: u64,
    /// [`JwksHandle::removals`] when it was validated.
    keys_epoch: u64,
}

/// A refusal kept in the negative tier.
#[derive(Clone)]
struct Refused {
    /// Why, as first answered (never token content).
    reason: Arc<str>,
    /// When it is forgotten, in milliseconds since the epoch.
    until_ms: u64,
}

/// An introspection result as the fleet store keeps it under the token (hashed by the
/// store; the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredSession {
    principal: Principal,
    token_id: Option<String>,
    issued_at: Option<u64>,
    expires_at: Option<u64>,
}

/// Longest bearer token accepted; real ones (Entra's with groups included) stay well under.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How long a request waits for its introspection result to reach the fleet store.
const SHARE_WAIT: Duration = Duration::from_secs(1);

type Digest32 = [u8; 32];
type Work = BoxFuture<'static, Result<Entry, AuthError>>;
type Flight = Shared<Work>;
type WeakFlight = WeakShared<Work>;

struct Inner {
    verifier: Verifier,
    introspector: Introspector,
    jwks: JwksHandle,
    store: Store,
    tier: Cache<Digest32, Entry>,
    /// Opaque tokens refused lately; `None` when `auth.negative_cache_ttl` is zero.
    refused: Option<Cache<Digest32, Refused>>,
    negative_ttl_ms: u64,
    /// Bumped whenever the tier is emptied, so work that began before cannot refill it.
    generation: AtomicU64,
    /// Work in flight by token digest, with an id so a finished flight never removes
    /// its successor.
    flights: Mutex<HashMap<Digest32, (u64, WeakFlight)>>,
    next_flight: AtomicU64,
    leeway_ms: u64,
    introspection_cache: Duration,
    revocation_ttl: Duration,
    counters: Counters,
}

/// Validates bearer tokens for one node; cheap to clone.
#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Starts the authenticator (and the JWKS actor) for `config`. Must be called inside an
    /// actix system. `resource` is the public MCP URL: the default audience. Refusals by
    /// `auth.max_concurrent_introspections` are counted in `limits`.
    pub fn start(config: &Config, resource: &str, store: Store, limits: Limits) -> Self {
        Self::start_with_keys(config, resource, store, limits, Self::fetch_keys(config))
    }

    /// Starts fetching the issuers' keys of `config`, for an authenticator started later
    /// with [`Authenticator::start_with_keys`]: a node fetches them while its store opens.
    /// Must be called inside an actix system.
    pub(crate) fn fetch_keys(config: &Config) -> JwksHandle {
        install_tls_provider();
        JwksHandle::start(config)
    }

    /// Like [`Authenticator::start`], with the issuers' keys `jwks` already being fetched
    /// (from [`Authenticator::fetch_keys`] with the same `config`).
    pub(crate) fn start_with_keys(
        config: &Config,
        resource: &str,
        store: Store,
        limits: Limits,
        jwks: JwksHandle,
    ) -> Self {
        for issuer in &config.issuers {
            let refused = issuer.refused_algorithms();
            if !refused.is_empty() {
                tracing::warn!(issuer = %issuer.issuer, ?refused, "ignoring algorithms that are unknown, none or HMAC");
            }
        }
        let inner = Arc::new(Inner {
            verifier: Verifier::new(config, resource, jwks.clone()),
            // One client for every call to the issuers, built once.
            introspector: Introspector::new(config, resource, limits, jwks.client()),
            jwks,
            tier: Cache::new(config.memory_capacity.max(1)),
            refused: (!config.negative_cache_ttl.is_zero() && config.max_negative_cache > 0)
                .then(|| Cache::new(config.max_negative_cache)),
            negative_ttl_ms: config.negative_cache_ttl.as_millis() as u64,
            generation: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            leeway_ms: config.leeway.as_millis() as u64,
            introspection_cache: config.introspection_cache,
            revocation_ttl: config.revocation_ttl,
            counters: Counters::default(),
            store: store.clone(),
        });
        forget_on_revocation(&inner, &store);
        Self(inner)
    }

    /// The client this node calls its issuers with, for the token exchanger to share.
    pub(crate) fn issuer_client(&self) -> reqwest::Client {
        self.0.jwks.client()
    }

    /// Validates a bearer token (the text after `Bearer `).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            bump(&self.0.counters.refused);
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN || !is_b64token(token) {
            bump(&self.0.counters.refused);
            return Err(AuthError::Invalid("malformed token".into()));
        }
        let digest: Digest32 = Sha256::digest(token.as_bytes()).into();
        if let Some(entry) = self.0.tier.get(&digest) {
            if entry.until_ms > now_ms() && entry.keys_epoch == self.0.jwks.removals() {
                bump(&self.0.counters.memory_hits);
                return Ok(entry.principal);
            }
            self.0.tier.remove(&digest);
        }
        if let Some(reason) = self.0.recently_refused(&digest) {
            bump(&self.0.counters.negative_hits);
            bump(&self.0.counters.refused);
            return Err(AuthError::Invalid(reason.to_string()));
        }
        match self.flight(digest, token).await {
            Ok(entry) => Ok(entry.principal),
            Err(e) => {
                if !matches!(e, AuthError::Unavailable(_)) {
                    bump(&self.0.counters.refused);
                }
                Err(e)
            }
        }
    }

    /// Records a revocation through the fleet store; returns once this node and every
    /// member that answers have applied it (each then refuses what it covers), with the
    /// members that did not confirm.
    pub async fn revoke(&self, revocation: Revocation) -> Result<Vec<raft::NodeId>, raft::Error> {
        let unconfirmed = revocation
            .record(&self.0.store, self.0.revocation_ttl)
            .await?;
        // Applying it emptied this tier already; a token validated meanwhile goes too.
        self.0.forget_all();
        Ok(unconfirmed)
    }

    /// Forgets every validated token this node holds in memory, so the next check of each
    /// consults the replica's revocations again. For a node that may have missed some.
    pub fn forget_cached(&self) {
        self.0.forget_all();
    }

    /// Counters for benchmarks and metrics.
    pub fn stats(&self) -> AuthStats {
        let c = &self.0.counters;
        AuthStats {
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            replica_hits: c.replica_hits.load(Ordering::Relaxed),
            verified: c.verified.load(Ordering::Relaxed),
            introspected: self.0.introspector.sent(),
            negative_hits: c.negative_hits.load(Ordering::Relaxed),
            jwks_fetches: self.0.jwks.fetches(),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Refusals held in the negative tier.
    #[cfg(test)]
    pub(super) fn refusals_held(&self) -> usize {
        self.0.refused.as_ref().map_or(0, Cache::len)
    }

    /// The work for `token` in flight, or a new one: callers of one token share it.
    fn flight(&self, digest: Digest32, token: &str) -> Flight {
        let mut flights = lock(&self.0.flights);
        if let Some(flight) = flights.get(&digest).and_then(|(_, weak)| weak.upgrade()) {
            return flight;
        }
        let id = self.0.next_flight.fetch_add(1, Ordering::Relaxed);
        let inner = self.0.clone();
        let token = token.to_owned();
        let flight = async move {
            // Runs when the work ends or is abandoned by every caller.
            let _landed = Landed {
                inner: inner.clone(),
                digest,
                id,
            };
            let result = inner.resolve(digest, &token).await;
            if let Err(e) = &result {
                tracing::debug!(reason = %e, "bearer token refused");
            }
            result
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            flights.insert(digest, (id, weak));
        }
        flight
    }
}

/// Whether `token` has the RFC 6750 `b64token` syntax; anything else is refused before it
/// reaches a cache, an issuer or a log.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Range tests folded without a branch per byte, which the compiler turns into
    // vector compares: this runs over every token on every request.
    !body.is_empty()
        && body.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric()
                | (b == b'-')
                | (b == b'.')
                | (b == b'_')
                | (b == b'~')
                | (b == b'+')
                | (b == b'/'))
        })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a finished or abandoned flight from the table, unless a newer one took its place.
struct Landed {
    inner: Arc<Inner>,
    digest: Digest32,
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

/// Empties the memory tier whenever the log applies a revocation (or replaces the whole
/// state), on every node, whoever wrote it, before the apply completes: nothing can read
/// the revocation while a validated token it covers is still cached. Revocations are
/// rare: forgetting everything is simpler than finding the tokens concerned, and costs
/// one validation per token.
fn forget_on_revocation(inner: &Arc<Inner>, store: &Store) {
    let weak = Arc::downgrade(inner);
    store.on_change(move |change| {
        let Some(inner) = weak.upgrade() else { return };
        if matches!(
            change,
            Change::Record {
                table: Table::Revocations,
                ..
            } | Change::Reset
        ) {
            inner.forget_all();
        }
    });
}

impl Inner {
    fn forget_all(&self) {
        // Bump first: work that checked revocations before the bump will not keep its
        // result (see `remember`).
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.tier.clear();
    }

    /// Full work for a memory-tier miss.
    async fn resolve(&self, digest: Digest32, token: &str) -> Result<Entry, AuthError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let keys_epoch = self.jwks.removals();
        let now = now_ms();
        let (principal, until_ms) = if jwt::is_jwt(token) {
            // JWTs are not written to the fleet store: verifying one costs 0.1-0.3 ms of
            // CPU on any node (benches/auth.rs), while a store write is a Raft round trip
            // to a majority and a disk sync, and would grow the log and every replica by
            // one record per token.
            bump(&self.counters.verified);
            let verified = self.verifier.verify(token).await?;
            self.check_revoked(&verified.principal, &verified.facts)?;
            let exp_ms = verified.facts.expires_at.unwrap_or(0).saturating_mul(1000);
            (verified.principal, exp_ms.saturating_add(self.leeway_ms))
        } else if let Some((stored, deadline)) = self.replica(token) {
            bump(&self.counters.replica_hits);
            let facts = Facts {
                token_id: stored.token_id,
                issued_at: stored.issued_at,
                expires_at: stored.expires_at,
            };
            self.check_revoked(&stored.principal, &facts)?;
            (stored.principal, deadline)
        } else {
            let found = self
                .introspector
                .introspect(token)
                .await
                .and_then(|found| {
                    self.check_revoked(&found.principal, &found.facts)?;
                    Ok(found)
                })
                .inspect_err(|e| self.remember_refusal(digest, e))?;
            // Trusted until the token ends or the cache period does, whichever is first.
            let mut until = now.saturating_add(self.introspection_cache.as_millis() as u64);
            if let Some(exp) = found.facts.expires_at {
                until = until.min(exp.saturating_mul(1000));
            }
            if until > now {
                self.share(token, &found.principal, &found.facts, until)
                    .await;
            }
            (found.principal, until)
        };
        let entry = Entry {
            principal: Arc::new(principal),
            until_ms,
            keys_epoch,
        };
        self.remember(digest, &entry, generation);
        Ok(entry)
    }

    /// Why `digest`'s token was refused lately, if it was and the refusal still stands.
    fn recently_refused(&self, digest: &Digest32) -> Option<Arc<str>> {
        let refused = self.refused.as_ref()?;
        let found = refused.get(digest)?;
        if found.until_ms > now_ms() {
            return Some(found.reason);
        }
        refused.remove(digest);
        None
    }

    /// Keeps a refusal of an opaque token in the negative tier. Only answers are kept:
    /// an issuer that could not be asked (`Unavailable`) said nothing about the token.
    fn remember_refusal(&self, digest: Digest32, error: &AuthError) {
        let (Some(refused), AuthError::Invalid(reason)) = (&self.refused, error) else {
            return;
        };
        let until_ms = now_ms().saturating_add(self.negative_ttl_ms);
        refused.insert(
            digest,
            Refused {
                reason: reason.as_str().into(),
                until_ms,
            },
        );
    }

    /// An introspection result another node (or this one) stored, if this replica has it.
    fn replica(&self, token: &str) -> Option<(StoredSession, u64)> {
        match self
            .store
            .get::<StoredSession>(Table::AuthSessions, token.as_bytes())
        {
            Ok(Some(found)) => {
                let deadline = found.deadline_ms?;
                let exp_ms = found.value.expires_at.map(|e| e.saturating_mul(1000));
                (deadline > now_ms() && exp_ms.is_none_or(|e| e > now_ms()))
                    .then_some((found.value, deadline))
            }
            Ok(None) => None,
            Err(e) => {
                // Introspecting again is safe; only slower.
                tracing::warn!(error = %e, "cannot read a stored auth session; introspecting");
                None
            }
        }
    }

    /// Writes an introspection result to the fleet store so other nodes need not ask the
    /// issuer. A failed write costs other nodes one introspection, not this request; a
    /// slow one (no quorum) is waited for only [`SHARE_WAIT`] and goes on without us.
    async fn share(&self, token: &str, principal: &Principal, facts: &Facts, until_ms: u64) {
        let stored = StoredSession {
            principal: principal.clone(),
            token_id: facts.token_id.clone(),
            issued_at: facts.issued_at,
            expires_at: facts.expires_at,
        };
        let put = self.store.put(
            Table::AuthSessions,
            token.as_bytes(),
            &stored,
            Some(until_ms),
        );
        match tokio::time::timeout(SHARE_WAIT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot share an introspection result with the fleet")
            }
            Err(_) => tracing::debug!("sharing an introspection result is slow; not waiting"),
        }
    }

    fn check_revoked(&self, principal: &Principal, facts: &Facts) -> Result<(), AuthError> {
        let issuer = principal.issuer.as_deref().unwrap_or("");
        revocation::check(&self.store, issuer, &principal.subject, facts)
    }

    /// Keeps `entry` in the memory tier unless a revocation arrived since `generation`.
    fn remember(&self, digest: Digest32, entry: &Entry, generation: u64) {
        if entry.until_ms <= now_ms() || self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        self.tier.insert(digest, entry.clone());
        // A revocation applied between the check above and the insert: take it back.
        if self.generation.load(Ordering::SeqCst) != generation {
            self.tier.remove(&digest);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Tests of the tiers, and helpers the other auth tests share.

    use futures_util::future::join_all;

    use super::*;
    use crate::auth::test_issuer::{TestIssuer, TestKey, CLIENT_ID, CLIENT_SECRET};
    use crate::auth::{Introspection, IssuerConfig};
    use crate::crypto::{Key, Ring};

    pub(crate) const RESOURCE: &str = "https://mcp.example.com/mcp";

    #[test]
    fn b64token_takes_exactly_the_rfc_6750_bytes() {
        for b in 0..=255u8 {
            let allowed =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            let token = [b'a', b, b'z'];
            let text = String::from_utf8_lossy(&token);
            // A byte that is not UTF-8 on its own becomes U+FFFD, which is refused too.
            assert_eq!(is_b64token(&text), allowed, "byte {b:#04x}");
        }
        assert!(is_b64token("abc=="));
        assert!(!is_b64token("=="));
        assert!(!is_b64token("a=b"));
        assert!(!is_b64token(""));
    }

    /// One issuer with keys and introspection; miss-driven refetches once an hour.
    pub(crate) fn config(issuer: &TestIssuer) -> Config {
        let mut trusted = IssuerConfig::new(issuer.issuer());
        trusted.jwks_uri = Some(issuer.jwks_uri());
        trusted.introspection = Some(Introspection::new(
            issuer.introspection_endpoint(),
            CLIENT_ID,
            CLIENT_SECRET,
        ));
        Config {
            issuers: vec![trusted],
            jwks_refetch_interval: Duration::from_secs(3600),
            ..Config::default()
        }
    }

    /// A one-node fleet store under `dir`.
    pub(crate) async fn store(dir: &std::path::Path) -> (Store, raft::Runtime) {
        // The store's own HTTP client needs the provider too.
        install_tls_provider();
        Store::open_single(dir, Ring::single(Key::generate()))
            .await
            .unwrap()
    }

    /// The reason of a refusal; panics on anything else.
    pub(crate) fn reason(result: Result<Arc<Principal>, AuthError>) -> String {
        match result {
            Err(AuthError::Invalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[actix_web::test]
    async fn concurrent_authentications_share_one_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        let auth = Authenticator::start(&config(&issuer), RESOURCE, store, Limits::default());
        let token = rsa1.sign(&issuer.claims(RESOURCE, "alice"));
        let all = join_all((0..20).map(|_| auth.authenticate(&token))).await;
        assert!(all.iter().all(|r| r.as_ref().unwrap().subject == "alice"));
        assert_eq!(auth.stats().verified, 1);
        auth.authenticate(&token).await.unwrap();
        assert_eq!(auth.stats().memory_hits, 1);
        assert_eq!(auth.stats().verified, 1);
        assert!(matches!(
            auth.authenticate(" ").await,
            Err(AuthError::Missing)
        ));
        for garbage in ["a b", "tok\u{0}en", "é", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(reason(auth.authenticate(garbage).await), "malformed token");
        }
        // Another token's signature over this token's content. Refusals are never
        // cached: each attempt is verified again.
        let other = rsa1.sign(&issuer.claims(RESOURCE, "mallory"));
        let (content, _) = token.rsplit_once('.').unwrap();
        let bad = format!("{content}.{}", other.rsplit_once('.').unwrap().1);
        for _ in 0..5 {
            assert_eq!(reason(auth.authenticate(&bad).await), "bad signature");
        }
        let stats = auth.stats();
        assert_eq!(
            (stats.verified, stats.refused, stats.jwks_fetches),
            (6, 10, 1)
        );
    }

    #[actix_web::test]
    async fn withdrawn_keys_end_cached_results() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let (rsa1, rsa2) = (TestKey::rsa1(), TestKey::rsa2());
        let issuer = TestIssuer::start(&[&rsa1]);
        let auth = Authenticator::start(&config(&issuer), RESOURCE, store, Limits::default());
        let old = rsa1.sign(&issuer.claims(RESOURCE, "alice"));
        auth.authenticate(&old).await.unwrap();
        auth.authenticate(&old).await.unwrap();
        assert_eq!(auth.stats().memory_hits, 1);
        // The issuer rotates (say rsa1 leaked); a token naming rsa2 brings the new set.
        issuer.publish(&[&rsa2]);
        let new = rsa2.sign(&issuer.claims(RESOURCE, "bob"));
        auth.authenticate(&new).await.unwrap();
        assert_eq!(auth.stats().jwks_fetches, 2);
        // The cached result for the rsa1 token is not trusted any more.
        assert_eq!(reason(auth.authenticate(&old).await), "unknown key id");
        assert_eq!(auth.stats().memory_hits, 1);
    }
}
