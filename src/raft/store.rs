//! The fleet store: typed, sealed reads and writes over the Raft group, from any node.
//!
//! Writes are sealed here, then proposed to the leader (forwarded when this node follows)
//! and acknowledged once a majority has them on disk. Reads come from this node's replica;
//! a read that must see every acknowledged write first asks the leader for a read index.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::RaftError;
use openraft::{Raft, ServerState};
use prometheus_client::metrics::histogram::Histogram;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::budget::{AppendMetrics, Budget};
use super::changes::Changes;
use super::command::storage_key;
use super::config::SNAPSHOT_CHUNK_BYTES;
use super::network::{path, Client, Network};
use super::pending::Pending;
use super::propose::{Answer, WriteMetrics, Writers, PER_WRITE_OVERHEAD};
use super::{
    Change, Command, Committed, Config, LogStore, NodeId, Op, Outcome, Owner, Reader, StateMachine,
    Table, TypeConfig,
};
use crate::crypto::{Ring, Sealer};
use crate::limits::Limits;

/// The configuration key of the entry size cap, as refusals name it.
pub const MAX_ENTRY_BYTES: &str = "raft.max_entry_bytes";

/// Format byte in front of a value before it is sealed.
const VALUE_V1: u8 = 1;

/// How long a member waits to apply a removal another member made.
const APPLIED_WAIT: Duration = Duration::from_secs(1);

/// How long to wait between attempts while the leader this node knows of fails them (it
/// may be dead, and not yet replaced); news of another leader ends the wait at once.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How long a stalled node waits between two probe writes that failed at once.
const PROBE_PAUSE: Duration = Duration::from_millis(250);

/// What a batch adds to the commands it carries: its variant and the list's length.
const BATCH_OVERHEAD: usize = 16;

/// Upper bounds, in seconds, of the commit latency buckets.
const COMMIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Errors of the fleet store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local replica failed.
    #[error("storage: {0}")]
    Storage(String),
    /// No leader could commit the write or confirm the read in time (no quorum, an election
    /// that did not end, a partition). Retrying later may succeed.
    #[error("the fleet store is unavailable: {0}")]
    Unavailable(String),
    /// A record failed authentication: tampered with, moved to another key, or sealed with
    /// a key this node's ring does not hold.
    #[error("a record of {table} failed authentication")]
    Sealed {
        /// The table's name.
        table: &'static str,
    },
    /// A value could not be encoded or decoded.
    #[error("value encoding: {0}")]
    Encoding(String),
    /// A membership change was refused.
    #[error("membership: {0}")]
    Membership(String),
    /// The write would be a log entry over `raft.max_entry_bytes`; it was not proposed.
    /// Retrying cannot help.
    #[error("a write of {size} bytes is over the limit of {cap} bytes (raft.max_entry_bytes)")]
    TooLarge {
        /// The encoded command.
        size: usize,
        /// `raft.max_entry_bytes`.
        cap: usize,
    },
}

impl From<super::StorageError> for Error {
    fn from(e: super::StorageError) -> Self {
        Error::Storage(e.to_string())
    }
}

/// Why the leader refused a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// The receiver is not the leader (any more).
    NotLeader,
    /// The leader could not do it.
    Failed(String),
    /// The command is over the leader's `raft.max_entry_bytes`.
    TooLarge {
        /// The encoded command.
        size: u64,
        /// The leader's cap.
        cap: u64,
    },
}

/// The SHA-256 of a record's sealed value: which version of the record was read.
pub type Digest = [u8; 32];

/// A record read back, with the sealed bytes it was opened from.
type Opened<T> = (Found<T>, Vec<u8>);

/// A record read back: its value and deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Found<T> {
    /// The value.
    pub value: T,
    /// When it ends, in milliseconds since the epoch.
    pub deadline_ms: Option<u64>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Read barriers in flight on this node; see [`Inner::shared_read_barrier`].
#[derive(Default)]
pub(super) struct Barriers {
    /// Tickets handed to callers, in arrival order.
    arrived: AtomicU64,
    /// Every ticket up to this one has been served by a completed barrier.
    covered: AtomicU64,
    /// One barrier at a time.
    turn: tokio::sync::Mutex<()>,
    /// Barriers actually run (each a confirmation round with the leader).
    rounds: AtomicU64,
    /// The last barrier that failed: the tickets it covered and why. Callers it covered
    /// get its answer instead of each waiting out `raft.write_timeout` in turn (on a node
    /// cut off from its leader, a queue of k requests would otherwise wait k timeouts).
    failed: std::sync::Mutex<Option<(u64, String)>>,
}

