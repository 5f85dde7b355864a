//! The session actor: owns legacy MCP sessions, their memory tier and their store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler, Message,
    WrapFuture,
};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Principal;
use crate::mcp::Version;
use crate::store::{self, LocalStore, Table};
use crate::tools::LogLevel;

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a session lives after its last use (renewed at most every half of this).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How many sessions the memory tier holds before it evicts the least recently used.
    pub memory_capacity: usize,
    /// How often expired sessions are swept from the store.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            memory_capacity: 100_000,
            sweep_interval: Duration::from_secs(60),
        }
    }
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
        let mut bytes = [0u8; 16];
        crate::crypto::fill_random(&mut bytes);
        Self {
            id: hex::encode(bytes),
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Tier = Arc<Cache<String, Arc<Session>>>;

struct SessionActor {
    store: LocalStore,
    tier: Tier,
    sweep_interval: Duration,
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.sweep_interval, |actor, _| actor.sweep());
    }
}

impl SessionActor {
    /// The current record of `id`, from the memory tier or the store.
    fn current(&self, id: &str) -> Option<Arc<Session>> {
        if let Some(session) = self.tier.get(id) {
            return Some(session);
        }
        let stored = self.store.get::<Stored>(Table::McpSessions, id).ok()??;
        stored.into_session(id.to_owned()).map(Arc::new)
    }

    fn sweep(&mut self) {
        let now = now_ms();
        let sessions = match self.store.scan::<Stored>(Table::McpSessions) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "session sweep could not read the store");
                return;
            }
        };
        let expired: Vec<String> = sessions
            .into_iter()
            .filter(|(_, s)| s.expires_at_ms <= now)
            .map(|(id, _)| id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let store = self.store.clone();
        let tier = self.tier.clone();
        actix::spawn(async move {
            for id in &expired {
                tier.remove(id);
                if let Err(e) = store.remove(Table::McpSessions, id).await {
                    tracing::error!(error = %e, "could not remove an expired session");
                }
            }
            tracing::debug!(count = expired.len(), "swept expired sessions");
        });
    }
}

/// A write to the session table.
enum Write {
    Put(Arc<Session>),
    /// Moves a session's expiry, keeping the rest of its current record.
    Renew(String, u64),
    Delete(String),
}

impl Message for Write {
    type Result = Result<bool, store::Error>;
}

impl Handler<Write> for SessionActor {
    // Atomic: the actor takes no other message until this write is on disk, so writes
    // land in the order they were sent and a renewal sees every write before it.
    type Result = AtomicResponse<Self, Result<bool, store::Error>>;

    fn handle(&mut self, msg: Write, _: &mut Self::Context) -> Self::Result {
        // A renewal applies to the record as the writes before it left it.
        let msg = match msg {
            Write::Renew(id, expires_at_ms) => match self.current(&id) {
                Some(current) => Write::Put(Arc::new(Session {
                    expires_at_ms,
                    ..(*current).clone()
                })),
                None => return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(false)))),
            },
            other => other,
        };
        let store = self.store.clone();
        let fut = async move {
            match &msg {
                Write::Put(session) => store
                    .put(Table::McpSessions, &session.id, &Stored::from(&**session))
                    .await
                    .map(|()| true),
                Write::Delete(id) => store.remove(Table::McpSessions, id).await,
                Write::Renew(..) => unreachable!("renewals became puts above"),
            }
            .map(|existed| (msg, existed))
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|result, actor, _| {
            let (msg, existed) = result?;
            match msg {
                Write::Put(session) => actor.tier.insert(session.id.clone(), session),
                Write::Delete(id) => {
                    actor.tier.remove(&id);
                }
                Write::Renew(..) => {}
            }
            Ok(existed)
        })))
    }
}

/// The typed handle of the session actor.
#[derive(Clone)]
pub struct SessionHandle {
    addr: Addr<SessionActor>,
    tier: Tier,
    store: LocalStore,
    ttl: Duration,
}

