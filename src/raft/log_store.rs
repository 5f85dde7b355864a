//! The Raft log, vote, committed and purged log ids in sled, durable before openraft is
//! told they are.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers here return
// the same type so `?` needs no conversions. Storage errors are rare and stop the node, so
// boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageIOError,
    Vote,
};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::command::{from_stored, to_stored};
use super::{NodeId, StorageError, TypeConfig};

/// Format byte in front of every value this store writes; bump it when a shape changes.
const FORMAT_V1: u8 = 1;

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// Log entries removed per sled batch by a purge or truncation.
const REMOVE_BATCH: usize = 256;

/// The committed log index, shared in memory for readiness checks without touching disk.
#[derive(Clone, Debug, Default)]
pub struct Committed(Arc<AtomicU64>);

impl Committed {
    /// The index of the last committed log entry, if any entry is known to be committed.
    pub fn index(&self) -> Option<u64> {
        // Stored as index + 1 so that 0 can mean "none".
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, log_id: Option<&LogId<NodeId>>) {
        let raw = log_id.map_or(0, |id| id.index.saturating_add(1));
        self.0.store(raw, Ordering::Release);
    }
}

/// The Raft log storage over one shared `sled::Db`: entries in `raft_log`, the vote and
/// log pointers in `raft_meta`.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    committed: Committed,
    flusher: Flusher,
    flush_metrics: FlushMetrics,
    /// Most bytes of stored entries one replication read returns (at least one entry).
    read_budget: usize,
    /// Bytes of entries appended since this store opened, for the snapshot policy.
    appended: Arc<AtomicU64>,
}

/// What the log store measures of its fsyncs: how long each took and how many appends
/// each made durable.
#[derive(Clone)]
pub struct FlushMetrics {
    /// Seconds of each flush.
    pub(super) seconds: Histogram,
    /// Appends each flush covered.
    pub(super) appends: Histogram,
}

impl FlushMetrics {
    fn new() -> Self {
        Self {
            seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            appends: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
        }
    }
}

/// Group commit: appends hand their callbacks to one thread, which fsyncs once for every
/// callback queued so far and then fires them in order. openraft awaits `append` inside
/// its core loop, so an fsync there would stall every other message for its duration; here
/// the loop moves on and one fsync covers many appends.
#[derive(Clone)]
struct Flusher(mpsc::Sender<(sled::Db, LogFlushed<TypeConfig>)>);

impl Flusher {
    fn start(metrics: FlushMetrics) -> Self {
        let (tx, rx) = mpsc::channel::<(sled::Db, LogFlushed<TypeConfig>)>();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                // Ends when every LogStore clone (every sender) is gone. The thread holds the
                // database only while it flushes, so closing the store releases sled's lock.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    // Everything the callbacks stand for was written before they were queued,
                    // so this one flush makes all of it durable.
                    let started = Instant::now();
                    let result = waiting[0].0.flush();
                    metrics.seconds.observe(started.elapsed().as_secs_f64());
                    metrics.appends.observe(waiting.len() as f64);
                    let callbacks: Vec<_> = waiting.into_iter().map(|(_, cb)| cb).collect();
                    for callback in callbacks {
                        callback.log_io_completed(match &result {
                            Ok(_) => Ok(()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        });
                    }
                }
            })
            .expect("the operating system could not start the log flusher thread");
        Self(tx)
    }

    fn queue(&self, db: &sled::Db, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError> {
        self.0.send((db.clone(), callback)).map_err(|_| {
            let e = std::io::Error::other("the log flusher thread has stopped");
            StorageIOError::write_logs(&e).into()
        })
    }
}

