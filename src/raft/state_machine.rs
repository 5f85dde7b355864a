//! The state machine: sealed records in sled trees (see `trees`), and snapshots streamed
//! between those trees and files (see `snapshot`): built while entries keep being applied,
//! checked in full before an install, and kept one at a time.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers here return
// the same type so `?` needs no conversions. Storage errors are rare and stop the node, so
// boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    StoredMembership,
};

use super::changes::Changes;
use super::command::{storage_key, to_stored};
use super::snapshot::{self, SnapshotFile};
use super::trees::{
    decode_record, read_err, sled_read, sled_write, snapshot_read, snapshot_write, validate,
    write_err, Current, Meta, Owned, Trees, APPLIED, FORMAT_V1, INSTALLING, LEGACY_SNAPSHOT_DATA,
    LEGACY_SNAPSHOT_META, MEMBERSHIP, SNAPSHOT,
};
use super::{Change, Command, NodeId, Outcome, Record, StorageError, Table, TypeConfig};

type Membership = StoredMembership<NodeId, BasicNode>;

/// The group entry being applied and how many of its writes are done (see
/// [`StateMachine::run_group`]); stale once that entry's applied id is written.
const GROUP_DONE: &[u8] = b"group_done";

/// The directory of snapshot files, inside sled's own. (sled's files there are `conf`,
/// `db`, `blobs/` and `snap.*`, which this name does not match.)
pub(super) const SNAPSHOT_DIR: &str = "sm-snapshots";

/// Runs blocking file and sled work off the async runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| write_err(AnyError::error(format!("snapshot work stopped: {e}"))))?
}

fn applied_raw(applied: Option<&LogId<NodeId>>) -> u64 {
    // index + 1, so that 0 can mean "nothing applied".
    applied.map_or(0, |id| id.index.saturating_add(1))
}

/// The Raft state machine over one shared `sled::Db`: records in `sm_data`, the expiry
/// index in `sm_expiry`, the owner index in `sm_owners`, applied state and the name of
/// the current snapshot in `sm_meta`; snapshot files in a directory beside sled's files.
pub struct StateMachine {
    db: sled::Db,
    trees: Trees,
    snapshots: snapshot::Dir,
    changes: Changes,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    applied_index: Arc<AtomicU64>,
    // Apply and install hold it exclusively; a snapshot build holds it shared while it
    // reads, so the records it copies match the applied log id it reports. Whoever names
    // a new current snapshot holds it exclusively, and whoever opens the current one holds
    // it shared, so a file is never removed between being named and being opened.
    lock: Arc<RwLock<()>>,
    /// Bytes of the current snapshot file, for the snapshot policy (see `compaction`).
    snapshot_bytes: Arc<AtomicU64>,
}

/// The size of the file at `path`, 0 when it cannot be read.
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