impl SessionHandle {
    /// Starts the session actor over `store`. Must be called inside an actix system.
    pub fn start(store: LocalStore, config: &Config) -> Self {
        let tier: Tier = Arc::new(Cache::new(config.memory_capacity.max(1)));
        let actor = SessionActor {
            store: store.clone(),
            tier: tier.clone(),
            sweep_interval: config.sweep_interval,
        };
        Self {
            addr: actor.start(),
            tier,
            store,
            ttl: config.ttl,
        }
    }

    /// How long new sessions live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The live session `id`, from the memory tier or, on a miss, the store.
    pub fn get(&self, id: &str) -> Result<Option<Arc<Session>>, store::Error> {
        let now = now_ms();
        if let Some(session) = self.tier.get(id) {
            return Ok((!session.is_expired(now)).then_some(session));
        }
        let Some(stored) = self.store.get::<Stored>(Table::McpSessions, id)? else {
            return Ok(None);
        };
        let Some(session) = stored.into_session(id.to_owned()) else {
            tracing::error!("a stored session could not be decoded; treating it as absent");
            return Ok(None);
        };
        if session.is_expired(now) {
            return Ok(None);
        }
        let session = Arc::new(session);
        self.tier.insert(id.to_owned(), session.clone());
        // A delete may have run between the read and the insert; its tier removal would
        // then precede our insert. Reading again settles it (misses only, not the hot path).
        if self.store.get::<Stored>(Table::McpSessions, id)?.is_none() {
            self.tier.remove(id);
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Stores a new or changed session; returns once it is durable.
    pub async fn put(&self, session: Session) -> Result<(), store::Error> {
        self.send(Write::Put(Arc::new(session))).await.map(drop)
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
        self.addr
            .do_send(Write::Renew(session.id.clone(), now.saturating_add(ttl)));
    }

    /// Ends a session; returns whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, store::Error> {
        self.send(Write::Delete(id.to_owned())).await
    }

    async fn send(&self, write: Write) -> Result<bool, store::Error> {
        self.addr.send(write).await.unwrap_or_else(|_| {
            Err(store::Error::Sled(sled::Error::Unsupported(
                "the session actor has stopped".into(),
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(ttl: Duration) -> Config {
        Config {
            ttl,
            memory_capacity: 16,
            sweep_interval: Duration::from_secs(3600),
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

    #[actix_web::test]
    async fn put_get_delete_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), 1 << 20).unwrap();
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

        // A second handle over the same store has an empty memory tier: it reads the store.
        let again = SessionHandle::start(store.clone(), &config(Duration::from_secs(60)));
        let got = again.get(&id).unwrap().unwrap();
        assert_eq!(got.log_level, Some(LogLevel::Debug));
        assert!(again.delete(&id).await.unwrap());
        assert!(again.get(&id).unwrap().is_none());
        assert!(!again.delete(&id).await.unwrap());
    }

    #[actix_web::test]
    async fn sessions_in_use_are_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), 1 << 20).unwrap();
        let handle = SessionHandle::start(store, &config(Duration::from_secs(100)));
        // A session with 10 s of its 100 s left is renewed; one with 90 s left is not.
        let short = session(Duration::from_secs(10));
        let long = session(Duration::from_secs(90));
        handle.put(short.clone()).await.unwrap();
        handle.put(long.clone()).await.unwrap();
        handle.touch(&short);
        handle.touch(&long);
        // Writes are applied in order: once this one lands, the renewal has too.
        handle.put(session(Duration::from_secs(1))).await.unwrap();
        let renewed = handle.get(&short.id).unwrap().unwrap();
        assert!(renewed.expires_at_ms >= short.expires_at_ms + 80_000);
        assert_eq!(
            handle.get(&long.id).unwrap().unwrap().expires_at_ms,
            long.expires_at_ms
        );
    }

    #[actix_web::test]
    async fn expired_sessions_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), 1 << 20).unwrap();
        let handle = SessionHandle::start(store, &config(Duration::from_secs(60)));
        let s = session(Duration::ZERO);
        let id = s.id.clone();
        handle.put(s).await.unwrap();
        assert!(handle.get(&id).unwrap().is_none());
        assert!(handle.get("no-such-session").unwrap().is_none());
    }
}