pub(super) struct Inner {
    pub(super) id: NodeId,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) reader: Reader,
    /// Leaves the owner index's counts for the next open, at shutdown.
    closer: super::state_machine::Closer,
    pub(super) committed: Committed,
    pub(super) client: Client,
    pub(super) ring: Ring,
    pub(super) changes: Changes,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) write_timeout: Duration,
    pub(super) barriers: Barriers,
    pub(super) db: sled::Db,
    /// Time of each write that succeeded, from proposal to committed and applied.
    pub(super) commit_seconds: Histogram,
    /// Changes of the known leader, counted by the leader watcher.
    pub(super) leader_changes: Arc<AtomicU64>,
    /// When this node last heard from a leader, and the commit index it named.
    pub(super) contact: Contact,
    /// `raft.election_timeout`: how long without news from the leader (or, as leader, from a
    /// quorum) before this node's replica may be stale derives from it; see
    /// [`Store::lease`] and [`Store::election_silence`].
    pub(super) stale_after: Duration,
    /// Set while this leader hands over before stopping: it takes no more writes or reads
    /// from other nodes, so their leader lease can lapse and a successor be elected.
    pub(super) stepping_down: std::sync::atomic::AtomicBool,
    /// When this node last lost sight of a leader (0 while it knows one, or never had one).
    pub(super) leader_lost_ms: Arc<AtomicU64>,
    /// When this node last became leader (0 while it is not leader).
    pub(super) leading_since_ms: Arc<AtomicU64>,
    /// `raft.max_entry_bytes`.
    pub(super) max_entry_bytes: usize,
    /// Where refusals by `raft.max_entry_bytes` are counted.
    pub(super) limits: Limits,
    /// What the leader measures of its AppendEntries.
    pub(super) append_metrics: AppendMetrics,
    /// Writes this node started and has not finished; see [`Pending`].
    pub(super) pending: Arc<Pending>,
    /// Set while a probe write runs for a stalled node; see [`Inner::probe`].
    pub(super) probing: std::sync::atomic::AtomicBool,
    /// Where this node's writes wait to share an entry (as leader) or a request to the
    /// leader (as follower).
    pub(super) writers: Writers,
    /// What this node measures of its writes and its log's fsyncs.
    pub(super) write_metrics: WriteMetrics,
    /// Set once this node has applied everything it knew to be committed; see
    /// [`Store::is_ready`].
    pub(super) caught_up_once: std::sync::atomic::AtomicBool,
    /// Whether this node is a member, waiting for a group, or removed.
    pub(super) standing: super::standing::Watch,
    /// Where this node's ring stands against the fleet's key-check record.
    pub(super) keys: super::keycheck::Keys,
    /// What this node's vote requests met, and whether it is cut off; see `election`.
    pub(super) ballots: Arc<super::election::Ballots>,
}

/// The last append (or heartbeat) a leader sent this node, and what this node knows of
/// its own pauses.
#[derive(Default)]
pub(super) struct Contact {
    /// When the leader sent it (the leader's clock), in milliseconds since the epoch; 0
    /// for never.
    pub(super) at_ms: AtomicU64,
    /// The leader's commit index then, plus one; 0 for none.
    pub(super) leader_commit: AtomicU64,
    /// The watchdog's last tick.
    pub(super) tick_ms: AtomicU64,
    /// When this process last resumed from a pause (SIGSTOP, a frozen VM): news the leader
    /// sent before then may have waited in a socket and says nothing about now.
    pub(super) resumed_ms: AtomicU64,
    /// When the last read barrier that completed began: the leader vouched for this
    /// replica as of then.
    pub(super) verified_ms: AtomicU64,
}

/// How often a write or read waiting for a leader checks whether this node is cut off.
const CUT_OFF_RECHECK: Duration = Duration::from_millis(25);

/// How often the pause watchdog ticks.
pub(super) const TICK: Duration = Duration::from_millis(20);

/// A gap between ticks this long means the process was paused (or starved).
pub(super) const PAUSE_GAP_MS: u64 = 100;

/// The fleet store of one node; cheap to clone.
#[derive(Clone)]
pub struct Store(pub(super) Arc<Inner>);

/// The runtime Raft runs on; dropping it never blocks (it is shut down in the background).
pub struct Runtime(Mutex<Option<tokio::runtime::Runtime>>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.lock().ok().and_then(|mut r| r.take()) {
            rt.shutdown_background();
        }
    }
}