impl StateMachine {
    /// Opens the state machine trees of `db`, whose files are in `dir`, restoring the
    /// applied log id, membership and current snapshot, and announcing record changes on
    /// `changes`. Moves a snapshot an older version kept in sled into a file, finishes an
    /// install a crash interrupted, and removes snapshot files nothing names.
    pub fn open(db: &sled::Db, dir: &Path, changes: Changes) -> Result<StateMachine, StorageError> {
        let trees = Trees::open(db)?;
        let snapshots =
            snapshot::Dir::open(dir.join(SNAPSHOT_DIR)).map_err(|e| snapshot_read(None, &e))?;
        migrate_legacy_snapshot(db, &trees, &snapshots)?;
        let current = trees.current()?;
        if trees.meta.contains_key(INSTALLING).map_err(sled_read)? {
            // A crash interrupted an install: the trees are half replaced, the snapshot is
            // named, so finish the install from it (which drops any carried counts).
            let current = current
                .as_ref()
                .ok_or_else(|| read_err(AnyError::error("install marker without snapshot")))?;
            trees.replace(&snapshots.path(&current.file), &current.meta)?;
            db.flush().map_err(sled_write)?;
        }
        let applied = trees.read_meta::<LogId<NodeId>>(APPLIED)?;
        trees.take_carried_counts(applied.as_ref())?;
        let lock: Arc<RwLock<()>> = Arc::default();
        trees.count_in_background(lock.clone());
        let mut current = current.map(|c| c.file);
        if let Some(file) = current.as_ref().filter(|f| !snapshots.path(f).is_file()) {
            // Removed by hand, or lost with the disk's last writes: the records are at
            // least as new as it was, so a snapshot of them takes its place. openraft may
            // have purged the log it covered, and a lagging member needs one.
            tracing::error!(
                file,
                "the current snapshot file is missing; building another"
            );
            let builder = SnapshotBuilder {
                db: db.clone(),
                trees: trees.clone(),
                snapshots: snapshots.clone(),
                lock: lock.clone(),
                snapshot_bytes: Arc::default(),
            };
            let (meta, name) = builder.capture()?;
            builder.keep(&meta, &name)?;
            db.flush().map_err(sled_write)?;
            current = Some(name);
        }
        snapshots
            .sweep(current.as_deref())
            .map_err(|e| snapshot_write(None, &e))?;
        let snapshot_bytes = current
            .as_ref()
            .map_or(0, |file| file_size(&snapshots.path(file)));
        let membership = trees
            .read_meta::<Membership>(MEMBERSHIP)?
            .unwrap_or_default();
        Ok(StateMachine {
            db: db.clone(),
            trees,
            snapshots,
            changes,
            applied_index: Arc::new(AtomicU64::new(applied_raw(applied.as_ref()))),
            applied,
            membership,
            lock,
            snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
        })
    }

