//! Legacy MCP sessions in the fleet store, fronted by a memory tier that the replicated
//! log keeps honest on every node.
//!
//! # How large a stored session can be
//! A session is one record, one Raft entry, written at `initialize` and again by
//! `logging/setLevel` and `resources/subscribe`. Its stored form (before sealing) is at
//! most [`Config::max_record_bytes`]:
//! - the principal: its strings come from the bearer token, which travels in the
//!   `Authorization` header; actix-http refuses a request head (request line and every
//!   header together) of 128 KiB (131,072 bytes) or more, so a JWT's decoded claims, and
//!   the principal made from them, stay under 96 KiB (base64url carries 3 bytes in 4);
//! - `clientInfo` and `capabilities` as JSON text: at most `sessions.max_client_bytes`
//!   together (16 KiB by default);
//! - the subscriptions: at most `sessions.max_subscriptions` URIs (32) of at most
//!   `mcp.max_uri_bytes` (2 KiB) each;
//! - the digest of the tools it last listed (64 hex characters), the version, log level,
//!   deadline and postcard's length prefixes: under 160 bytes.
//!
//! With the defaults: 98,304 + 16,384 + 32 × (2,048 + 2) + 160 = 180,448 bytes, plus what
//! sealing and the Raft entry add around it (a few dozen bytes).

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Principal;
use crate::limits::Limits;
use crate::mcp::Version;
use crate::raft::{self, now_ms, Change, Store, Table};
use crate::tools::LogLevel;

/// The cap on the bytes of the memory tier, as its in-use gauge names it.
pub(crate) const MEMORY_BYTES: &str = "sessions.memory_bytes";
/// The cap on `clientInfo` + `capabilities` of a session, as refusals name it.
pub(crate) const MAX_CLIENT_BYTES: &str = "sessions.max_client_bytes";
/// The cap on resource subscriptions per session, as refusals name it.
pub(crate) const MAX_SUBSCRIPTIONS: &str = "sessions.max_subscriptions";
/// The configuration key, and metric label, of the cap on sessions per principal.
pub const MAX_PER_PRINCIPAL: &str = "sessions.max_per_principal";

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a session lives after its last use (renewed at most every half of this).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Bytes of sessions the memory tier of a node holds before it evicts the least
    /// recently used (they are then read from the replica). Default 64 MiB: about 30,000
    /// sessions of ordinary clients (2 KiB each in memory), or 48 whose `capabilities`
    /// fill `max_client_bytes` with the costliest JSON shape (small objects: 1.4 MB parsed
    /// from 16 KiB of text), and a small share of a node's memory either way. Weighed by
    /// bytes, not counted: a count let 20 large sessions take 1.4 GB.
    pub memory_bytes: u64,
    /// Largest `clientInfo` and `capabilities` of `initialize` together, as stored (their
    /// JSON text), in bytes; more is refused with `-32602` and nothing is stored. Default
    /// 16 KiB: what real clients send is under 1 KiB, and every session is a Raft entry
    /// replicated to every node (see the module documentation for the whole record).
    pub max_client_bytes: usize,
    /// Resource subscriptions (`resources/subscribe`) one session may hold; more are
    /// refused (429). Default 32: each one grows the stored session by up to
    /// `mcp.max_uri_bytes`, so 32 keep the record under 64 KiB of URIs, and a client
    /// watches a handful of resources at a time.
    pub max_subscriptions: usize,
    /// How many live sessions one principal may hold, fleet-wide, counted when a session is
    /// created; `initialize` beyond it is refused with 429 until one ends (by DELETE or
    /// expiry), and no session is evicted to make room.
    ///
    /// Default 1,000: a person opens a handful of sessions a day and clients that never
    /// send DELETE leave theirs to expire after `ttl`, so 1,000 live at once is a new
    /// session every 86 s around the clock for a day, far above real use; and it bounds
    /// what one token can make the fleet store (1,000 sessions of at most 16 KiB of
    /// `clientInfo` and `capabilities` each, about 17 MiB). Under `--auth none` every
    /// caller is the one anonymous principal, so this caps the whole local server: the
    /// conformance suites and SDK tests stay far below it; raise it for load tests.
    pub max_per_principal: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            memory_bytes: 64 * 1024 * 1024,
            max_client_bytes: 16 * 1024,
            max_subscriptions: 32,
            max_per_principal: 1000,
        }
    }
}

