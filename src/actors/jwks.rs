//! The JWKS actor and its handle: one key set per trusted issuer, fetched from its
//! `jwks_uri` (configured or discovered from its metadata), refreshed on a schedule and
//! on demand when a token names a key we do not hold.
//!
//! Key sets live in memory shared by the handle and the actor: a lookup of a known key
//! takes a read lock and touches no mailbox. Only a miss reaches the actor, which starts
//! at most one fetch per issuer at a time (everyone waiting shares it) and at most one
//! miss-driven fetch per `jwks_refetch_interval`, so made-up key ids cannot make us flood
//! an issuer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture,
};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::auth::jwt::{Key, KeyError, KeySet, Lookup};
use crate::auth::Config;

/// Largest key set or metadata document we read.
const DOCUMENT_LIMIT: usize = 1024 * 1024;

/// Installs the process-wide rustls crypto provider (ring) that HTTPS clients need; safe
/// to call any number of times.
pub fn install_tls_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client for calls to issuers, trusting `auth.ca_file` besides the system's
/// roots, with `auth.fetch_timeout`. Redirects are not followed: a redirect could
/// downgrade to plain HTTP or carry the introspected token somewhere unexpected.
pub(crate) fn http_client(config: &Config) -> reqwest::Client {
    build(issuer_client_builder(config))
}

/// The client for issuers' metadata and key sets: like [`http_client`], with a connection
/// of its own for each fetch. On a reused connection, an issuer that writes a response's
/// head and body separately (Python's `http.server`, for one) with Nagle's algorithm on
/// holds the body until this node acknowledges the head, and Linux delays that
/// acknowledgement by 40 ms once a connection has had a request and answer: a node's
/// first key fetch after discovering `jwks_uri` took 43 ms. Fetches are rare (start,
/// refresh, an unknown key id), so a new connection each costs little.
fn document_client(config: &Config) -> reqwest::Client {
    build(issuer_client_builder(config).pool_max_idle_per_host(0))
}

fn issuer_client_builder(config: &Config) -> reqwest::ClientBuilder {
    install_tls_provider();
    let timeout = config.fetch_timeout;
    config
        .ca_certs
        .trust(reqwest::Client::builder())
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-fleet/", env!("CARGO_PKG_VERSION")))
}

fn build(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the HTTP client for issuers; using defaults");
        reqwest::Client::new()
    })
}

/// What went wrong calling an issuer, with every cause: reqwest's own message stops at
/// "error sending request", which hides a refused certificate. A certificate the node
/// does not trust gets a hint, since a private CA is the usual reason on-prem.
pub(crate) fn call_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut untrusted = false;
    let mut cause = error.source();
    while let Some(e) = cause {
        let message = e.to_string();
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        untrusted |= matches!(tls_error(e), Some(rustls::Error::InvalidCertificate(_)));
        cause = e.source();
    }
    if untrusted {
        text.push_str(
            " (the issuer's TLS certificate is not trusted; if it comes from a private CA, \
             name that CA's certificate in auth.ca_file)",
        );
    }
    text
}

/// The rustls error in `error`, which reaches us wrapped in io::Errors (two, from
/// hyper-rustls): an io::Error shows its inner error's message but not the error itself
/// through `source`.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    tls_error(inner)
}

/// Refuses plain HTTP except to this host (loopback, or the unspecified address a dev
/// node may be bound to): keys and tokens must not cross a network unprotected.
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified()),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(format!("refusing {url}: only https (or http to loopback)")),
    }
}

/// Reads a successful response's body, at most `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{} answered {status}", response.url()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("{} sent more than {limit} bytes", response.url()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

type Fetch = Shared<BoxFuture<'static, ()>>;

/// What a miss does next.
enum Next {
    Wait(Fetch),
    Ask,
    Limited,
}

/// Fetch bookkeeping of one issuer; its lock also orders key-set updates against misses.
#[derive(Default)]
struct FetchState {
    inflight: Option<Fetch>,
    last_refetch: Option<Instant>,
    discovered: Option<String>,
    failing: bool,
    last_error: Option<String>,
}

/// One issuer's keys and fetch state.
struct Slot {
    issuer: String,
    jwks_uri: Option<String>,
    algorithms: Vec<Algorithm>,
    /// Fetched at start and on schedule. An issuer configured for introspection without a
    /// `jwks_uri` may publish no keys at all: its keys are fetched once a JWT names it.
    eager: bool,
    /// `None` until a fetch succeeds.
    keys: RwLock<Option<Arc<KeySet>>>,
    fetch: Mutex<FetchState>,
}

