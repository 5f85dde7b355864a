//! Legacy MCP sessions in the fleet store, fronted by a memory tier that the replicated
//! log keeps honest on every node.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Principal;
use crate::limits::Limits;
use crate::mcp::Version;
use crate::raft::{self, now_ms, Change, Store, Table};
use crate::tools::LogLevel;

/// The configuration key, and metric label, of the cap on sessions per principal.
pub const MAX_PER_PRINCIPAL: &str = "sessions.max_per_principal";

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a session lives after its last use (renewed at most every half of this).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How many sessions the memory tier holds before it evicts the least recently used.
    pub memory_capacity: usize,
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
            memory_capacity: 100_000,
            max_per_principal: 1000,
        }
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
    /// `clientInfo` from `initialize`.
    pub client_info: Value,
    /// `capabilities` from `initialize`.
    pub client_capabilities: Value,
    /// Minimum level of log messages the client wants (`logging/setLevel`).
    pub log_level: Option<LogLevel>,
    /// Resource URIs the client subscribed to.
    pub subscriptions: Vec<String>,
    /// When it ends, in milliseconds since the epoch.
    pub expires_at_ms: u64,
}

impl Session {
    /// A new session with a fresh random id.
    pub fn new(
        version: Version,
        principal: Principal,
        client_info: Value,
        client_capabilities: Value,
        ttl: Duration,
    ) -> Self {
        Self {
            id: crate::crypto::random_hex(16),
            version,
            principal: Arc::new(principal),
            client_info,
            client_capabilities,
            log_level: None,
            subscriptions: Vec::new(),
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as u64),
        }
    }

    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
}

/// The stored form: postcard cannot carry `serde_json::Value`, so JSON travels as text.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: String,
    principal: Principal,
    client_info: String,
    client_capabilities: String,
    log_level: Option<LogLevel>,
    subscriptions: Vec<String>,
    expires_at_ms: u64,
}

impl From<&Session> for Stored {
    fn from(s: &Session) -> Self {
        Self {
            version: s.version.as_str().to_owned(),
            principal: (*s.principal).clone(),
            client_info: s.client_info.to_string(),
            client_capabilities: s.client_capabilities.to_string(),
            log_level: s.log_level,
            subscriptions: s.subscriptions.clone(),
            expires_at_ms: s.expires_at_ms,
        }
    }
}

impl Stored {
    fn into_session(self, id: String) -> Option<Session> {
        Some(Session {
            id,
            version: Version::parse(&self.version)?,
            principal: Arc::new(self.principal),
            client_info: serde_json::from_str(&self.client_info).ok()?,
            client_capabilities: serde_json::from_str(&self.client_capabilities).ok()?,
            log_level: self.log_level,
            subscriptions: self.subscriptions,
            expires_at_ms: self.expires_at_ms,
        })
    }
}

type Tier = Arc<Cache<Vec<u8>, Arc<Session>>>;

/// Legacy sessions: reads from a memory tier shared by every HTTP worker (no mailbox on
/// the hot path), then the replica; writes through the fleet store.
///
/// The tier is kept honest by a hook that runs inside the log's apply, on every node,
/// whoever wrote: when a session is written, renewed, deleted or expired, its entry is
/// gone before the apply completes. (An actor fed by the change broadcast did this
/// before; its lag let a node that had just caught up serve a deleted session for a few
/// milliseconds.)
#[derive(Clone)]
pub struct SessionHandle {
    tier: Tier,
    store: Store,
    ttl: Duration,
    max_per_principal: usize,
}