impl Config {
    /// The most bytes a stored session takes before sealing, for a principal that encodes
    /// in at most `max_principal_bytes` and URIs of at most `max_uri_bytes`
    /// (see the module documentation: 180,352 bytes with the defaults and the 96 KiB a
    /// bearer token in a request head can carry).
    pub fn max_record_bytes(&self, max_uri_bytes: usize, max_principal_bytes: usize) -> usize {
        // Each string carries a varint length: 3 bytes cover 2 MiB, 5 cover any u32.
        const FIXED: usize = 160;
        max_principal_bytes
            + self.max_client_bytes
            + self.max_subscriptions * (max_uri_bytes + 2)
            + FIXED
    }
}

/// What [`SessionHandle::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The session is stored; a majority of the fleet has it.
    Stored,
    /// Nothing was stored: the principal already holds `cap` sessions.
    Refused {
        /// The cap, `sessions.max_per_principal`.
        cap: usize,
    },
}

/// A legacy MCP session, as every request on it sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// The negotiated protocol version.
    pub version: Version,
    /// Who created it; only they may use it.
    pub principal: Arc<Principal>,
    /// `clientInfo` from `initialize`, as JSON text (stored and never read, so never
    /// parsed).
    pub client_info: String,
    /// `capabilities` from `initialize`, shared by every call on the session: a call's
    /// context points at this value instead of copying it.
    pub client_capabilities: Arc<Value>,
    /// Minimum level of log messages the client wants (`logging/setLevel`).
    pub log_level: Option<LogLevel>,
    /// Resource URIs the client subscribed to.
    pub subscriptions: Vec<String>,
    /// The digest of the tools the client last listed (by whichever node answered its
    /// `tools/list`); a node whose own tools differ sends `notifications/tools/list_changed`.
    pub listed_tools: Option<String>,
    /// When it ends, in milliseconds since the epoch.
    pub expires_at_ms: u64,
}

impl Session {
    /// A new session with a fresh random id. `client_info` is JSON text.
    pub fn new(
        version: Version,
        principal: Principal,
        client_info: String,
        client_capabilities: Value,
        ttl: Duration,
    ) -> Self {
        Self {
            id: crate::crypto::random_hex(16),
            version,
            principal: Arc::new(principal),
            client_info,
            client_capabilities: Arc::new(client_capabilities),
            log_level: None,
            subscriptions: Vec::new(),
            listed_tools: None,
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as u64),
        }
    }

    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
}

/// The stored form: postcard cannot carry `serde_json::Value`, so JSON travels as text.
///
/// postcard writes a struct as its fields one after the other, so this is the first
/// stored form (`Base`) with `listed_tools` after it. Both directions of a rolling upgrade
/// read each other's records: a build that knows only `Base` stops before the extra field
/// (postcard ignores what follows), and this one reads a record that ends after `Base`
/// as one with no tools listed.
#[derive(Serialize)]
struct Stored {
    base: Base,
    listed_tools: Option<String>,
}

/// The fields every stored session has had since the first stored form.
#[derive(Serialize, Deserialize)]
struct Base {
    version: String,
    principal: Principal,
    client_info: String,
    client_capabilities: String,
    log_level: Option<LogLevel>,
    subscriptions: Vec<String>,
    expires_at_ms: u64,
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Stored;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a stored session")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Stored, A::Error> {
                let base = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                // A record of the first form ends here: postcard then fails for want of
                // bytes, which reads as "nothing listed yet".
                let listed_tools = seq.next_element().ok().flatten().flatten();
                Ok(Stored { base, listed_tools })
            }
        }
        deserializer.deserialize_tuple(2, Fields)
    }
}