/// Everything the handle and the actor share.
struct Sets {
    slots: Vec<Slot>,
    /// For the node's other calls to its issuers (introspection, token exchange).
    client: reqwest::Client,
    /// For metadata and key sets (see [`document_client`]).
    documents: reqwest::Client,
    refresh: Duration,
    refetch_interval: Duration,
    fetches: AtomicU64,
    removals: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    fn loaded(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Fetches and schedules; the key sets themselves are read through [`JwksHandle`].
struct JwksActor {
    shared: Arc<Sets>,
}

/// Asks the actor for a fetch of one issuer's keys after a miss; answers the fetch to wait
/// on, or `None` while miss-driven fetches are rate-limited.
#[derive(Message)]
#[rtype(result = "Option<Fetch>")]
struct Refetch {
    slot: usize,
}

impl JwksActor {
    /// Starts a fetch of `slot` unless one is in flight; answers the one to wait on.
    fn fetch(&self, slot: usize, state: &mut FetchState, ctx: &mut Context<Self>) -> Fetch {
        if let Some(inflight) = &state.inflight {
            return inflight.clone();
        }
        let fetch = run_fetch(self.shared.clone(), slot).boxed().shared();
        state.inflight = Some(fetch.clone());
        ctx.spawn(fetch.clone().into_actor(self).map(|(), _, _| ()));
        fetch
    }
}

impl Actor for JwksActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let refresh_all = |actor: &mut Self, ctx: &mut Context<Self>| {
            if Arc::strong_count(&actor.shared) == 1 {
                // Every handle is gone (and no fetch runs): nobody needs these keys.
                ctx.stop();
                return;
            }
            for (index, slot) in actor.shared.clone().slots.iter().enumerate() {
                if slot.eager || slot.loaded().is_some() {
                    let mut state = lock(&slot.fetch);
                    // The actor drives the fetch; nobody here waits for it.
                    drop(actor.fetch(index, &mut state, ctx));
                }
            }
        };
        refresh_all(self, ctx);
        ctx.run_interval(self.shared.refresh, refresh_all);
    }
}

impl Handler<Refetch> for JwksActor {
    type Result = Option<Fetch>;

    fn handle(&mut self, msg: Refetch, ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        let mut state = lock(&shared.slots[msg.slot].fetch);
        if let Some(inflight) = &state.inflight {
            return Some(inflight.clone());
        }
        if state
            .last_refetch
            .is_some_and(|t| t.elapsed() < shared.refetch_interval)
        {
            return None;
        }
        state.last_refetch = Some(Instant::now());
        Some(self.fetch(msg.slot, &mut state, ctx))
    }
}

/// Fetches one issuer's keys and installs them, or records why not.
async fn run_fetch(shared: Arc<Sets>, index: usize) {
    shared.fetches.fetch_add(1, Ordering::Relaxed);
    let slot = &shared.slots[index];
    let known = lock(&slot.fetch).discovered.clone();
    let result = fetch_keys(&shared.documents, slot, known).await;
    let mut state = lock(&slot.fetch);
    state.inflight = None;
    match result {
        Ok((set, uri)) => {
            let mut keys = slot.keys.write().unwrap_or_else(|e| e.into_inner());
            let dropped = keys.as_ref().is_some_and(|old| old.withdrawn_in(&set));
            if dropped {
                // Results validated with a key the issuer withdrew must not outlive it.
                shared.removals.fetch_add(1, Ordering::Relaxed);
            }
            if state.failing {
                tracing::info!(issuer = %slot.issuer, keys = set.len(), "the issuer's key set is reachable again");
            } else {
                tracing::debug!(issuer = %slot.issuer, keys = set.len(), "fetched the issuer's key set");
            }
            *keys = Some(Arc::new(set));
            state.failing = false;
            state.last_error = None;
            if slot.jwks_uri.is_none() {
                state.discovered = Some(uri);
            }
        }
        Err(error) => {
            let cached = slot.loaded().map_or(0, |s| s.len());
            if state.failing {
                tracing::debug!(issuer = %slot.issuer, %error, "the issuer's key set is still unreachable");
            } else {
                tracing::warn!(
                    issuer = %slot.issuer,
                    %error,
                    cached_keys = cached,
                    "cannot fetch the issuer's key set; cached keys keep working, unknown keys are refused"
                );
            }
            state.failing = true;
            state.last_error = Some(error);
            // Discover again next time, in case the key set moved.
            state.discovered = None;
        }
    }
}

/// The typed handle of the JWKS actor: key lookups for JWT verification.
#[derive(Clone)]
pub struct JwksHandle {
    addr: actix::Addr<JwksActor>,
    shared: Arc<Sets>,
}