impl LogStore {
    /// Opens the log trees of `db`, loading the committed index into memory.
    pub fn open(db: &sled::Db) -> Result<LogStore, StorageError> {
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| StorageError::from(StorageIOError::read(&e)))
        };
        let flush_metrics = FlushMetrics::new();
        let store = LogStore {
            db: db.clone(),
            log: open(LOG_TREE)?,
            meta: open(META_TREE)?,
            committed: Committed::default(),
            flusher: Flusher::start(flush_metrics.clone()),
            flush_metrics,
            read_budget: usize::MAX,
            appended: Arc::default(),
        };
        let committed = store.read_log_id(COMMITTED)?;
        store.committed.set(committed.as_ref());
        Ok(store)
    }

    /// Bounds what one replication read loads: entries up to `bytes` of stored size (and
    /// always at least one). openraft reads the range it means to send, up to 300 entries,
    /// before the network's byte budget can split it; without this bound a leader behind
    /// several followers would hold up to 300 of the largest entries per follower at once.
    pub fn with_read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes.max(1);
        self
    }

    /// Bytes of entries appended since this store opened (see `compaction`).
    pub(super) fn appended(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    /// A handle on the committed index, updated whenever openraft saves it.
    pub fn committed(&self) -> Committed {
        self.committed.clone()
    }

    /// What this store measures of its fsyncs.
    pub fn flush_metrics(&self) -> FlushMetrics {
        self.flush_metrics.clone()
    }

    fn read_log_id(&self, key: &[u8]) -> Result<Option<LogId<NodeId>>, StorageError> {
        let read_err = |e: AnyError| StorageError::from(StorageIOError::read(e));
        match self.meta.get(key).map_err(|e| read_err((&e).into()))? {
            Some(bytes) => from_stored(FORMAT_V1, &bytes).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn write_log_id(&self, key: &[u8], log_id: Option<&LogId<NodeId>>) -> Result<(), StorageError> {
        let write_err = |e: AnyError| StorageError::from(StorageIOError::write(e));
        match log_id {
            Some(id) => {
                let bytes = to_stored(FORMAT_V1, id).map_err(write_err)?;
                self.meta.insert(key, bytes)
            }
            None => self.meta.remove(key),
        }
        .map_err(|e| write_err((&e).into()))?;
        Ok(())
    }

    /// The log id of the last entry present in the log.
    fn last_present(&self) -> Result<Option<LogId<NodeId>>, StorageError> {
        let last = self.log.last().map_err(|e| StorageIOError::read_logs(&e))?;
        match last {
            Some((key, bytes)) => Ok(Some(decode_entry(&key, &bytes)?.log_id)),
            None => Ok(None),
        }
    }

    /// Removes every entry whose key falls in `range`, [`REMOVE_BATCH`] at a time: sled
    /// keeps every node version a batch replaces until the batch ends, so purging the
    /// thousands of entries a snapshot covers in one batch cost hundreds of megabytes.
    /// Entries go from the end of the range that borders the rest of the log outwards
    /// (`from_end` for a truncation), so that after a crash between two batches, sled
    /// having kept a prefix of them, the log is still contiguous.
    fn remove_range(
        &self,
        range: (Bound<[u8; 8]>, Bound<[u8; 8]>),
        from_end: bool,
    ) -> Result<(), StorageError> {
        let delete_err = |e: &sled::Error| {
            StorageIOError::<NodeId>::new(ErrorSubject::Logs, ErrorVerb::Delete, e)
        };
        let keys = self.log.range(range).keys();
        let mut keys: Box<dyn Iterator<Item = _>> = if from_end {
            Box::new(keys.rev())
        } else {
            Box::new(keys)
        };
        loop {
            let mut batch = sled::Batch::default();
            let mut count = 0;
            for key in keys.by_ref().take(REMOVE_BATCH) {
                batch.remove(key.map_err(|e| delete_err(&e))?);
                count += 1;
            }
            if count == 0 {
                return Ok(());
            }
            self.log.apply_batch(batch).map_err(|e| delete_err(&e))?;
        }
    }
}

/// The sled key of log index `index`: big-endian so that key order is index order.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError> {
    let index = key
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StorageIOError::read_logs(AnyError::error("log key is not 8 bytes")))?;
    let entry: Entry<TypeConfig> =
        from_stored(FORMAT_V1, bytes).map_err(|e| StorageIOError::read_log_at_index(index, e))?;
    if entry.log_id.index != index {
        let msg = format!("entry under index {index} has id {}", entry.log_id);
        return Err(StorageIOError::read_log_at_index(index, AnyError::error(msg)).into());
    }
    Ok(entry)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let range = (
            range.start_bound().map(|&i| log_key(i)),
            range.end_bound().map(|&i| log_key(i)),
        );
        let mut entries = Vec::new();
        for item in self.log.range(range) {
            let (key, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(decode_entry(&key, &bytes)?);
        }
        Ok(entries)
    }

    /// The entries of `[start, end)` up to the read budget: the first always, then each
    /// that keeps the stored bytes read within it. openraft sends what this returns and asks
    /// again for the rest.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        let mut bytes = 0usize;
        for item in self.log.range(log_key(start)..log_key(end)) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            bytes = bytes.saturating_add(value.len());
            if !entries.is_empty() && bytes > self.read_budget {
                break;
            }
            entries.push(decode_entry(&key, &value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_log_id(PURGED)?;
        // After a purge past every present entry the log is empty: the last log id is then
        // the purged one, as openraft requires.
        let last_log_id = self.last_present()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = to_stored(FORMAT_V1, vote).map_err(StorageIOError::write_vote)?;
        self.meta
            .insert(VOTE, bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        // A vote must survive a crash before this node acts on it.
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        match self
            .meta
            .get(VOTE)
            .map_err(|e| StorageIOError::read_vote(&e))?
        {
            Some(bytes) => Ok(Some(
                from_stored(FORMAT_V1, &bytes).map_err(StorageIOError::read_vote)?,
            )),
            None => Ok(None),
        }
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        // No flush: the committed id is an optimisation for restart, and a lost one only
        // means openraft re-learns it from the leader.
        self.write_log_id(COMMITTED, committed.as_ref())?;
        self.committed.set(committed.as_ref());
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        self.read_log_id(COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut size = 0;
        for entry in entries {
            let bytes = to_stored(FORMAT_V1, &entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, e))?;
            size += bytes.len() as u64;
            batch.insert(&log_key(entry.log_id.index), bytes);
        }
        self.appended.fetch_add(size, Ordering::Relaxed);
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // openraft counts a log entry towards the quorum once the callback fires, so it
        // fires only after an fsync that began after this batch was written.
        self.flusher.queue(&self.db, callback)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.remove_range(
            (Bound::Included(log_key(log_id.index)), Bound::Unbounded),
            true,
        )
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Record the purge point before removing entries: sled recovers a prefix of writes,
        // so a crash in between leaves entries that are merely redundant, never a log whose
        // start is unknown.
        self.write_log_id(PURGED, Some(&log_id))?;
        self.remove_range(
            (Bound::Unbounded, Bound::Included(log_key(log_id.index))),
            false,
        )
    }
}