impl From<&Session> for Stored {
    fn from(s: &Session) -> Self {
        Self {
            base: Base {
                version: s.version.as_str().to_owned(),
                principal: (*s.principal).clone(),
                client_info: s.client_info.clone(),
                client_capabilities: s.client_capabilities.to_string(),
                log_level: s.log_level,
                subscriptions: s.subscriptions.clone(),
                expires_at_ms: s.expires_at_ms,
            },
            listed_tools: s.listed_tools.clone(),
        }
    }
}

impl Stored {
    fn into_session(self, id: String) -> Option<Session> {
        let base = self.base;
        Some(Session {
            id,
            version: Version::parse(&base.version)?,
            principal: Arc::new(base.principal),
            client_info: base.client_info,
            client_capabilities: Arc::new(serde_json::from_str(&base.client_capabilities).ok()?),
            log_level: base.log_level,
            subscriptions: base.subscriptions,
            listed_tools: self.listed_tools,
            expires_at_ms: base.expires_at_ms,
        })
    }
}

/// A session in the memory tier, with its weight worked out once (the cache asks for it
/// while evicting, where it must be cheap).
#[derive(Clone)]
struct Cached {
    session: Arc<Session>,
    weight: u64,
}

impl Cached {
    fn new(key: &[u8], session: Arc<Session>) -> Self {
        let weight = weigh(key, &session) as u64;
        Self { session, weight }
    }
}

#[derive(Clone)]
struct ByWeight;

impl Weighter<Vec<u8>, Cached> for ByWeight {
    fn weight(&self, _key: &Vec<u8>, cached: &Cached) -> u64 {
        cached.weight
    }
}

/// What a cached session holds, in bytes: a fair estimate (within a few percent of what
/// the allocator hands out, measured on typical and adversarial shapes), counting the
/// parsed `capabilities` as they sit in memory, which can be far more than their text.
fn weigh(key: &[u8], s: &Session) -> usize {
    use std::mem::size_of;
    // The cache's own slot and the Arc's counters.
    const ENTRY: usize = 64;
    let p = &s.principal;
    let principal = size_of::<Principal>()
        + p.subject.len()
        + p.tenant.as_ref().map_or(0, String::len)
        + p.email.as_ref().map_or(0, String::len)
        + p.issuer.as_ref().map_or(0, String::len)
        + p.scopes
            .iter()
            .map(|s| size_of::<String>() + s.len())
            .sum::<usize>();
    let subscriptions = s
        .subscriptions
        .iter()
        .map(|u| size_of::<String>() + u.len())
        .sum::<usize>();
    ENTRY
        + size_of::<Session>()
        + size_of::<Vec<u8>>()
        + key.len()
        + s.id.len()
        + principal
        + s.client_info.len()
        + size_of::<Value>()
        + json_heap(&s.client_capabilities)
        + subscriptions
        + s.listed_tools.as_ref().map_or(0, String::len)
}