impl JwksHandle {
    /// Starts the actor for the issuers of `config` and begins fetching their keys. Must be
    /// called inside an actix system.
    pub fn start(config: &Config) -> Self {
        let slots = config
            .issuers
            .iter()
            .map(|issuer| Slot {
                issuer: issuer.issuer.clone(),
                jwks_uri: issuer.jwks_uri.clone(),
                algorithms: issuer.signing_algorithms(),
                eager: issuer.jwks_uri.is_some() || issuer.introspection.is_none(),
                keys: RwLock::new(None),
                fetch: Mutex::new(FetchState::default()),
            })
            .collect();
        let shared = Arc::new(Sets {
            slots,
            client: http_client(config),
            documents: document_client(config),
            refresh: config.jwks_refresh.max(Duration::from_secs(1)),
            refetch_interval: config.jwks_refetch_interval,
            fetches: AtomicU64::new(0),
            removals: AtomicU64::new(0),
        });
        let addr = JwksActor {
            shared: shared.clone(),
        }
        .start();
        Self { addr, shared }
    }

    /// The key of `issuer` that checks a token signed with `alg` naming `kid`. A cached key
    /// is answered at once; an unknown one waits for a fetch, if one is allowed.
    pub async fn key(
        &self,
        issuer: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<Key>, KeyError> {
        let Some(index) = self.shared.slots.iter().position(|s| s.issuer == issuer) else {
            return Err(KeyError::NoKey("untrusted issuer"));
        };
        let slot = &self.shared.slots[index];
        if let Some(answer) = Self::cached(slot, kid, alg) {
            return answer;
        }
        let next = {
            let state = lock(&slot.fetch);
            // A fetch may have finished since the lookup above; its keys are in place
            // before its state is, so look again under the lock.
            if let Some(answer) = Self::cached(slot, kid, alg) {
                return answer;
            }
            if let Some(inflight) = &state.inflight {
                Next::Wait(inflight.clone())
            } else if state
                .last_refetch
                .is_some_and(|t| t.elapsed() < self.shared.refetch_interval)
            {
                Next::Limited
            } else {
                Next::Ask
            }
        };
        let fetch = match next {
            Next::Wait(fetch) => Some(fetch),
            Next::Limited => None,
            // The actor checks again: it alone starts fetches.
            Next::Ask => self
                .addr
                .send(Refetch { slot: index })
                .await
                .map_err(|e| KeyError::Unavailable(format!("the JWKS actor stopped: {e}")))?,
        };
        if let Some(fetch) = fetch {
            fetch.await;
        }
        Self::cached(slot, kid, alg).unwrap_or_else(|| match slot.loaded() {
            Some(_) => Err(KeyError::NoKey("unknown key id")),
            None => Err(KeyError::Unavailable(format!(
                "the keys of {} could not be fetched: {}",
                slot.issuer,
                lock(&slot.fetch)
                    .last_error
                    .as_deref()
                    .unwrap_or("no fetch has finished yet")
            ))),
        })
    }

    fn cached(
        slot: &Slot,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<Result<Arc<Key>, KeyError>> {
        match slot.loaded()?.find(kid, alg) {
            Lookup::Found(key) => Some(Ok(key)),
            Lookup::Unknown => None,
            Lookup::Refused(why) => Some(Err(KeyError::NoKey(why))),
        }
    }

    /// The client this handle fetches with, for the node's other calls to its issuers
    /// (introspection, token exchange): building one loads the system's certificate store,
    /// which a node's start should pay once, not once per use.
    pub(crate) fn client(&self) -> reqwest::Client {
        self.shared.client.clone()
    }

    /// Key-set fetches started so far, for every issuer.
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::Relaxed)
    }

    /// Counts refreshes that withdrew a key; results validated before a change of this
    /// number may rest on a withdrawn key.
    pub fn removals(&self) -> u64 {
        self.shared.removals.load(Ordering::Relaxed)
    }
}

/// Where an issuer's metadata may be, in the order we try: OpenID Connect discovery, then
/// RFC 8414 (path-inserted for an issuer with a path).
pub(crate) fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let after_scheme = trimmed.find("://").map_or(0, |i| i + 3);
    let (origin, path) = match trimmed[after_scheme..].find('/') {
        Some(i) => trimmed.split_at(after_scheme + i),
        None => (trimmed, ""),
    };
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];
    if path.is_empty() {
        urls.push(format!("{origin}/.well-known/oauth-authorization-server"));
    } else {
        urls.push(format!(
            "{origin}/.well-known/oauth-authorization-server{path}"
        ));
        urls.push(format!("{origin}/.well-known/openid-configuration{path}"));
        urls.push(format!("{trimmed}/.well-known/oauth-authorization-server"));
    }
    urls
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let url = check_url(url)?;
    let response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {}", call_error(&e)))?;
    let body = read_limited(response, DOCUMENT_LIMIT).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// The `jwks_uri` from the issuer's metadata; the metadata must name the same issuer.