impl Store {
    /// Opens the replica under `dir` and starts this node's Raft member on a runtime of its
    /// own, so consensus never waits behind HTTP work. Refusals by `raft.max_entry_bytes`
    /// are counted in `limits`.
    pub fn open(
        config: &Config,
        dir: &Path,
        secret: &str,
        ring: Ring,
        limits: &Limits,
    ) -> Result<(Store, Runtime), Error> {
        let new = !dir.exists();
        // The Raft log's files open on a thread of their own while sled recovers its
        // database: on a restart each reads its files for milliseconds.
        let (db, files) = std::thread::scope(|scope| {
            let files = std::thread::Builder::new()
                .name("raft-log-open".to_owned())
                .spawn_scoped(scope, || LogStore::open_files(dir).map_err(Error::from))
                .map_err(|e| Error::Storage(format!("cannot open the Raft log: {e}")))?;
            let db = sled::Config::new()
                .path(dir)
                .cache_capacity(config.cache_bytes)
                .open()
                .map_err(|e| Error::Storage(e.to_string()));
            let files = files
                .join()
                .map_err(|_| Error::Storage("opening the Raft log panicked".to_owned()))?;
            Ok::<_, Error>((db?, files?))
        })?;
        if new {
            // The replica's directory itself, made by this open, survives a power loss.
            if let Some(parent) = dir.parent() {
                crate::durable::sync_dir(parent).map_err(|e| Error::Storage(e.to_string()))?;
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("raft")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("cannot start the Raft runtime: {e}")))?;
        let changes = Changes::default();
        let log = LogStore::open_with(dir, &db, files)?.with_read_budget(config.max_append_bytes);
        let committed = log.committed();
        let write_metrics = WriteMetrics::new(log.flush_metrics());
        let machine = StateMachine::open(&db, dir, changes.clone())?;
        let weights = super::compaction::Weights {
            appended: log.appended(),
            snapshot: machine.snapshot_bytes(),
        };
        let reader = machine.reader();
        let closer = machine.closer();
        let client = Client::new(secret);
        let raft_config = openraft::Config {
            cluster_name: "mcp-fleet".to_owned(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: config.election_timeout_max().as_millis() as u64,
            // Snapshots are asked for by `compaction`, which also weighs the log's bytes.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.snapshot_after.min(1000),
            // The answer to a snapshot's last chunk waits for the install (100,000 sessions:
            // about 5 s on a loaded 2-core machine); a timeout sends the whole snapshot again.
            install_snapshot_timeout: 60_000,
            // Snapshots go out in chunks read from their file, so a node never holds more
            // than one chunk of one; the internal listener's body limit leaves room for it.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Storage(format!("Raft settings: {e}")))?;
        let id = config.node_id;
        let append_metrics = AppendMetrics::default();
        let pending = Arc::new(Pending::new(
            config.write_timeout,
            committed.index(),
            Instant::now(),
        ));
        // Set by the network when a member says this node is no longer one.
        let not_member = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ballots = Arc::new(super::election::Ballots::default());
        let network = Network::new(
            client.clone(),
            id,
            Budget {
                max_append_bytes: config.max_append_bytes,
                max_entries: raft_config.max_payload_entries,
                metrics: append_metrics.clone(),
            },
            not_member.clone(),
            ballots.clone(),
        );
        limits.declare(MAX_ENTRY_BYTES);
        // Raft::new spawns the core on the current runtime: build it inside ours, from a
        // thread of its own because the caller may already be inside a runtime.
        let raft = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime
                        .block_on(Raft::new(id, Arc::new(raft_config), network, log, machine))
                        .map_err(|e| Error::Storage(e.to_string()))
                })
                .join()
        })
        .map_err(|_| Error::Storage("starting Raft panicked".to_owned()))??;
        let writers = Writers::start(
            runtime.handle(),
            config,
            raft.clone(),
            client.clone(),
            write_metrics.clone(),
        );
        let store = Store(Arc::new(Inner {
            id,
            raft,
            reader,
            closer,
            committed,
            client,
            ring,
            changes,
            runtime: runtime.handle().clone(),
            write_timeout: config.write_timeout,
            barriers: Barriers::default(),
            db,
            commit_seconds: Histogram::new(COMMIT_BUCKETS),
            leader_changes: Arc::default(),
            // Starting counts as resuming: what is on disk may be old news.
            contact: Contact {
                resumed_ms: AtomicU64::new(now_ms()),
                ..Contact::default()
            },
            stale_after: config.election_timeout,
            stepping_down: std::sync::atomic::AtomicBool::new(false),
            leader_lost_ms: Arc::default(),
            leading_since_ms: Arc::default(),
            max_entry_bytes: config.max_entry_bytes,
            limits: limits.clone(),
            append_metrics,
            pending,
            probing: std::sync::atomic::AtomicBool::new(false),
            writers,
            write_metrics,
            caught_up_once: std::sync::atomic::AtomicBool::new(false),
            standing: super::standing::Watch::new(not_member),
            keys: Default::default(),
            ballots,
        }));
        store.spawn_expiry(config.expire_interval);
        let weak = Arc::downgrade(&store.0);
        super::compaction::spawn(
            &store.0.runtime,
            move || weak.upgrade().map(|inner| inner.raft.clone()),
            weights,
            config.snapshot_after,
        );
        store.spawn_watchdog();
        store.spawn_leader_log();
        store.spawn_standing_watch()?;
        super::election::spawn(&store.0);
        Ok((store, Runtime(Mutex::new(Some(runtime)))))
    }

    /// Opens a group of one node under `dir` (dev mode, stdio, tests), initialising it on
    /// first use, and waits until this node leads it.
    pub async fn open_single(dir: &Path, ring: Ring) -> Result<(Store, Runtime), Error> {
        Self::open_single_with(&Config::default(), dir, "127.0.0.1:0".to_owned(), ring).await
    }

    /// Like [`Store::open_single`], with settings and the internal address to record.
    pub async fn open_single_with(
        config: &Config,
        dir: &Path,
        advertise: String,
        ring: Ring,
    ) -> Result<(Store, Runtime), Error> {
        // Nothing else speaks to a group of one, but its internal listener still wants a secret.
        let secret = crate::crypto::random_hex(32);
        Self::open_single_secret(config, dir, advertise, &secret, ring, &Limits::default()).await
    }

    /// Like [`Store::open_single_with`], with the cluster secret the internal listener checks
    /// and where to count refusals.
    pub async fn open_single_secret(
        config: &Config,
        dir: &Path,
        advertise: String,
        secret: &str,
        ring: Ring,
        limits: &Limits,
    ) -> Result<(Store, Runtime), Error> {
        let (store, runtime) = Self::open(config, dir, secret, ring, limits)?;
        store.lead_alone(advertise).await?;
        Ok((store, runtime))
    }

    /// Forms a group of this node alone, recorded at `advertise`, unless one is formed
    /// already, and waits until this node leads it.
    pub async fn lead_alone(&self, advertise: String) -> Result<(), Error> {
        self.initialize(BTreeMap::from([(self.id(), advertise)]))
            .await?;
        let raft = self.0.raft.clone();
        self.on_runtime(async move {
            raft.wait(Some(Duration::from_secs(30)))
                .state(ServerState::Leader, "single node leads")
                .await
                .map(drop)
                .map_err(|e| Error::Unavailable(e.to_string()))
        })
        .await
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.0.id
    }

    /// Runs `hook` for every change the log applies, on this node, before the apply
    /// completes: for memory tiers that must never serve what the replica no longer holds.
    pub fn on_change(&self, hook: impl Fn(&Change) + Send + Sync + 'static) {
        self.0.changes.hook(hook);
    }

    /// The stored key of `natural` (a token, a session id) in `table`: a keyed hash, so
    /// the store never holds the natural key itself.
    pub fn key(&self, table: Table, natural: &[u8]) -> Vec<u8> {
        self.0.ring.index.hash(&[&[table.byte()], natural]).to_vec()
    }

    /// Reads `natural` from this node's replica; expired records read as absent.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        natural: &[u8],
    ) -> Result<Option<Found<T>>, Error> {
        self.get_stored(table, &self.key(table, natural))
    }

    /// Reads a record by its stored key, with the SHA-256 of its sealed value: what
    /// [`Store::replace_stored`] expects, to change it only while no other write has.
    pub fn get_stored_versioned<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<(Found<T>, Digest)>, Error> {
        Ok(self
            .open_stored(table, key)?
            .map(|(found, sealed)| (found, sha256(&sealed))))
    }

    /// Seals `value` under the stored `key` and stores it in place of the record whose
    /// sealed value has SHA-256 `expect`, keeping its deadline; stores nothing when the
    /// record is gone or another write changed it since it was read. Returns whether it
    /// was stored, once a majority has the decision on disk (this replica has then applied
    /// whatever came first, so reading again sees it).
    pub async fn replace_stored<T: Serialize>(
        &self,
        table: Table,
        key: &[u8],
        expect: Digest,
        value: &T,
    ) -> Result<bool, Error> {
        let sealed = self
            .0
            .ring
            .sealer
            .seal(&storage_key(table, key), &encode(value)?);
        let outcome = self
            .write(Command::Reseal {
                table,
                key: key.to_vec(),
                expect,
                sealed,
            })
            .await?;
        Ok(outcome.affected > 0)
    }

    /// Reads a record by its stored key.
    pub fn get_stored<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Found<T>>, Error> {
        Ok(self.open_stored(table, key)?.map(|(found, _)| found))
    }

    /// A live record by its stored key, opened, with its sealed bytes.
    fn open_stored<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Opened<T>>, Error> {
        let Some(record) = self.0.reader.get(table, key)? else {
            return Ok(None);
        };
        if record.is_expired(now_ms()) {
            return Ok(None);
        }
        let plain = self
            .0
            .ring
            .sealer
            .open(&storage_key(table, key), &record.sealed)
            .map_err(|_| Error::Sealed {
                table: table.name(),
            })?;
        let found = Found {
            value: decode(&plain)?,
            deadline_ms: record.deadline_ms,
        };
        Ok(Some((found, record.sealed)))
    }

    /// The stored key of `natural` in `table`, and `value` sealed under it: what every
    /// write of a record proposes.
    pub(super) fn key_and_sealed<T: Serialize>(
        &self,
        table: Table,
        natural: &[u8],
        value: &T,
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let key = self.key(table, natural);
        let sealed = self
            .0
            .ring
            .sealer
            .seal(&storage_key(table, &key), &encode(value)?);
        Ok((key, sealed))
    }

    /// Seals and stores `value` under `natural`; returns once a majority has it on disk.
    pub async fn put<T: Serialize>(
        &self,
        table: Table,
        natural: &[u8],
        value: &T,
        deadline_ms: Option<u64>,
    ) -> Result<Outcome, Error> {
        let (key, sealed) = self.key_and_sealed(table, natural, value)?;
        self.write(Command::Put {
            table,
            key,
            deadline_ms,
            sealed,
        })
        .await
    }

    /// The owner tag of a principal's `binding`: a keyed hash under the index key, like
    /// stored keys, so the store never holds who owns a record.
    pub fn owner(&self, binding: &[u8]) -> Owner {
        // A first part of another length than a table byte: never equal to a stored key.
        self.0.ring.index.hash(&[b"owner", binding])
    }

    /// Seals and stores `value` under `natural` for `owner`, unless `owner` already holds
    /// `limit` other records of `table` fleet-wide (see [`Command::PutOwned`]); returns
    /// whether it was stored, once a majority has the decision on disk.
    pub async fn put_owned<T: Serialize>(
        &self,
        table: Table,
        natural: &[u8],
        value: &T,
        deadline_ms: Option<u64>,
        owner: Owner,
        limit: u64,
    ) -> Result<bool, Error> {
        let (key, sealed) = self.key_and_sealed(table, natural, value)?;
        let outcome = self
            .write(Command::PutOwned {
                table,
                key,
                deadline_ms,
                sealed,
                owner,
                limit,
            })
            .await?;
        Ok(!outcome.refused)
    }

    /// How many records of `table` on this replica have an owner; cheap to call.
    pub fn owned(&self, table: Table) -> u64 {
        self.0.reader.owned(table)
    }

    /// Reads of this node's replica outside Raft, for hooks that must not hold the store.
    pub(crate) fn reader(&self) -> Reader {
        self.0.reader.clone()
    }

    /// Moves the deadline of `natural`; returns whether it existed.
    pub async fn touch(
        &self,
        table: Table,
        natural: &[u8],
        deadline_ms: Option<u64>,
    ) -> Result<bool, Error> {
        let key = self.key(table, natural);
        let outcome = self
            .write(Command::Touch {
                table,
                key,
                deadline_ms,
            })
            .await?;
        Ok(outcome.affected > 0)
    }

    /// Removes `natural`; returns whether it existed. Once this returns, this node and
    /// every other member that answers within a second have applied the removal, so none
    /// of them serves the record from its own replica or memory tier any more. (A member
    /// that does not answer is cut off, so it is not current and asks the leader first.)
    pub async fn delete(&self, table: Table, natural: &[u8]) -> Result<bool, Error> {
        let key = self.key(table, natural);
        let (outcome, _) = self
            .write_everywhere(Command::Delete { table, key })
            .await?;
        Ok(outcome.affected > 0)
    }

    /// Seals and stores `value` under `natural` like [`Store::put`], and returns only once
    /// this node and every other member that answers within a second have applied it (as
    /// [`Store::delete`] does), with the members that did not confirm. For records every
    /// node must enforce at once, such as revocations.
    pub async fn put_everywhere<T: Serialize>(
        &self,
        table: Table,
        natural: &[u8],
        value: &T,
        deadline_ms: Option<u64>,
    ) -> Result<Vec<NodeId>, Error> {
        let (key, sealed) = self.key_and_sealed(table, natural, value)?;
        let (_, unconfirmed) = self
            .write_everywhere(Command::Put {
                table,
                key,
                deadline_ms,
                sealed,
            })
            .await?;
        Ok(unconfirmed)
    }

    /// Writes `command`, then waits until this node has applied it and asks every other
    /// member to confirm it has too; returns the outcome and the members that did not
    /// confirm within a second.
    pub(super) async fn write_everywhere(
        &self,
        command: Command,
    ) -> Result<(Outcome, Vec<NodeId>), Error> {
        let inner = self.0.clone();
        self.on_runtime(async move {
            let (outcome, index) = inner.write(command).await?;
            inner.applied(index).await?;
            let unconfirmed = inner.applied_everywhere(index).await;
            Ok((outcome, unconfirmed))
        })
        .await
    }

    /// Proposes `command` through the leader, forwarding it when this node follows, and
    /// waits until it is committed and applied.
    ///
    /// A write whose answer was lost is retried, so a command may apply twice; every
    /// command is idempotent, though a retried delete then reports the record as absent.
    pub async fn write(&self, command: Command) -> Result<Outcome, Error> {
        // No task of its own on the Raft runtime: the write waits in a batching stage's
        // queue, which runs there and answers this task directly.
        self.0.write(command).await.map(|(o, _)| o)
    }

    /// The latency of this node's writes, from proposal to committed and applied.
    pub fn commit_seconds(&self) -> &Histogram {
        &self.0.commit_seconds
    }

    /// What this node measures of how its writes reach the log: writes per entry, and
    /// the log's fsyncs.
    pub(crate) fn write_metrics(&self) -> &WriteMetrics {
        &self.0.write_metrics
    }

    /// What this node, as leader, measures of the AppendEntries it sends.
    pub(crate) fn append_metrics(&self) -> &AppendMetrics {
        &self.0.append_metrics
    }

    /// Writes this node started and has not finished.
    pub fn pending_writes(&self) -> usize {
        self.0.pending.count()
    }

    /// How long this node's commit index has stood still while writes it started were
    /// pending, when that is longer than `raft.write_timeout`: the fleet cannot commit
    /// what this node proposes, and every write through it will be refused.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.0
            .pending
            .stalled(self.0.committed.index(), Instant::now())
    }

    /// Waits until this replica has applied everything committed before the call.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let inner = self.0.clone();
        self.on_runtime(async move { inner.shared_read_barrier().await })
            .await
    }

    pub(super) async fn on_runtime<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        self.0
            .runtime
            .spawn(fut)
            .await
            .map_err(|e| Error::Unavailable(format!("the Raft runtime stopped: {e}")))?
    }

    /// Re-seals every record of this replica sealed with another key than the active one;
    /// returns how many were re-sealed. Safe while the fleet serves: a record written
    /// meanwhile is left as it is.
    pub async fn reseal(&self) -> Result<u64, Error> {
        let active = self.0.ring.sealer.active();
        let mut ops = Vec::new();
        // Key-check values are sealed with each key on purpose: never re-sealed.
        for table in Table::ALL.into_iter().filter(|t| *t != Table::KeyCheck) {
            for (key, record) in self.0.reader.scan(table)? {
                if Sealer::key_id(&record.sealed) == Some(active) {
                    continue;
                }
                let aad = storage_key(table, &key);
                let Ok(plain) = self.0.ring.sealer.open(&aad, &record.sealed) else {
                    tracing::warn!(
                        table = table.name(),
                        "a record cannot be opened with this ring; left as it is"
                    );
                    continue;
                };
                ops.push(Op::Reseal {
                    table,
                    expect: sha256(&record.sealed),
                    sealed: self.0.ring.sealer.seal(&aad, &plain),
                    key,
                });
            }
        }
        let mut resealed = 0;
        for batch in self.batches(ops) {
            resealed += self.write(Command::Batch(batch)).await?.affected;
        }
        Ok(resealed)
    }

    /// `ops` in batches whose entries stay within `raft.max_entry_bytes`. An op too large
    /// for any batch (a record stored before the cap existed) is left out, with a warning.
    fn batches(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        let cap = self.0.max_entry_bytes;
        let mut batches = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = BATCH_OVERHEAD;
        for op in ops {
            let size = encoded_len(&op);
            if BATCH_OVERHEAD.saturating_add(size) > cap {
                tracing::warn!(
                    size,
                    cap,
                    "a record too large for one log entry is not re-sealed; left as it is"
                );
                continue;
            }
            if bytes + size > cap {
                batches.push(std::mem::take(&mut batch));
                bytes = BATCH_OVERHEAD;
            }
            bytes += size;
            batch.push(op);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// Number of live and expired-but-not-yet-removed records in `table` on this replica.
    pub fn count(&self, table: Table) -> usize {
        self.0.reader.count(table)
    }

    /// The pooled client for calls to other nodes.
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// The Raft member, for the internal listener.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.0.raft
    }

    /// Leader side of a forwarded write: the outcome and the entry's log index.
    pub(crate) async fn write_as_leader(
        &self,
        command: Command,
    ) -> Result<(Outcome, u64), Refusal> {
        if self.0.stepping_down.load(Ordering::Acquire) {
            return Err(Refusal::NotLeader);
        }
        self.0.lead(command).await
    }

    /// Leader side of writes a follower forwarded together: an answer for each, in order.
    /// Each is checked on its own, and they wait in the proposer's queue together, so they
    /// share an entry (with whatever else waits) unless one is refused.
    pub(crate) async fn write_all_as_leader(&self, commands: Vec<Command>) -> Vec<Answer> {
        if self.0.stepping_down.load(Ordering::Acquire) {
            return vec![Err(Refusal::NotLeader); commands.len()];
        }
        let writes = commands.into_iter().map(|command| self.0.lead(command));
        futures_util::future::join_all(writes).await
    }

    /// Whether this replica applies log index `index` within a second (asked by a member
    /// that removed a record).
    pub(crate) async fn wait_applied(&self, index: u64) -> bool {
        let inner = self.0.clone();
        self.on_runtime(async move { Ok(inner.wait_applied(index).await) })
            .await
            .unwrap_or(false)
    }

    /// Leader side of a read index request: the index a reader must have applied.
    pub(crate) async fn read_index(&self) -> Result<Option<u64>, Refusal> {
        if self.0.stepping_down.load(Ordering::Acquire) {
            return Err(Refusal::NotLeader);
        }
        let raft = self.0.raft.clone();
        let timeout = self.0.write_timeout;
        let task = self.0.runtime.spawn(async move {
            match tokio::time::timeout(timeout, raft.get_read_log_id()).await {
                Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index)),
                Ok(Err(RaftError::APIError(_))) => Err(Refusal::NotLeader),
                Ok(Err(e)) => Err(Refusal::Failed(e.to_string())),
                Err(_) => Err(Refusal::Failed("no quorum confirmed leadership".into())),
            }
        });
        task.await
            .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())))
    }

    /// Stops Raft, leaves the owner index's counts for the next open, and flushes the
    /// replica.
    pub async fn shutdown(&self) {
        let inner = self.0.clone();
        let _ = self
            .on_runtime(async move {
                let _ = inner.raft.shutdown().await;
                if let Err(e) = inner.closer.close() {
                    // The next open counts again, as after a crash.
                    tracing::warn!(error = %e, "could not keep the owner index's counts");
                }
                let _ = inner.db.flush_async().await;
                Ok(())
            })
            .await;
    }

    /// Notices pauses of this process: a tick that comes late means every thread stood
    /// still, and what the leader said before then is old news.
    fn spawn_watchdog(&self) {
        let weak = Arc::downgrade(&self.0);
        let _ = std::thread::Builder::new()
            .name("raft-watchdog".into())
            .spawn(move || loop {
                let Some(inner) = weak.upgrade() else { return };
                let now = now_ms();
                let last = inner.contact.tick_ms.swap(now, Ordering::AcqRel);
                if last != 0 && now.saturating_sub(last) > PAUSE_GAP_MS {
                    inner.contact.resumed_ms.store(now, Ordering::Release);
                }
                inner
                    .pending
                    .note_commit(inner.committed.index(), Instant::now());
                drop(inner);
                std::thread::sleep(TICK);
            });
    }

    fn spawn_expiry(&self, every: Duration) {
        let weak = Arc::downgrade(&self.0);
        self.0.runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.raft.metrics().borrow().state != ServerState::Leader {
                    continue;
                }
                let now = now_ms();
                if inner.reader.earliest_deadline().is_none_or(|d| d > now) {
                    continue;
                }
                match inner.lead(Command::Expire { now_ms: now }).await {
                    Ok((outcome, _)) => {
                        tracing::debug!(count = outcome.affected, "expired records")
                    }
                    Err(e) => tracing::warn!(error = ?e, "could not propose expiry"),
                }
            }
        });
    }
}