/// The heap bytes a parsed JSON value owns (its own inline size excluded). Objects are
/// B-trees whose nodes hold up to 11 entries in 632 bytes, about half full once past one
/// node; arrays hold their elements inline.
fn json_heap(value: &Value) -> usize {
    const NODE: usize = 632;
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => {
            items.len() * std::mem::size_of::<Value>() + items.iter().map(json_heap).sum::<usize>()
        }
        Value::Object(map) => {
            let nodes = match map.len() {
                0 => 0,
                1..=11 => 1,
                n => n.div_ceil(6),
            };
            nodes * NODE
                + map
                    .iter()
                    .map(|(k, v)| k.len() + json_heap(v))
                    .sum::<usize>()
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

type Tier = Arc<Cache<Vec<u8>, Cached, ByWeight>>;

/// Legacy sessions: reads from a memory tier shared by every HTTP worker (no mailbox on
/// the hot path), then the replica; writes through the fleet store.
///
/// The tier is kept honest by a hook that runs inside the log's apply, on every node,
/// whoever wrote: when a session is written, renewed, deleted or expired, its entry is
/// gone before the apply completes. (An actor fed by the change broadcast did this
/// before; its lag let a node that had just caught up serve a deleted session for a few
/// milliseconds.) It holds at most `sessions.memory_bytes`, by [`weigh`]'s estimate,
/// exported as `mcp_fleet_limit_in_use{limit="sessions.memory_bytes"}`.
#[derive(Clone)]
pub struct SessionHandle {
    tier: Tier,
    /// The tier's weight, kept by whoever changes the tier.
    in_use: prometheus_client::metrics::gauge::Gauge,
    store: Store,
    config: Config,
}

impl SessionHandle {
    /// Sessions over `store`, their tier's bytes exported through `limits`.
    pub fn start(store: Store, config: &Config, limits: &Limits) -> Self {
        for key in [MEMORY_BYTES, MAX_CLIENT_BYTES, MAX_SUBSCRIPTIONS] {
            limits.declare(key);
        }
        // quick_cache sizes its tables from an item count; ordinary sessions weigh ~2 KiB.
        let items = usize::try_from(config.memory_bytes / 2048)
            .unwrap_or(usize::MAX)
            .max(16);
        let tier: Tier = Arc::new(Cache::with_weighter(
            items,
            config.memory_bytes.max(1),
            ByWeight,
        ));
        let in_use = limits.gauge(MEMORY_BYTES);
        let weak = Arc::downgrade(&tier);
        let gauge = in_use.clone();
        store.on_change(move |change| {
            let Some(tier) = weak.upgrade() else { return };
            match change {
                Change::Record {
                    table: Table::McpSessions,
                    key,
                } => {
                    tier.remove(key);
                }
                Change::Record { .. } => return,
                Change::Reset => tier.clear(),
            }
            gauge.set(i64::try_from(tier.weight()).unwrap_or(i64::MAX));
        });
        Self {
            tier,
            in_use,
            store,
            config: config.clone(),
        }
    }

    /// Exports the cap on sessions per principal in `limits`: refusals from the start, and
    /// as in use the sessions this replica counts against a principal (every session
    /// created under the cap), kept current by the log's apply.
    pub fn observe_cap(&self, limits: &Limits) {
        limits.declare(MAX_PER_PRINCIPAL);
        let gauge = limits.gauge(MAX_PER_PRINCIPAL);
        let reader = self.store.reader();
        let count = move || i64::try_from(reader.owned(Table::McpSessions)).unwrap_or(i64::MAX);
        gauge.set(count());
        self.store.on_change(move |change| {
            if matches!(
                change,
                Change::Record {
                    table: Table::McpSessions,
                    ..
                } | Change::Reset
            ) {
                gauge.set(count());
            }
        });
    }

    /// How long new sessions live.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The settings sessions are held to.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn cache(&self, key: Vec<u8>, session: Arc<Session>) {
        let cached = Cached::new(&key, session);
        self.tier.insert(key, cached);
        self.measure();
    }

    fn forget(&self, key: &[u8]) {
        self.tier.remove(key);
        self.measure();
    }

    fn measure(&self) {
        self.in_use
            .set(i64::try_from(self.tier.weight()).unwrap_or(i64::MAX));
    }

    /// The live session `id` as this node knows it: the memory tier, then the local
    /// replica. A session created elsewhere a moment ago may not be here yet; see
    /// [`SessionHandle::get_fresh`].
    pub fn get(&self, id: &str) -> Result<Option<Arc<Session>>, raft::Error> {
        let key = self.store.key(Table::McpSessions, id.as_bytes());
        let now = now_ms();
        if let Some(cached) = self.tier.get(&key) {
            let session = cached.session;
            return Ok((!session.is_expired(now)).then_some(session));
        }
        // A session this ring cannot open is an error, never absent: a 404 would make the
        // client drop a session that other nodes still serve.
        let found = self.store.get_stored::<Stored>(Table::McpSessions, &key)?;
        let Some(found) = found else {
            return Ok(None);
        };
        let Some(mut session) = found.value.into_session(id.to_owned()) else {
            tracing::error!("a stored session could not be decoded; treating it as absent");
            return Ok(None);
        };
        // The record's deadline is the truth: renewals move it without rewriting the value.
        session.expires_at_ms = found.deadline_ms.unwrap_or(u64::MAX);
        let session = Arc::new(session);
        self.cache(key.clone(), session.clone());
        // The log may have changed the record between the read and the insert; its
        // invalidation would then precede our insert. Reading again settles it (misses only).
        if self
            .store
            .get_stored::<Stored>(Table::McpSessions, &key)
            .ok()
            .flatten()
            .is_none_or(|again| again.deadline_ms != found.deadline_ms)
        {
            self.forget(&key);
        }
        Ok(Some(session))
    }

    /// Like [`SessionHandle::get`], but never stale: a miss is confirmed with the leader
    /// (a session created through any node before this call is found), and a node that
    /// may have fallen behind (paused, cut off, restarted) catches up with the leader before
    /// it answers from its memory tier or replica, so it never serves a session the fleet
    /// has ended.
    pub async fn get_fresh(&self, id: &str) -> Result<Option<Arc<Session>>, raft::Error> {
        if self.store.is_current() {
            if let Some(session) = self.get(id)? {
                return Ok(Some(session));
            }
            self.store.read_barrier().await?;
            return self.get(id);
        }
        self.store.read_barrier().await?;
        // The tier may hold what the log has changed since; the replica is current now.
        self.forget(&self.store.key(Table::McpSessions, id.as_bytes()));
        self.get(id)
    }

    /// Stores a new session, counted against its principal's cap fleet-wide: refused, with
    /// nothing stored, when the principal already holds `max_per_principal` sessions.
    /// Every node counts the same applied sessions, so creates racing through different
    /// nodes cannot pass the cap together.
    pub async fn create(&self, session: Session) -> Result<Created, raft::Error> {
        let key = self.store.key(Table::McpSessions, session.id.as_bytes());
        let owner = self.store.owner(session.principal.binding().as_bytes());
        let stored = self
            .store
            .put_owned(
                Table::McpSessions,
                session.id.as_bytes(),
                &Stored::from(&session),
                Some(session.expires_at_ms),
                owner,
                self.config.max_per_principal as u64,
            )
            .await?;
        if !stored {
            return Ok(Created::Refused {
                cap: self.config.max_per_principal,
            });
        }
        self.cache(key, Arc::new(session));
        Ok(Created::Stored)
    }

    /// Stores a changed session; returns once a majority of the fleet has it. (A new one
    /// goes through [`SessionHandle::create`], which counts it.)
    pub async fn put(&self, session: Session) -> Result<(), raft::Error> {
        let key = self.store.key(Table::McpSessions, session.id.as_bytes());
        self.store
            .put(
                Table::McpSessions,
                session.id.as_bytes(),
                &Stored::from(&session),
                Some(session.expires_at_ms),
            )
            .await?;
        self.cache(key, Arc::new(session));
        Ok(())
    }

    /// Changes a stored session with `change`, applied to the session as the fleet has it
    /// now, never to a copy read earlier: a change stored through another node meanwhile
    /// (a subscription, a log level) is kept, and a session deleted meanwhile stays
    /// deleted. `change` returns `Ok(false)` when nothing needs storing. When another
    /// write gets there first, this node's replica has applied it by the time the store
    /// says so, and `change` runs again on what it wrote.
    pub async fn update<E>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Session) -> Result<bool, E>,
    ) -> Result<Updated, UpdateError<E>> {
        let key = self.store.key(Table::McpSessions, id.as_bytes());
        for _ in 0..UPDATE_ATTEMPTS {
            let Some((found, expect)) = self
                .store
                .get_stored_versioned::<Stored>(Table::McpSessions, &key)?
            else {
                self.forget(&key);
                return Ok(Updated::Gone);
            };
            let Some(mut session) = found.value.into_session(id.to_owned()) else {
                return Ok(Updated::Gone);
            };
            session.expires_at_ms = found.deadline_ms.unwrap_or(u64::MAX);
            if !change(&mut session).map_err(UpdateError::Refused)? {
                return Ok(Updated::Unchanged);
            }
            let stored = Stored::from(&session);
            if self
                .store
                .replace_stored(Table::McpSessions, &key, expect, &stored)
                .await?
            {
                self.cache(key, Arc::new(session));
                return Ok(Updated::Stored);
            }
            self.forget(&key);
        }
        Err(UpdateError::Store(raft::Error::Unavailable(
            "other writes to this session kept winning; retry".to_owned(),
        )))
    }

    /// Keeps a session in use alive: once less than half its lifetime remains, its expiry
    /// moves to a full lifetime from now. Sessions idle for a whole lifetime expire. At most
    /// one write per half-lifetime per session, and none on the caller's path.
    pub fn touch(&self, session: &Session) {
        let now = now_ms();
        let ttl = self.config.ttl.as_millis() as u64;
        if session.expires_at_ms.saturating_sub(now) >= ttl / 2 {
            return;
        }
        let store = self.store.clone();
        let id = session.id.clone();
        let deadline = now.saturating_add(ttl);
        actix::spawn(async move {
            if let Err(e) = store
                .touch(Table::McpSessions, id.as_bytes(), Some(deadline))
                .await
            {
                tracing::warn!(error = %e, "could not renew a session");
            }
        });
    }

    /// Ends a session; returns whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, raft::Error> {
        let existed = self.store.delete(Table::McpSessions, id.as_bytes()).await?;
        self.forget(&self.store.key(Table::McpSessions, id.as_bytes()));
        Ok(existed)
    }
}