async fn discover(client: &reqwest::Client, issuer: &str) -> Result<String, String> {
    metadata_field(client, issuer, "jwks_uri").await
}

/// The string `field` of the issuer's metadata (`jwks_uri`, `token_endpoint`); the
/// metadata must name the same issuer.
pub(crate) async fn metadata_field(
    client: &reqwest::Client,
    issuer: &str,
    field: &str,
) -> Result<String, String> {
    let mut errors = Vec::new();
    for url in metadata_urls(issuer) {
        match get_json(client, &url).await {
            Ok(metadata) if metadata.get("issuer").and_then(Value::as_str) != Some(issuer) => {
                errors.push(format!("{url}: names another issuer"));
            }
            Ok(metadata) => match metadata.get(field).and_then(Value::as_str) {
                Some(uri) => return Ok(uri.to_owned()),
                None => errors.push(format!("{url}: no {field}")),
            },
            Err(e) => errors.push(e),
        }
    }
    Err(format!("no usable metadata ({})", errors.join("; ")))
}

async fn fetch_keys(
    client: &reqwest::Client,
    slot: &Slot,
    discovered: Option<String>,
) -> Result<(KeySet, String), String> {
    let uri = match slot.jwks_uri.clone().or(discovered) {
        Some(uri) => uri,
        None => discover(client, &slot.issuer).await?,
    };
    let document = get_json(client, &uri).await?;
    let set = KeySet::parse(&document, &slot.algorithms);
    if set.len() == 0 {
        // Keep what we have: an empty or unusable set verifies nothing.
        return Err(format!("{uri}: no usable signing keys"));
    }
    Ok((set, uri))
}

#[cfg(test)]
mod tests {
    use futures_util::future::join_all;

    use super::*;
    use crate::auth::test_issuer::{Mode, TestIssuer, TestKey};
    use crate::auth::IssuerConfig;
    use crate::raft::tests_support::eventually;

    fn config(issuer: &TestIssuer, discover: bool) -> Config {
        let mut trusted = IssuerConfig::new(issuer.issuer());
        if !discover {
            trusted.jwks_uri = Some(issuer.jwks_uri());
        }
        Config {
            issuers: vec![trusted],
            jwks_refresh: Duration::from_secs(3600),
            jwks_refetch_interval: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(2),
            ..Config::default()
        }
    }

    async fn key(handle: &JwksHandle, issuer: &TestIssuer, kid: &str) -> Result<(), KeyError> {
        handle
            .key(&issuer.issuer(), Some(kid), Algorithm::RS256)
            .await
            .map(drop)
    }

