//! The Raft log, vote, committed and purged log ids in files of their own under
//! `<data_dir>/raft-log/` (see `wal`), durable before openraft is told they are. A data
//! dir whose log is still in sled's trees (`raft_log`, `raft_meta`) has it moved over once
//! on open.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers here return
// the same type so `?` needs no conversions. Storage errors are rare and stop the node, so
// boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::command::{from_stored, to_stored};
use super::wal::{Wal, FORMAT_V1};
use super::{NodeId, StorageError, TypeConfig};
use crate::durable::sync_dir;

/// The log's directory inside the data dir.
pub(super) const LOG_DIR: &str = "raft-log";

/// The file sled keeps its database in, in the directory it is opened on.
const SLED_FILE: &str = "db";

/// Where versions before the log's own files kept it, in sled.
const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
/// Entries moved from sled per append to the new log.
const MOVE_BATCH: usize = 256;

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

/// The Raft log storage: entries, vote, committed and purged log ids in the log's own
/// files (see `wal`), each made durable with `fdatasync` before openraft is told it is.
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
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

/// Who waits for the next sync: an append's callback, or a vote being saved.
enum Waiter {
    Append(LogFlushed<TypeConfig>),
    Vote(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Group commit: appends and votes hand their waiters to one thread, which syncs the log
/// once for every waiter queued so far and then answers them in order. openraft awaits
/// `append` inside its core loop, so a sync there would stall every other message for its
/// duration; here the loop moves on and one `fdatasync` covers many appends.
#[derive(Clone)]
struct Flusher(mpsc::Sender<Waiter>);

impl Flusher {
    fn start(wal: Arc<Wal>, metrics: FlushMetrics) -> Self {
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                // Ends when every LogStore clone (every sender) is gone.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    // Everything the waiters stand for was written before they were queued,
                    // so this one sync makes all of it durable.
                    let started = Instant::now();
                    let result = wal.sync().map_err(|e| e.to_string());
                    metrics.seconds.observe(started.elapsed().as_secs_f64());
                    metrics.appends.observe(waiting.len() as f64);
                    for waiter in waiting {
                        match waiter {
                            Waiter::Append(callback) => callback
                                .log_io_completed(result.clone().map_err(std::io::Error::other)),
                            Waiter::Vote(tx) => {
                                let _ = tx.send(result.clone());
                            }
                        }
                    }
                }
            })
            .expect("the operating system could not start the log flusher thread");
        Self(tx)
    }

    fn queue(&self, waiter: Waiter) -> Result<(), StorageError> {
        self.0.send(waiter).map_err(|_| {
            let e = std::io::Error::other("the log flusher thread has stopped");
            StorageIOError::write_logs(&e).into()
        })
    }
}

/// The log's files, opened before the node's sled database; see [`LogStore::open_files`].
pub struct LogFiles(Option<Wal>);

impl LogStore {
    /// Opens the log under `data_dir` (in `raft-log/`), first moving a log that `db`, the
    /// node's sled database there, still holds from an older version.
    pub fn open(data_dir: &Path, db: &sled::Db) -> Result<LogStore, StorageError> {
        Self::open_with(data_dir, db, LogFiles(None))
    }

    /// Opens the log's files under `data_dir` when no older version's log can be waiting
    /// in sled to be moved: `raft-log/` is there already, or there is no sled database
    /// yet (a new data dir). Needs no sled, so it runs while sled recovers its own (each
    /// takes milliseconds on a restart); [`LogStore::open_with`] finishes the open.
    pub fn open_files(data_dir: &Path) -> Result<LogFiles, StorageError> {
        let dir = data_dir.join(LOG_DIR);
        let nothing_to_move =
            dir.is_dir() || !(data_dir.join(SLED_FILE).exists() || moving_dir(data_dir).exists());
        if nothing_to_move {
            Ok(LogFiles(Some(Wal::open(&dir)?)))
        } else {
            Ok(LogFiles(None))
        }
    }

    /// [`LogStore::open`] with the files [`LogStore::open_files`] opened, if it did.
    pub fn open_with(
        data_dir: &Path,
        db: &sled::Db,
        files: LogFiles,
    ) -> Result<LogStore, StorageError> {
        let dir = data_dir.join(LOG_DIR);
        let wal = match files.0 {
            Some(wal) => wal,
            None => {
                if !dir.is_dir() {
                    migrate(data_dir, &dir, db)?;
                }
                Wal::open(&dir)?
            }
        };
        // The move is done (by this open or one a crash ended after the rename): the old
        // trees go. sled drops a tree in one step, so a crash leaves both or neither.
        for name in [LOG_TREE, META_TREE] {
            if has_tree(db, name) {
                db.drop_tree(name)
                    .map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))?;
            }
        }
        let wal = Arc::new(wal);
        let flush_metrics = FlushMetrics::new();
        let store = LogStore {
            committed: Committed::default(),
            flusher: Flusher::start(wal.clone(), flush_metrics.clone()),
            flush_metrics,
            read_budget: usize::MAX,
            appended: Arc::default(),
            wal,
        };
        store.committed.set(store.wal.committed().as_ref());
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

    /// How many segment files the log has.
    #[cfg(test)]
    pub(super) fn segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// Begins a new segment file once the active one holds `bytes` (16 MiB otherwise).
    #[cfg(test)]
    pub(super) fn with_segment_bytes(self, bytes: u64) -> Self {
        self.wal.set_segment_bytes(bytes);
        self
    }

    /// The entries of `[start, end)`, read from their files, stopping before the one that
    /// would take the bytes read past `budget` (the first is read whatever its size).
    fn read(
        &self,
        start: u64,
        end: u64,
        budget: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for slot in self.wal.slots(start, end) {
            bytes = bytes.saturating_add(slot.size());
            if !entries.is_empty() && bytes > budget {
                break;
            }
            entries.push(decode_entry(slot.index, &slot.read()?)?);
        }
        Ok(entries)
    }
}