    /// Bytes of the current snapshot file, kept current as snapshots are built and
    /// installed.
    pub(super) fn snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshot_bytes.clone()
    }

    /// A handle that leaves the counts of the owner index for the next open when the node
    /// stops.
    pub fn closer(&self) -> Closer {
        Closer {
            trees: self.trees.clone(),
            lock: self.lock.clone(),
        }
    }

    /// A handle for reads outside Raft, usable from any thread.
    pub fn reader(&self) -> Reader {
        Reader {
            data: self.trees.data.clone(),
            expiry: self.trees.expiry.clone(),
            owned: self.trees.owned.clone(),
            applied: self.applied_index.clone(),
        }
    }

    fn apply_entries(
        &mut self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<Vec<Outcome>>, StorageError> {
        let lock = self.lock.clone();
        let _guard = lock.write().unwrap_or_else(PoisonError::into_inner);
        self.trees.take_back_counts()?;
        let mut outcomes = Vec::new();
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(Command::Group(writes)) => {
                    self.run_group(&entry.log_id, writes, changes)?
                }
                EntryPayload::Normal(command) => vec![self.trees.run(command, changes)?],
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    self.trees.write_meta(MEMBERSHIP, &self.membership)?;
                    Vec::new()
                }
            };
            // After the data: sled recovers a prefix of writes, so a crash never leaves an
            // applied id ahead of the records, and replaying from it is idempotent.
            self.trees.write_meta(APPLIED, &entry.log_id)?;
            self.applied = Some(entry.log_id);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Applies the writes of the group entry `log_id` one after another, each with its own
    /// outcome (a capped put refused here refuses only itself), as if each were an entry of
    /// its own: after each write but the last, [`GROUP_DONE`] records how many are done.
    ///
    /// Rerunning a whole group would not be safe: a write's condition can depend on one
    /// after it (a capped put refused, then a delete that frees the owner's place: run
    /// again, the put would pass). sled recovers a prefix of writes, so after a crash the
    /// count covers only writes whose records survived, and the replay resumes after them,
    /// exactly where a log of single entries would. The applied id, written after the whole
    /// entry, ends the group.
    fn run_group(
        &self,
        log_id: &LogId<NodeId>,
        writes: Vec<Vec<u8>>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<Outcome>, StorageError> {
        let done = match self.trees.read_meta::<(LogId<NodeId>, u64)>(GROUP_DONE)? {
            Some((id, done)) if id == *log_id => usize::try_from(done).unwrap_or(usize::MAX),
            _ => 0,
        };
        let count = writes.len();
        // Writes done before a crash answer nobody now: their callers are gone.
        let mut outcomes = vec![Outcome::default(); done.min(count)];
        for (i, bytes) in writes.iter().enumerate().skip(done) {
            let outcome = match postcard::from_bytes::<Command>(bytes) {
                // The proposer builds groups of single writes only; a group inside one is
                // a damaged entry, and every replica refuses it alike.
                Ok(Command::Group(_)) => {
                    return Err(write_err(AnyError::error("a group inside a group")))
                }
                Ok(command) => self.trees.run(command, changes)?,
                Err(e) => return Err(write_err(AnyError::new(&e))),
            };
            outcomes.push(outcome);
            if i + 1 < count {
                self.trees.write_meta(GROUP_DONE, &(log_id, i as u64 + 1))?;
            }
        }
        Ok(outcomes)
    }

    /// Puts a received snapshot's bytes in a file of the snapshot directory: the file
    /// they were received into, or a copy when they are elsewhere.
    async fn stage(&self, data: SnapshotFile, meta: &Meta) -> Result<PathBuf, StorageError> {
        let fail = |e: std::io::Error| snapshot_write(Some(meta), &e);
        if data.is_receiving() && self.snapshots.holds(data.path()) {
            return data.keep().await.map_err(fail);
        }
        let to = self.snapshots.temp("copy");
        if let Err(e) = data.copy_to(&to).await {
            self.snapshots.remove(&to);
            return Err(fail(e));
        }
        Ok(to)
    }

    async fn install(&mut self, meta: &Meta, data: SnapshotFile) -> Result<(), StorageError> {
        let staged = self.stage(data, meta).await?;
        let checked = {
            let (path, meta) = (staged.clone(), meta.clone());
            blocking(move || validate(&path, &meta)).await
        };
        if let Err(e) = checked {
            self.snapshots.remove(&staged);
            return Err(e);
        }
        let name = self.snapshots.new_name(meta);
        let path = self
            .snapshots
            .publish(&staged, &name)
            .map_err(|e| snapshot_write(Some(meta), &e))?;
        let size = file_size(&path);
        let (trees, lock) = (self.trees.clone(), self.lock.clone());
        let current = Current {
            file: name,
            meta: meta.clone(),
        };
        let replaced = blocking(move || {
            let _guard = lock.write().unwrap_or_else(PoisonError::into_inner);
            let replaced = trees.current()?;
            // The replaced records are gone with the writes a group count speaks of.
            trees.meta.remove(GROUP_DONE).map_err(sled_write)?;
            // Named with the marker first: from here a crash finishes the install on open.
            trees.set_current(&current, true)?;
            trees.replace(&path, &current.meta)?;
            Ok(replaced)
        })
        .await?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.db
            .flush_async()
            .await
            .map_err(|e| snapshot_write(Some(meta), &e))?;
        if let Some(old) = replaced {
            self.snapshots.remove(&self.snapshots.path(&old.file));
        }
        self.snapshot_bytes.store(size, Ordering::Relaxed);
        Ok(())
    }
}

/// Leaves the counts of the owner index for the next open (see [`StateMachine::closer`]).
#[derive(Clone)]
pub struct Closer {
    trees: Trees,
    lock: Arc<RwLock<()>>,
}

impl Closer {
    /// Writes the counts as they hold now, at the applied id on disk. Meant for when Raft
    /// has stopped: an apply that still runs afterwards takes them back first, so a later
    /// open finds either counts that hold or none.
    pub fn close(&self) -> Result<(), StorageError> {
        let _guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let applied = self.trees.read_meta::<LogId<NodeId>>(APPLIED)?;
        self.trees.carry_counts(applied.as_ref())
    }
}