/// How many times [`SessionHandle::update`] reads again after losing to another write: each
/// loss means another change to the same session committed in between, so more than a
/// few in a row is a client hammering one session from many nodes at once.
const UPDATE_ATTEMPTS: usize = 8;

/// What [`SessionHandle::update`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Updated {
    /// The changed session is stored.
    Stored,
    /// The change needed no write.
    Unchanged,
    /// The session no longer exists (ended or expired); nothing was stored.
    Gone,
}

/// Why [`SessionHandle::update`] stored nothing.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// The change itself refused (a cap).
    Refused(E),
    /// The store failed, or other writes kept winning.
    Store(raft::Error),
}

impl<E> From<raft::Error> for UpdateError<E> {
    fn from(e: raft::Error) -> Self {
        Self::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Key, Ring};
    use serde_json::json;

    fn config(ttl: Duration) -> Config {
        Config {
            ttl,
            ..Config::default()
        }
    }

    fn session(ttl: Duration) -> Session {
        Session::new(
            Version::V2025_11_25,
            Principal::anonymous(),
            json!({"name": "c"}).to_string(),
            json!({"elicitation": {}}),
            ttl,
        )
    }

    fn start(store: Store, config: &Config) -> SessionHandle {
        SessionHandle::start(store, config, &Limits::default())
    }