    #[test]
    fn metadata_locations() {
        assert_eq!(
            metadata_urls("https://id.example.com/"),
            vec![
                "https://id.example.com/.well-known/openid-configuration",
                "https://id.example.com/.well-known/oauth-authorization-server",
            ]
        );
        assert_eq!(
            metadata_urls("https://id.example.com/tenant/v2"),
            vec![
                "https://id.example.com/tenant/v2/.well-known/openid-configuration",
                "https://id.example.com/.well-known/oauth-authorization-server/tenant/v2",
                "https://id.example.com/.well-known/openid-configuration/tenant/v2",
                "https://id.example.com/tenant/v2/.well-known/oauth-authorization-server",
            ]
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("https://id.example.com/jwks").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://[::1]:9/jwks").is_ok());
        assert!(check_url("http://0.0.0.0:9/jwks").is_ok());
        assert!(check_url("http://10.0.0.1/jwks").is_err());
        assert!(check_url("http://id.example.com/jwks").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
    }

    #[actix_web::test]
    async fn rotation_is_picked_up_by_one_refetch() {
        let (rsa1, rsa2) = (TestKey::rsa1(), TestKey::rsa2());
        let issuer = TestIssuer::start(&[&rsa1]);
        // Discovered through OpenID metadata: no jwks_uri configured.
        let handle = JwksHandle::start(&config(&issuer, true));
        key(&handle, &issuer, "rsa1").await.unwrap();
        assert_eq!(handle.fetches(), 1);
        assert!(issuer.metadata_requests() >= 1);

        issuer.publish(&[&rsa2]);
        key(&handle, &issuer, "rsa2").await.unwrap();
        assert_eq!(handle.fetches(), 2);
        assert_eq!(handle.removals(), 1, "rsa1 was withdrawn");
        // rsa1 is gone, and the next refetch is an hour away.
        assert_eq!(
            key(&handle, &issuer, "rsa1").await,
            Err(KeyError::NoKey("unknown key id"))
        );
        assert_eq!(handle.fetches(), 2);
        assert_eq!(issuer.jwks_requests(), 2);
    }

    #[actix_web::test]
    async fn scheduled_refresh_picks_up_new_keys() {
        let (rsa1, rsa2) = (TestKey::rsa1(), TestKey::rsa2());
        let issuer = TestIssuer::start(&[&rsa1]);
        let mut config = config(&issuer, false);
        config.jwks_refresh = Duration::from_secs(1);
        let handle = JwksHandle::start(&config);
        // Spend the one miss-driven refetch the next hour allows.
        assert!(key(&handle, &issuer, "bogus").await.is_err());
        let spent = handle.fetches();
        issuer.publish(&[&rsa1, &rsa2]);
        assert!(eventually(|| handle.fetches() > spent).await);
        assert!(eventually(|| issuer.jwks_requests() as u64 >= handle.fetches()).await);
        let mut ok = false;
        for _ in 0..100 {
            if key(&handle, &issuer, "rsa2").await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "the scheduled refresh did not bring rsa2");
    }

    #[actix_web::test]
    async fn outage_keeps_cached_keys_and_fails_closed_on_new_ones() {
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        let handle = JwksHandle::start(&config(&issuer, false));
        key(&handle, &issuer, "rsa1").await.unwrap();
        for mode in [Mode::Failing, Mode::Silent] {
            issuer.set_mode(mode);
            key(&handle, &issuer, "rsa1").await.unwrap();
            for _ in 0..20 {
                assert_eq!(
                    key(&handle, &issuer, "rsa2").await,
                    Err(KeyError::NoKey("unknown key id"))
                );
            }
        }
        // One refetch for the first unknown kid; the rest are rate-limited.
        assert_eq!(handle.fetches(), 2);
        assert_eq!(issuer.jwks_requests(), 2);
    }

    #[actix_web::test]
    async fn each_metadata_and_key_set_fetch_has_a_connection_of_its_own() {
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        issuer.keep_alive();
        let handle = JwksHandle::start(&config(&issuer, true));
        key(&handle, &issuer, "rsa1").await.expect("the key");
        assert_eq!(handle.fetches(), 1);
        assert_eq!((issuer.metadata_requests(), issuer.jwks_requests()), (1, 1));
        // Discovery, then the key set: two connections, though the issuer keeps each open.
        assert_eq!(issuer.connections(), 2);
    }

    #[actix_web::test]
    async fn never_fetched_keys_make_authentication_unavailable() {
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        issuer.set_mode(Mode::Failing);
        let handle = JwksHandle::start(&config(&issuer, false));
        match key(&handle, &issuer, "rsa1").await {
            Err(KeyError::Unavailable(why)) => {
                assert!(why.contains(&issuer.issuer()), "{why}");
                assert!(why.contains("500"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[actix_web::test]
    async fn concurrent_misses_share_a_fetch_and_a_flood_costs_one_more() {
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        let handle = JwksHandle::start(&config(&issuer, false));
        let first = join_all((0..50).map(|_| key(&handle, &issuer, "rsa1"))).await;
        assert!(first.iter().all(Result::is_ok));
        assert_eq!(handle.fetches(), 1, "concurrent lookups share one fetch");

        let kids: Vec<String> = (0..200).map(|i| format!("made-up-{i}")).collect();
        let flood = join_all(kids.iter().map(|kid| key(&handle, &issuer, kid))).await;
        assert!(flood
            .iter()
            .all(|r| *r == Err(KeyError::NoKey("unknown key id"))));
        assert_eq!(handle.fetches(), 2, "one refetch for 200 unknown kids");
        assert_eq!(issuer.jwks_requests(), 2);
    }

    #[actix_web::test]
    async fn discovery_finds_rfc8414_metadata_of_an_issuer_with_a_path() {
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start_at("/tenant-a", &[&rsa1]);
        let handle = JwksHandle::start(&config(&issuer, true));
        key(&handle, &issuer, "rsa1").await.unwrap();
        assert!(
            issuer.metadata_requests() >= 2,
            "OpenID first, then RFC 8414"
        );
    }
}