impl Inner {
    /// Proposes `command` as this node, leader or not (a follower's proposal comes back
    /// `NotLeader`), through the proposer: it shares an entry with whatever writes wait
    /// with it. Checked here, for commands that come from other nodes: a follower with a
    /// larger cap (or an older version) must not slip an entry past this leader's.
    async fn lead(&self, command: Command) -> Answer {
        let size = match self.check(&command) {
            Ok(size) => size,
            Err(Error::TooLarge { size, cap }) => {
                return Err(Refusal::TooLarge {
                    size: size as u64,
                    cap: cap as u64,
                })
            }
            Err(e) => return Err(Refusal::Failed(e.to_string())),
        };
        self.writers
            .proposer
            .submit((), command, size + PER_WRITE_OVERHEAD)
            .await
            .unwrap_or_else(|| Err(Refusal::Failed("the proposer has stopped".into())))
    }

    /// The current leader, waiting (until `deadline`) while there is none; refused at once
    /// while this node is cut off from its group (see [`Store::cut_off`]).
    async fn leader_until(&self, deadline: Instant) -> Result<(NodeId, String), Error> {
        let mut metrics = self.raft.metrics();
        loop {
            if self.ballots.is_cut_off() {
                return Err(Error::Unavailable(self.cut_off_reason()));
            }
            {
                let m = metrics.borrow_and_update();
                if let Some(id) = m.current_leader {
                    if let Some(node) = m.membership_config.membership().get_node(&id) {
                        return Ok((id, node.addr.clone()));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unavailable("no leader is known".into()));
            }
            // Also wakes up now and then to notice being cut off.
            let wait = left.min(CUT_OFF_RECHECK);
            if let Ok(Err(_)) = tokio::time::timeout(wait, metrics.changed()).await {
                // The sender is gone: Raft has shut down, and no leader will come.
                return Err(Error::Unavailable("the Raft member has stopped".into()));
            }
        }
    }

    /// Asks every other member to wait (up to a second) until it has applied `index`;
    /// returns those that did not confirm it.
    async fn applied_everywhere(&self, index: u64) -> Vec<NodeId> {
        let members: Vec<(NodeId, String)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        let asks = members.iter().map(|(id, addr)| async move {
            let answer = self
                .client
                .call::<_, bool>(addr, path::APPLIED, &index, APPLIED_WAIT)
                .await;
            if matches!(answer, Ok(true)) {
                return None;
            }
            tracing::debug!(
                node = id,
                index,
                "a member did not confirm it applied a write"
            );
            Some(*id)
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Member side of [`Inner::applied_everywhere`]: whether `index` is applied here within
    /// a second.
    pub(super) async fn wait_applied(&self, index: u64) -> bool {
        self.raft
            .wait(Some(APPLIED_WAIT))
            .applied_index_at_least(Some(index), "another member's removal")
            .await
            .is_ok()
    }

    /// Waits until this replica has applied log index `index`.
    async fn applied(&self, index: u64) -> Result<(), Error> {
        self.raft
            .wait(Some(self.write_timeout))
            .applied_index_at_least(Some(index), "read your own write")
            .await
            .map(drop)
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// The encoded size of `command`; refuses a command whose log entry would be over
    /// `raft.max_entry_bytes`, and a group, which only the proposer makes.
    fn check(&self, command: &Command) -> Result<usize, Error> {
        if matches!(command, Command::Group(_)) {
            // A group inside a group would stop every replica's state machine.
            return Err(Error::Encoding("a group is not a write".into()));
        }
        let size = encoded_len(command);
        if size <= self.max_entry_bytes {
            return Ok(size);
        }
        self.limits.refused(MAX_ENTRY_BYTES);
        tracing::warn!(
            size,
            cap = self.max_entry_bytes,
            "refused a write over raft.max_entry_bytes"
        );
        Err(Error::TooLarge {
            size,
            cap: self.max_entry_bytes,
        })
    }

    /// Proposes `command` through the leader (forwarding it when this node follows) until
    /// it commits or `raft.write_timeout` passes. A write that times out without the
    /// commit index moving at all leaves a probe behind (see [`Inner::probe`]).
    pub(super) async fn write(self: &Arc<Self>, command: Command) -> Result<(Outcome, u64), Error> {
        let size = self.check(&command)?;
        let pending = self.pending.begin(Instant::now());
        let committed = self.committed.index();
        let started = Instant::now();
        let result = self.attempt(command, size).await;
        match &result {
            Ok(_) => self.commit_seconds.observe(started.elapsed().as_secs_f64()),
            Err(Error::Unavailable(_)) if self.committed.index() == committed => {
                self.probe(pending)
            }
            Err(_) => {}
        }
        result
    }

    /// Keeps a write pending on a node whose write just timed out with no commit advance,
    /// until commits advance again: a tiny no-op (an empty batch), proposed again and again.
    /// Without it, a stalled node that a balancer has stopped sending writes to would have
    /// none pending, look ready, get traffic back, and refuse it again; with it, `/ready`
    /// stays 503 until the fleet commits, and the probe's own commit is what ends it even
    /// when nobody else writes. One probe at a time per node.
    fn probe(self: &Arc<Self>, pending: super::pending::Guard) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            node = self.id,
            "a write timed out and nothing committed meanwhile; probing until commits advance"
        );
        let weak = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let _pending = pending;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let committed = inner.committed.index();
                let probe = Command::Batch(Vec::new());
                let size = encoded_len(&probe);
                let done = inner.attempt(probe, size).await.is_ok()
                    || inner.committed.index() != committed;
                if done {
                    inner.probing.store(false, Ordering::Release);
                    tracing::info!(node = inner.id, "commits advance again");
                    return;
                }
                drop(inner);
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        });
    }

    /// One write of `size` encoded bytes, through the leader, retried until
    /// `raft.write_timeout`.
    async fn attempt(&self, command: Command, size: usize) -> Result<(Outcome, u64), Error> {
        let deadline = Instant::now() + self.write_timeout;
        let mut last = String::from("no leader is known");
        let stopped = || Err(Refusal::Failed("the Raft member has stopped".into()));
        while Instant::now() < deadline {
            let (leader, addr) = self.leader_until(deadline).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let bytes = size + PER_WRITE_OVERHEAD;
            let answer = if leader == self.id {
                let proposed = self.writers.proposer.submit((), command.clone(), bytes);
                tokio::time::timeout(left, proposed).await
            } else {
                let forwarded = self.writers.forwarder.submit(addr, command.clone(), bytes);
                // A leader that vanished leaves the forward hanging: go to its successor.
                match self
                    .unless_leader_changes(leader, tokio::time::timeout(left, forwarded))
                    .await
                {
                    Some(answer) => answer,
                    None => Ok(Some(Err(Refusal::NotLeader))),
                }
            };
            let attempt = match answer {
                Ok(Some(answer)) => answer,
                Ok(None) => stopped(),
                Err(_) => Err(Refusal::Failed(
                    "the write was not committed in time".into(),
                )),
            };
            match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(Refusal::NotLeader) => last = format!("node {leader} is no longer the leader"),
                Err(Refusal::Failed(why)) => last = why,
                Err(Refusal::TooLarge { size, cap }) => {
                    return Err(Error::TooLarge {
                        size: size as usize,
                        cap: cap as usize,
                    })
                }
            }
            self.leader_other_than(leader, RETRY_PAUSE).await;
        }
        Err(Error::Unavailable(last))
    }