    async fn store(dir: &std::path::Path) -> (Store, raft::Runtime) {
        Store::open_single(dir, Ring::single(Key::generate()))
            .await
            .unwrap()
    }

    #[actix_web::test]
    async fn put_get_delete_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let handle = start(store.clone(), &config(Duration::from_secs(60)));
        let mut s = session(handle.ttl());
        let id = s.id.clone();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        handle.put(s.clone()).await.unwrap();
        assert_eq!(
            *handle.get(&id).unwrap().unwrap().client_capabilities,
            json!({"elicitation": {}})
        );

        s.log_level = Some(LogLevel::Debug);
        handle.put(s).await.unwrap();
        assert_eq!(
            handle.get(&id).unwrap().unwrap().log_level,
            Some(LogLevel::Debug)
        );

        // A second handle over the same store has an empty memory tier: it reads the replica.
        let again = start(store.clone(), &config(Duration::from_secs(60)));
        let got = again.get_fresh(&id).await.unwrap().unwrap();
        assert_eq!(got.log_level, Some(LogLevel::Debug));
        assert!(again.delete(&id).await.unwrap());
        assert!(again.get(&id).unwrap().is_none());
        // The first handle's tier learnt of the delete from the log.
        let gone =
            crate::raft::tests_support::eventually(|| handle.get(&id).unwrap().is_none()).await;
        assert!(gone, "the other tier still serves a deleted session");
        assert!(!again.delete(&id).await.unwrap());
    }

    #[actix_web::test]
    async fn a_principal_at_its_cap_is_refused_until_a_session_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let config = Config {
            max_per_principal: 2,
            ..config(Duration::from_secs(60))
        };
        let limits = Limits::default();
        let handle = SessionHandle::start(store, &config, &limits);
        handle.observe_cap(&limits);
        let as_who = |subject: &str| {
            let principal = Principal {
                subject: subject.to_owned(),
                ..Principal::anonymous()
            };
            Session::new(
                Version::V2025_11_25,
                principal,
                json!({}).to_string(),
                json!({}),
                Duration::from_secs(60),
            )
        };
        let first = as_who("alice");
        assert_eq!(handle.create(first.clone()).await.unwrap(), Created::Stored);
        assert_eq!(
            handle.create(as_who("alice")).await.unwrap(),
            Created::Stored
        );
        let refused = as_who("alice");
        assert_eq!(
            handle.create(refused.clone()).await.unwrap(),
            Created::Refused { cap: 2 }
        );
        assert!(handle.get_fresh(&refused.id).await.unwrap().is_none());
        assert!(handle.get(&first.id).unwrap().is_some(), "nothing evicted");
        assert_eq!(handle.create(as_who("bob")).await.unwrap(), Created::Stored);
        assert_eq!(limits.gauge(MAX_PER_PRINCIPAL).get(), 3);
        // Changing a session is not creating one: it still counts, once.
        let mut changed = first.clone();
        changed.log_level = Some(LogLevel::Debug);
        handle.put(changed).await.unwrap();
        assert_eq!(
            handle.create(as_who("alice")).await.unwrap(),
            Created::Refused { cap: 2 }
        );
        assert!(handle.delete(&first.id).await.unwrap());
        assert_eq!(limits.gauge(MAX_PER_PRINCIPAL).get(), 2);
        assert_eq!(
            handle.create(as_who("alice")).await.unwrap(),
            Created::Stored
        );
    }

    #[actix_web::test]
    async fn sessions_in_use_are_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let handle = start(store, &config(Duration::from_secs(100)));
        // A session with 10 s of its 100 s left is renewed; one with 90 s left is not.
        let short = session(Duration::from_secs(10));
        let long = session(Duration::from_secs(90));
        handle.put(short.clone()).await.unwrap();
        handle.put(long.clone()).await.unwrap();
        handle.touch(&short);
        handle.touch(&long);
        let renewed = crate::raft::tests_support::eventually(|| {
            handle
                .get(&short.id)
                .unwrap()
                .is_some_and(|s| s.expires_at_ms >= short.expires_at_ms + 80_000)
        })
        .await;
        assert!(renewed, "the session in use was not renewed");
        assert_eq!(
            handle.get(&long.id).unwrap().unwrap().expires_at_ms,
            long.expires_at_ms
        );
    }

    #[actix_web::test]
    async fn expired_sessions_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let handle = start(store, &config(Duration::from_secs(60)));
        let s = session(Duration::ZERO);
        let id = s.id.clone();
        handle.put(s).await.unwrap();
        assert!(handle.get(&id).unwrap().is_none());
        assert!(handle.get_fresh("no-such-session").await.unwrap().is_none());
    }

    #[actix_web::test]
    async fn the_memory_tier_is_weighed_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let limits = Limits::default();
        // Room for about one large session: a second one pushes the first out, where a
        // count of entries would have kept both.
        let config = Config {
            memory_bytes: 600 * 1024,
            ..config(Duration::from_secs(60))
        };
        let handle = SessionHandle::start(store.clone(), &config, &limits);
        let small = session(handle.ttl());
        handle.put(small.clone()).await.unwrap();
        let gauge = limits.gauge(MEMORY_BYTES);
        let one = gauge.get();
        assert!(
            (500..4096).contains(&one),
            "an ordinary session weighs {one}"
        );

        // 16 KiB of capabilities text in the costliest shape parses into ~1.3 MB.
        let costly: Vec<Value> = (0..2000).map(|_| json!({ "a": 1 })).collect();
        let mut large = session(handle.ttl());
        large.client_capabilities = Arc::new(json!({ "x": costly }));
        let key = store.key(Table::McpSessions, large.id.as_bytes());
        let weight = Cached::new(&key, Arc::new(large.clone())).weight;
        assert!(weight > 1_000_000, "weighed {weight}");
        handle.put(large).await.unwrap();
        // Too heavy for the tier: not kept, and the gauge never passes the cap.
        assert!(gauge.get() <= 600 * 1024, "{}", gauge.get());
        assert!(handle.tier.weight() <= config.memory_bytes);
    }

    #[test]
    fn json_heap_is_close_to_what_is_allocated() {
        // Measured with a counting allocator (serde_json 1.0, 64-bit): 1,299 bytes for
        // these capabilities, 90,680 for an object of 800 small keys.
        let typical =
            json!({ "elicitation": {}, "sampling": {}, "roots": { "listChanged": true } });
        assert_eq!(json_heap(&typical), 1_299);
        let keys: serde_json::Map<String, Value> =
            (0..800).map(|i| (format!("k{i:05}"), json!(i))).collect();
        let estimate = json_heap(&Value::Object(keys)) as f64;
        assert!((estimate / 90_680.0 - 1.0).abs() < 0.1, "{estimate}");
    }

    #[test]
    fn a_stored_session_stays_within_its_stated_maximum() {
        let config = Config::default();
        let max_uri = 2048;
        // About the largest principal a request head can carry: 96 KiB of claims. Its
        // encoding is no longer than the claims' JSON text (a length prefix per string
        // against two quotes and a separator).
        let principal = Principal {
            subject: "s".repeat(40 * 1024),
            tenant: Some("t".repeat(16 * 1024)),
            email: Some("e".repeat(8 * 1024)),
            scopes: (0..60).map(|i| format!("{i:0>255}")).collect(),
            issuer: Some("i".repeat(16 * 1024)),
        };
        let principal_bytes = postcard::to_stdvec(&principal).unwrap().len();
        assert!(principal_bytes <= 96 * 1024, "{principal_bytes}");
        let info = format!("{{\"name\":\"{}\"}}", "n".repeat(8 * 1024 - 11));
        let caps = json!({ "x": "c".repeat(8 * 1024 - 8) });
        assert_eq!(info.len() + caps.to_string().len(), config.max_client_bytes);
        let mut s = Session::new(
            Version::V2025_11_25,
            principal,
            info,
            caps,
            Duration::from_secs(1),
        );
        s.log_level = Some(LogLevel::Emergency);
        s.expires_at_ms = u64::MAX;
        s.subscriptions = (0..config.max_subscriptions)
            .map(|i| format!("{i:0>2048}"))
            .collect();
        let encoded = postcard::to_stdvec(&Stored::from(&s)).unwrap();
        let bound = config.max_record_bytes(max_uri, 96 * 1024);
        s.listed_tools = Some("f".repeat(64));
        assert_eq!(bound, 180_448);
        assert!(encoded.len() <= bound, "{} > {bound}", encoded.len());
    }
}