/// Moves the log an older version kept in sled's trees into a new log directory `dir`:
/// written in full beside it, synced, then renamed into place, so a crash midway leaves
/// the old trees in charge and the move starts over. Without such trees (a new data dir)
/// there is nothing to move: only a temporary directory a crash left is removed.
fn migrate(data_dir: &Path, dir: &Path, db: &sled::Db) -> Result<(), StorageError> {
    let io_err = |e: std::io::Error| StorageError::from(StorageIOError::write_logs(&e));
    let sled_err = |e: sled::Error| StorageError::from(StorageIOError::read_logs(&e));
    let temp = moving_dir(data_dir);
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(io_err)?;
    }
    if has_tree(db, LOG_TREE) || has_tree(db, META_TREE) {
        let log = db.open_tree(LOG_TREE).map_err(sled_err)?;
        let meta = db.open_tree(META_TREE).map_err(sled_err)?;
        let read_id = |key: &[u8]| -> Result<Option<LogId<NodeId>>, StorageError> {
            match meta.get(key).map_err(sled_err)? {
                Some(bytes) => from_stored(FORMAT_V1, &bytes)
                    .map(Some)
                    .map_err(|e| StorageIOError::read_logs(e).into()),
                None => Ok(None),
            }
        };
        let wal = Wal::open(&temp)?;
        if let Some(purged) = read_id(PURGED)? {
            wal.purge(purged)?;
        }
        let mut batch = Vec::new();
        let mut moved = 0u64;
        for item in log.iter() {
            let (key, bytes) = item.map_err(sled_err)?;
            let index = decode_key(&key)?;
            let log_id = decode_entry(index, &bytes)?.log_id;
            batch.push((log_id, bytes.to_vec()));
            if batch.len() == MOVE_BATCH {
                wal.append(&std::mem::take(&mut batch))?;
            }
            moved += 1;
        }
        wal.append(&batch)?;
        if let Some(bytes) = meta.get(VOTE).map_err(sled_err)? {
            let vote: Vote<NodeId> =
                from_stored(FORMAT_V1, &bytes).map_err(StorageIOError::read_vote)?;
            wal.save_vote(&vote)?;
        }
        wal.save_committed(read_id(COMMITTED)?)?;
        wal.sync().map_err(io_err)?;
        tracing::info!(
            entries = moved,
            "moved the Raft log out of sled into its own files"
        );
    } else {
        // A new data dir: nothing to move, and `Wal::open` makes the log where it belongs.
        // A crash while it does leaves a directory without a segment, or a segment
        // without its header, and the next open begins it again.
        return Ok(());
    }
    std::fs::rename(&temp, dir).map_err(io_err)?;
    sync_dir(data_dir).map_err(io_err)?;
    Ok(())
}

/// Where [`migrate`] builds the log's files before it renames them into place.
fn moving_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(format!("{LOG_DIR}.new"))
}

/// Whether `db` has a tree named `name`.
fn has_tree(db: &sled::Db, name: &str) -> bool {
    db.tree_names()
        .iter()
        .any(|n| n.as_ref() == name.as_bytes())
}

fn decode_key(key: &[u8]) -> Result<u64, StorageError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StorageIOError::read_logs(AnyError::error("log key is not 8 bytes")).into())
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError> {
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
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.read(start, end, usize::MAX)
    }

    /// The entries of `[start, end)` up to the read budget: the first always, then each
    /// that keeps the stored bytes read within it. openraft sends what this returns and asks
    /// again for the rest.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.read(start, end, self.read_budget)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.wal.purged();
        // After a purge past every present entry the log is empty: the last log id is then
        // the purged one, as openraft requires.
        let last_log_id = self.wal.last().or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.wal.save_vote(vote)?;
        // A vote must survive a crash before this node acts on it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flusher.queue(Waiter::Vote(tx))?;
        let synced = rx
            .await
            .unwrap_or_else(|_| Err("the log flusher thread has stopped".to_owned()));
        synced.map_err(|e| StorageIOError::write_vote(AnyError::error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.wal.vote())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        // No sync: the committed id is an optimisation for restart, and a lost one only
        // means openraft re-learns it from the leader. Written after the entries it covers,
        // it never survives a crash without them.
        self.wal.save_committed(committed)?;
        self.committed.set(committed.as_ref());
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.wal.committed())
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
        let mut stored = Vec::new();
        let mut size = 0;
        for entry in entries {
            let bytes = to_stored(FORMAT_V1, &entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, e))?;
            size += bytes.len() as u64;
            stored.push((entry.log_id, bytes));
        }
        self.appended.fetch_add(size, Ordering::Relaxed);
        self.wal.append(&stored)?;
        // openraft counts a log entry towards the quorum once the callback fires, so it
        // fires only after a sync that began after these entries were written.
        self.flusher.queue(Waiter::Append(callback))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.wal.truncate(log_id.index)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.wal.purge(log_id)
    }
}