    /// A read barrier shared by every caller waiting for one: at most one is in flight per
    /// node, and one that began after a caller arrived serves that caller too. A flood of
    /// unknown session ids therefore costs the leader one confirmation round at a time,
    /// not one per request.
    pub(super) async fn shared_read_barrier(&self) -> Result<(), Error> {
        let ticket = self.barriers.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.barriers.turn.lock().await;
        if self.barriers.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        if let Some((failed, why)) = &*self
            .barriers
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            if *failed >= ticket {
                return Err(Error::Unavailable(why.clone()));
            }
        }
        // Everyone who arrived before this barrier starts is served by it.
        let covers = self.barriers.arrived.load(Ordering::SeqCst);
        self.barriers.rounds.fetch_add(1, Ordering::Relaxed);
        let began = now_ms();
        if let Err(e) = self.read_barrier().await {
            let why = match &e {
                Error::Unavailable(why) => why.clone(),
                other => other.to_string(),
            };
            *self
                .barriers
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((covers, why));
            return Err(e);
        }
        self.contact.verified_ms.fetch_max(began, Ordering::AcqRel);
        self.barriers.covered.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }

    async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.write_timeout;
        let mut last = String::from("no leader is known");
        while Instant::now() < deadline {
            let (leader, addr) = self.leader_until(deadline).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let index = if leader == self.id {
                match tokio::time::timeout(left, self.raft.get_read_log_id()).await {
                    Ok(Ok((read, _))) => Ok(read.map(|l| l.index)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no quorum confirmed leadership".to_owned()),
                }
            } else {
                let call = self.client.call::<_, Result<Option<u64>, Refusal>>(
                    &addr,
                    path::READ_INDEX,
                    &(),
                    left,
                );
                match self.unless_leader_changes(leader, call).await {
                    Some(Ok(Ok(index))) => Ok(index),
                    Some(Ok(Err(Refusal::NotLeader))) | None => {
                        Err(format!("node {leader} is not the leader"))
                    }
                    Some(Ok(Err(Refusal::Failed(why)))) => Err(why),
                    Some(Ok(Err(refusal @ Refusal::TooLarge { .. }))) => {
                        Err(format!("unexpected answer to a read index: {refusal:?}"))
                    }
                    Some(Err(e)) => Err(e.to_string()),
                }
            };
            match index {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    return self
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(index, "linearizable read")
                        .await
                        .map(drop)
                        .map_err(|e| Error::Unavailable(e.to_string()));
                }
                Err(why) => last = why,
            }
            self.leader_other_than(leader, RETRY_PAUSE).await;
        }
        Err(Error::Unavailable(last))
    }
}

/// The encoded size of `command`: what its log entry carries.
fn encoded_len(value: &impl Serialize) -> usize {
    // Encoding a command or op cannot fail (no maps with odd keys, no unsized sequences);
    // were it to, the entry could not be proposed either, so count it as too large.
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![VALUE_V1];
    out.extend(postcard::to_stdvec(value).map_err(|e| Error::Encoding(e.to_string()))?);
    Ok(out)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| Error::Encoding(e.to_string()))
        }
        Some((&other, _)) => Err(Error::Encoding(format!("unknown value format {other}"))),
        None => Err(Error::Encoding("empty value".into())),
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