#[cfg(test)]
mod stored_form {
    use super::*;
    use serde_json::json;

    fn session() -> Session {
        let mut s = Session::new(
            Version::V2025_11_25,
            Principal::anonymous(),
            "{}".into(),
            json!({}),
            Duration::from_secs(60),
        );
        s.subscriptions = vec!["test://a".into()];
        s
    }

    #[test]
    fn a_record_of_the_first_form_reads_as_nothing_listed_and_this_form_reads_back() {
        let mut s = session();
        let first_form = postcard::to_stdvec(&Stored::from(&s).base).unwrap();
        let read: Stored = postcard::from_bytes(&first_form).unwrap();
        assert_eq!(read.into_session(s.id.clone()).unwrap(), s);

        s.listed_tools = Some("ab".repeat(32));
        let this_form = postcard::to_stdvec(&Stored::from(&s)).unwrap();
        let read: Stored = postcard::from_bytes(&this_form).unwrap();
        assert_eq!(read.into_session(s.id.clone()).unwrap(), s);
        // A build that knows only the first form reads this one, minus the new field.
        let old: Base = postcard::from_bytes(&this_form).unwrap();
        assert_eq!(old.subscriptions, s.subscriptions);
        assert_eq!(old.expires_at_ms, s.expires_at_ms);
    }
}