impl SessionHandle {
    /// Sessions over `store`.
    pub fn start(store: Store, config: &Config) -> Self {
        let tier: Tier = Arc::new(Cache::new(config.memory_capacity.max(1)));
        let weak = Arc::downgrade(&tier);
        store.on_change(move |change| {
            let Some(tier) = weak.upgrade() else { return };
            match change {
                Change::Record {
                    table: Table::McpSessions,
                    key,
                } => {
                    tier.remove(key);
                }
                Change::Record { .. } => {}
                Change::Reset => tier.clear(),
            }
        });
        Self {
            tier,
            store,
            ttl: config.ttl,
            max_per_principal: config.max_per_principal,
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
        self.ttl
    }

    /// The live session `id` as this node knows it: the memory tier, then the local
    /// replica. A session created elsewhere a moment ago may not be here yet; see
    /// [`SessionHandle::get_fresh`].
    pub fn get(&self, id: &str) -> Result<Option<Arc<Session>>, raft::Error> {
        let key = self.store.key(Table::McpSessions, id.as_bytes());
        let now = now_ms();
        if let Some(session) = self.tier.get(&key) {
            return Ok((!session.is_expired(now)).then_some(session));
        }
        let found = match self.store.get_stored::<Stored>(Table::McpSessions, &key) {
            Ok(found) => found,
            Err(raft::Error::Sealed { .. }) => {
                tracing::error!("a stored session failed authentication; treating it as absent");
                None
            }
            Err(e) => return Err(e),
        };
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
        self.tier.insert(key.clone(), session.clone());
        // The log may have changed the record between the read and the insert; its
        // invalidation would then precede our insert. Reading again settles it (misses only).
        if self
            .store
            .get_stored::<Stored>(Table::McpSessions, &key)
            .ok()
            .flatten()
            .is_none_or(|again| again.deadline_ms != found.deadline_ms)
        {
            self.tier.remove(&key);
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
        self.tier
            .remove(&self.store.key(Table::McpSessions, id.as_bytes()));
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
                self.max_per_principal as u64,
            )
            .await?;
        if !stored {
            return Ok(Created::Refused {
                cap: self.max_per_principal,
            });
        }
        self.tier.insert(key, Arc::new(session));
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
        self.tier.insert(key, Arc::new(session));
        Ok(())
    }

    /// Keeps a session in use alive: once less than half its lifetime remains, its expiry
    /// moves to a full lifetime from now. Sessions idle for a whole lifetime expire. At most
    /// one write per half-lifetime per session, and none on the caller's path.
    pub fn touch(&self, session: &Session) {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as u64;
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
        self.tier
            .remove(&self.store.key(Table::McpSessions, id.as_bytes()));
        Ok(existed)
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
            memory_capacity: 16,
            ..Config::default()
        }
    }

    fn session(ttl: Duration) -> Session {
        Session::new(
            Version::V2025_11_25,
            Principal::anonymous(),
            json!({"name": "c"}),
            json!({"elicitation": {}}),
            ttl,
        )
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
        let handle = SessionHandle::start(store.clone(), &config(Duration::from_secs(60)));
        let mut s = session(handle.ttl());
        let id = s.id.clone();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        handle.put(s.clone()).await.unwrap();
        assert_eq!(
            handle.get(&id).unwrap().unwrap().client_capabilities,
            json!({"elicitation": {}})
        );

        s.log_level = Some(LogLevel::Debug);
        handle.put(s).await.unwrap();
        assert_eq!(
            handle.get(&id).unwrap().unwrap().log_level,
            Some(LogLevel::Debug)
        );

        // A second handle over the same store has an empty memory tier: it reads the replica.
        let again = SessionHandle::start(store.clone(), &config(Duration::from_secs(60)));
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
        let handle = SessionHandle::start(store, &config);
        let limits = Limits::default();
        handle.observe_cap(&limits);
        let as_who = |subject: &str| {
            let principal = Principal {
                subject: subject.to_owned(),
                ..Principal::anonymous()
            };
            Session::new(
                Version::V2025_11_25,
                principal,
                json!({}),
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
        let handle = SessionHandle::start(store, &config(Duration::from_secs(100)));
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
        let handle = SessionHandle::start(store, &config(Duration::from_secs(60)));
        let s = session(Duration::ZERO);
        let id = s.id.clone();
        handle.put(s).await.unwrap();
        assert!(handle.get(&id).unwrap().is_none());
        assert!(handle.get_fresh("no-such-session").await.unwrap().is_none());
    }
}