/// Moves a snapshot that a version before snapshot files kept in `sm_meta` into a file,
/// keeping its metadata, so openraft finds the same snapshot after the upgrade. An install
/// that version left unfinished is then finished from the file like any other.
fn migrate_legacy_snapshot(
    db: &sled::Db,
    trees: &Trees,
    snapshots: &snapshot::Dir,
) -> Result<(), StorageError> {
    let Some(blob) = trees.meta.get(LEGACY_SNAPSHOT_DATA).map_err(sled_read)? else {
        return Ok(());
    };
    let meta = trees
        .read_meta::<Meta>(LEGACY_SNAPSHOT_META)?
        .ok_or_else(|| read_err(AnyError::error("stored snapshot data without metadata")))?;
    let temp = snapshots.temp("migrate");
    if let Err(e) = snapshot::write_legacy(&temp, &meta, &blob) {
        snapshots.remove(&temp);
        return Err(snapshot_read(Some(&meta), &e));
    }
    drop(blob);
    let name = snapshots.new_name(&meta);
    snapshots
        .publish(&temp, &name)
        .map_err(|e| snapshot_write(Some(&meta), &e))?;
    let current = to_stored(FORMAT_V1, &Current { file: name, meta }).map_err(write_err)?;
    let mut batch = sled::Batch::default();
    batch.insert(SNAPSHOT, current);
    batch.remove(LEGACY_SNAPSHOT_META);
    batch.remove(LEGACY_SNAPSHOT_DATA);
    trees.meta.apply_batch(batch).map_err(sled_write)?;
    db.flush().map_err(sled_write)?;
    tracing::info!("moved the stored snapshot into a snapshot file");
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut changes = Vec::new();
        let result = self.apply_entries(entries.into_iter(), &mut changes);
        self.applied_index
            .store(applied_raw(self.applied.as_ref()), Ordering::Release);
        // No receivers is fine: nothing caches records yet.
        for change in changes {
            self.changes.send(change);
        }
        result
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            trees: self.trees.clone(),
            snapshots: self.snapshots.clone(),
            lock: self.lock.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self.snapshots.temp("incoming");
        let file = SnapshotFile::receiving(path)
            .await
            .map_err(|e| snapshot_write(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let result = self.install(meta, *snapshot).await;
        // Whatever happened, the trees may have changed: memory tiers start afresh.
        self.applied_index
            .store(applied_raw(self.applied.as_ref()), Ordering::Release);
        self.changes.send(Change::Reset);
        result
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let _guard = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = self.trees.current()? else {
            return Ok(None);
        };
        let file = SnapshotFile::reading(&self.snapshots.path(&current.file))
            .map_err(|e| snapshot_read(Some(&current.meta), &e))?;
        Ok(Some(Snapshot {
            meta: current.meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Builds snapshots of a [`StateMachine`] while it keeps applying entries.
pub struct SnapshotBuilder {
    db: sled::Db,
    trees: Trees,
    snapshots: snapshot::Dir,
    lock: Arc<RwLock<()>>,
    snapshot_bytes: Arc<AtomicU64>,
}

impl SnapshotBuilder {
    /// Writes the records, with the applied state they belong to, to a new snapshot file
    /// and returns its metadata and name. Records stream from sled to the file one at a
    /// time; the file is made durable after the shared lock is released.
    pub(super) fn capture(&self) -> Result<(Meta, String), StorageError> {
        let temp = self.snapshots.temp("build");
        let written = self.write(&temp);
        match written {
            Ok(meta) => {
                let name = self.snapshots.new_name(&meta);
                self.snapshots
                    .publish(&temp, &name)
                    .map_err(|e| snapshot_write(Some(&meta), &e))?;
                Ok((meta, name))
            }
            Err(e) => {
                self.snapshots.remove(&temp);
                Err(e)
            }
        }
    }

    fn write(&self, path: &Path) -> Result<Meta, StorageError> {
        let guard = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        let applied = self.trees.read_meta::<LogId<NodeId>>(APPLIED)?;
        let membership = self
            .trees
            .read_meta::<Membership>(MEMBERSHIP)?
            .unwrap_or_default();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match &applied {
            Some(id) => format!("{}-{}-{nanos}", id.leader_id.term, id.index),
            None => format!("none-{nanos}"),
        };
        let meta = Meta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let fail = |e: std::io::Error| snapshot_write(Some(&meta), &e);
        let mut writer = snapshot::Writer::create(path, &meta).map_err(fail)?;
        for item in self.trees.data.iter() {
            let (skey, value) = item.map_err(sled_read)?;
            writer.record(&skey, &value).map_err(fail)?;
        }
        drop(guard);
        writer.finish().map_err(fail)?;
        Ok(meta)
    }

    /// Names the built snapshot as the current one unless a newer one was installed
    /// meanwhile.
    pub(super) fn keep(&self, meta: &Meta, name: &str) -> Result<Kept, StorageError> {
        let _guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.trees.current()?;
        if current
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > meta.last_log_id)
        {
            return Ok(Kept::No);
        }
        let built = Current {
            file: name.to_owned(),
            meta: meta.clone(),
        };
        self.trees.set_current(&built, false)?;
        Ok(Kept::Replacing(current.map(|c| c.file)))
    }
}

/// What [`SnapshotBuilder::keep`] did with a built snapshot.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kept {
    /// Nothing: a newer snapshot is current.
    No,
    /// Named it current, in place of the snapshot file named here, if any.
    Replacing(Option<String>),
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let builder = SnapshotBuilder {
            db: self.db.clone(),
            trees: self.trees.clone(),
            snapshots: self.snapshots.clone(),
            lock: self.lock.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        };
        let (meta, name) = blocking(move || builder.capture()).await?;
        let path = self.snapshots.path(&name);
        // Opened before it may be removed below: the caller reads it either way.
        let file = SnapshotFile::reading(&path).map_err(|e| snapshot_read(Some(&meta), &e))?;
        match self.keep(&meta, &name)? {
            Kept::Replacing(replaced) => {
                // openraft purges the log up to the snapshot next: name it durably first.
                self.db
                    .flush_async()
                    .await
                    .map_err(|e| snapshot_write(Some(&meta), &e))?;
                if let Some(old) = replaced {
                    self.snapshots.remove(&self.snapshots.path(&old));
                }
                self.snapshot_bytes
                    .store(file_size(&path), Ordering::Relaxed);
            }
            Kept::No => self.snapshots.remove(&path),
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

/// Reads the applied records outside Raft, from any thread, without locking.
#[derive(Clone)]
pub struct Reader {
    data: sled::Tree,
    expiry: sled::Tree,
    owned: Arc<Owned>,
    applied: Arc<AtomicU64>,
}

impl Reader {
    /// The record under `key` in `table`, even when expired (see [`Record::is_expired`]).
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.data.get(storage_key(table, key)).map_err(sled_read)? {
            Some(bytes) => decode_record(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of `table` in key order, keyed without the table byte.
    pub fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Record)>, StorageError> {
        self.data
            .scan_prefix([table.byte()])
            .map(|item| {
                let (skey, bytes) = item.map_err(sled_read)?;
                Ok((skey[1..].to_vec(), decode_record(&bytes)?))
            })
            .collect()
    }

    /// How many records `table` holds, expired or not.
    pub fn count(&self, table: Table) -> usize {
        self.data.scan_prefix([table.byte()]).keys().count()
    }

    /// How many records of `table` have an owner (see [`Command::PutOwned`]), expired or
    /// not; kept in memory, so cheap to ask. Low for a moment after an open, while a thread
    /// counts what the replica already held (see `trees::Owned`).
    pub fn owned(&self, table: Table) -> u64 {
        self.owned.of(table)
    }

    /// Whether [`Reader::owned`] has counted every record the replica held when it opened.
    #[cfg(test)]
    pub(super) fn owned_is_counted(&self) -> bool {
        self.owned.is_counted()
    }

    /// The records of `table` counted for `owner` since the open, if they are.
    #[cfg(test)]
    pub(super) fn owner_counted(&self, owner: &super::Owner, table: Table) -> Option<u64> {
        self.owned.of_owner(owner, table)
    }

    /// The index of the last log entry applied, if any.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied.load(Ordering::Acquire).checked_sub(1)
    }

    /// The earliest deadline in the expiry index, if any record has one; `None` also when
    /// the index cannot be read, since a later tick will try again.
    pub fn earliest_deadline(&self) -> Option<u64> {
        let (ikey, _) = self.expiry.first().ok()??;
        let bytes: [u8; 8] = ikey.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }
}
