//! The sled trees of the state machine: records, the expiry and owner indexes, the applied
//! state and the name of the current snapshot; how each command changes them, and how a
//! snapshot file replaces them.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers here return
// the same type so `?` needs no conversions. Storage errors are rare and stop the node, so
// boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openraft::{AnyError, BasicNode, SnapshotMeta, StorageIOError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::command::{from_stored, storage_key, to_stored, Owner};
use super::snapshot;
use super::{Change, Command, NodeId, Op, Outcome, Record, StorageError, Table};

/// Format byte in front of metadata; bump it when a shape changes.
pub(super) const FORMAT_V1: u8 = 1;

const DATA_TREE: &str = "sm_data";
const EXPIRY_TREE: &str = "sm_expiry";
const OWNERS_TREE: &str = "sm_owners";
const META_TREE: &str = "sm_meta";
pub(super) const APPLIED: &[u8] = b"applied";
pub(super) const MEMBERSHIP: &[u8] = b"membership";
/// The current snapshot: its file and metadata ([`Current`]).
pub(super) const SNAPSHOT: &[u8] = b"snapshot";
/// Where versions before snapshot files kept the current snapshot's metadata and data;
/// moved into a file on open.
pub(super) const LEGACY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
pub(super) const LEGACY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// The owner index's counts a clean close left for the next open ([`Carried`]).
pub(super) const CARRIED_COUNTS: &[u8] = b"carried_counts";

/// Owners holding fewer records than this in a table are not carried across a clean
/// close: their first capped put after the open counts them again, reading at most this
/// many index keys.
const CARRY_AT_LEAST: u64 = 64;
/// Present while a snapshot replaces the trees, so a crash midway is finished on open.
pub(super) const INSTALLING: &[u8] = b"installing";

/// How many bytes of records an install writes to sled at a time. Small: sled keeps every
/// node version a batch replaces until the batch ends (it applies one under one epoch
/// guard), so a batch costs memory many times its size. Installing 100,000 sessions
/// (a 38 MiB snapshot) with 4 MiB batches took the process 1.1 GiB above where it
/// started, as one batch of everything did; with these, 130 MiB, the new member's page
/// cache included (`cargo bench --bench snapshot`).
const INSTALL_BATCH_BYTES: usize = 256 * 1024;

/// Keys of the owner index counted per hold of the state machine's lock, by the count an
/// open starts: about 1 ms of applies waiting at most.
const COUNT_CHUNK: usize = if cfg!(test) { 64 } else { 1024 };

/// How long the count an open starts waits before it begins, and between its chunks. It
/// reads sled's pages cold, as the first writes after a restart do: begun at once, it
/// slowed the first `initialize` after a restart holding 99,000 sessions from about 27 to
/// 85–150 ms. Paced, it leaves a core to the writes; the gauge is low meanwhile.
const COUNT_DELAY: std::time::Duration = if cfg!(test) {
    std::time::Duration::ZERO
} else {
    std::time::Duration::from_secs(1)
};
const COUNT_PAUSE: std::time::Duration = if cfg!(test) {
    std::time::Duration::ZERO
} else {
    std::time::Duration::from_millis(1)
};

pub(super) type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The current snapshot, as sled names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Current {
    /// The file's name in the snapshot directory.
    pub(super) file: String,
    /// Its metadata, also in the file's header.
    pub(super) meta: Meta,
}

pub(super) fn read_err(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::read_state_machine(e).into()
}

pub(super) fn write_err(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::write_state_machine(e).into()
}

pub(super) fn sled_read(e: sled::Error) -> StorageError {
    read_err(&e)
}

pub(super) fn sled_write(e: sled::Error) -> StorageError {
    write_err(&e)
}

pub(super) fn snapshot_read(meta: Option<&Meta>, e: impl Into<AnyError>) -> StorageError {
    StorageIOError::read_snapshot(meta.map(Meta::signature), e).into()
}

pub(super) fn snapshot_write(meta: Option<&Meta>, e: impl Into<AnyError>) -> StorageError {
    StorageIOError::write_snapshot(meta.map(Meta::signature), e).into()
}

/// The expiry index key of the record under `skey`: the deadline big-endian, then `skey`,
/// so a range scan from the start finds every record due by a cut-off.
fn expiry_key(deadline_ms: u64, skey: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + skey.len());
    out.extend_from_slice(&deadline_ms.to_be_bytes());
    out.extend_from_slice(skey);
    out
}

/// The owner index key of the record under `skey`: the owner, then `skey`, so a prefix
/// scan of the owner and a table byte finds the owner's records in that table.
fn owner_key(owner: &Owner, skey: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(owner.len() + skey.len());
    out.extend_from_slice(owner);
    out.extend_from_slice(skey);
    out
}

/// The table of a storage key, or an error naming the damage.
fn table_of(skey: &[u8]) -> Result<Table, StorageError> {
    skey.first()
        .and_then(|&b| Table::from_byte(b))
        .ok_or_else(|| read_err(AnyError::error("stored key has no known table byte")))
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<Record, StorageError> {
    Record::decode(bytes).ok_or_else(|| read_err(AnyError::error("damaged stored record")))
}

/// Reads a whole snapshot file and checks everything in it before anything is replaced:
/// the checksum, the metadata, every key's table, every record, and that keys are in
/// strictly increasing order (no key twice).
pub(super) fn validate(path: &Path, meta: &Meta) -> Result<u64, StorageError> {
    let fail = |e: std::io::Error| snapshot_read(Some(meta), &e);
    let mut reader = snapshot::Reader::open(path).map_err(fail)?;
    if reader.meta() != meta {
        let msg = "the snapshot file's metadata is not the snapshot's";
        return Err(snapshot_read(Some(meta), AnyError::error(msg)));
    }
    let mut last: Option<Vec<u8>> = None;
    let mut count = 0;
    while let Some((skey, value)) = reader.next().map_err(fail)? {
        table_of(&skey).map_err(|e| snapshot_read(Some(meta), &e))?;
        if Record::decode(&value).is_none() {
            let msg = "damaged record in the snapshot";
            return Err(snapshot_read(Some(meta), AnyError::error(msg)));
        }
        if last.as_ref().is_some_and(|l| *l >= skey) {
            let msg = "snapshot keys out of order";
            return Err(snapshot_read(Some(meta), AnyError::error(msg)));
        }
        last = Some(skey);
        count += 1;
    }
    Ok(count)
}

/// How many records the owner index holds: per table, for the in-use gauges (one slot per
/// possible table byte up to 15, so adding a table needs no change here), and per owner
/// and table, for the caps of `PutOwned`.
///
/// Both are kept in memory beside the index and changed exactly when it is. Counting an
/// owner's records by scanning its index entries cost every replica one key per record the
/// owner held, on every capped put: a principal with 10,000 sessions paid a 10,000-key
/// scan per `initialize`, in the apply. So an owner's records are counted once, by the
/// first capped put of theirs an open (or install) sees, and followed from there.
///
/// The per-table counts of an index already holding keys are made by a thread the open
/// starts (see [`Trees::count_in_background`]): counting them before serving took a
/// restart about 1.2 µs per record, 120–140 ms with 95,000 sessions. It begins a second
/// after the open and paces itself (see [`COUNT_DELAY`]); until it is done the gauges show
/// the records counted so far.
#[derive(Default)]
pub(super) struct Owned {
    tables: [AtomicU64; 16],
    /// Records per owner and table byte, for the owners counted since the open.
    owners: Mutex<HashMap<(Owner, u8), u64>>,
    /// How far the per-table counts have come.
    count: Mutex<Count>,
    /// Whether the meta tree holds counts carried for the next open (see [`Carried`]).
    carried: std::sync::atomic::AtomicBool,
}

/// What a clean close leaves for the next open: the owner index's counts as they are at
/// the applied id `applied`, so that a restart neither counts the index again nor makes a
/// principal's first `initialize` scan its sessions (about 0.9 ms for 1,000 of them after a
/// restart, as sled reads their pages back).
#[derive(Serialize, Deserialize)]
struct Carried {
    applied: Option<openraft::LogId<NodeId>>,
    /// Records per table byte, when every key was counted.
    tables: Option<Vec<u64>>,
    /// Records per owner and table byte, for the owners counted holding at least
    /// [`CARRY_AT_LEAST`].
    owners: Vec<(Owner, u8, u64)>,
}

/// How far the per-table counts of the owner index have come.
#[derive(Default)]
enum Count {
    /// They hold the index keys up to and including this one (none yet, when `None`): an
    /// apply changes them for such keys only, and the count that is under way finds the
    /// others as they are when it reaches them.
    Upto(Option<Vec<u8>>),
    /// They hold every key: every apply changes them.
    #[default]
    Done,
}

impl Owned {
    fn count(&self) -> std::sync::MutexGuard<'_, Count> {
        // Set in single steps: a panic leaves nothing half-updated.
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the per-table counts hold the index key of `skey` owned by `owner`.
    fn counted(&self, owner: &Owner, skey: &[u8]) -> bool {
        match &*self.count() {
            Count::Done => true,
            Count::Upto(None) => false,
            // The index key is the owner (32 bytes), then the storage key.
            Count::Upto(Some(last)) => {
                let (last_owner, last_skey) = last.split_at(last.len().min(32));
                (owner.as_slice(), skey) <= (last_owner, last_skey)
            }
        }
    }

    /// Whether the per-table counts hold every key.
    pub(super) fn is_counted(&self) -> bool {
        matches!(*self.count(), Count::Done)
    }

    fn slot(&self, skey: &[u8]) -> Option<&AtomicU64> {
        skey.first().and_then(|&b| self.tables.get(usize::from(b)))
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<(Owner, u8), u64>> {
        // Counts are changed in single steps: a panic leaves nothing half-updated.
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, owner: &Owner, skey: &[u8]) {
        if let Some(n) = self.slot(skey).filter(|_| self.counted(owner, skey)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(&table) = skey.first() {
            if let Some(n) = self.owners().get_mut(&(*owner, table)) {
                *n += 1;
            }
        }
    }

    fn sub(&self, owner: &Owner, skey: &[u8]) {
        if let Some(n) = self.slot(skey).filter(|_| self.counted(owner, skey)) {
            // Never below zero, whatever the index held.
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
        if let Some(&table) = skey.first() {
            let mut owners = self.owners();
            if let Some(n) = owners.get_mut(&(*owner, table)) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    owners.remove(&(*owner, table));
                }
            }
        }
    }

    /// Forgets every count: the index is empty, and a count under way stops. The caller
    /// has removed any carried counts.
    fn clear(&self) {
        *self.count() = Count::Done;
        self.carried.store(false, Ordering::Release);
        for n in &self.tables {
            n.store(0, Ordering::Relaxed);
        }
        self.owners().clear();
    }

    /// The records of `table` counted for `owner`, if they are counted.
    #[cfg(test)]
    pub(super) fn of_owner(&self, owner: &Owner, table: Table) -> Option<u64> {
        self.owners().get(&(*owner, table.byte())).copied()
    }

    /// How many records of `table` the owner index holds.
    pub(super) fn of(&self, table: Table) -> u64 {
        self.tables
            .get(usize::from(table.byte()))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// The trees of the state machine, shared by the machine, its readers and its builders.
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) data: sled::Tree,
    pub(super) expiry: sled::Tree,
    pub(super) owners: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) owned: Arc<Owned>,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Trees, StorageError> {
        let open = |name: &str| db.open_tree(name).map_err(sled_read);
        let trees = Trees {
            data: open(DATA_TREE)?,
            expiry: open(EXPIRY_TREE)?,
            owners: open(OWNERS_TREE)?,
            meta: open(META_TREE)?,
            owned: Arc::default(),
        };
        if !trees.owners.is_empty() {
            // Counted by `count_in_background`, which the state machine starts.
            *trees.owned.count() = Count::Upto(None);
        }
        Ok(trees)
    }

    /// Leaves the counts for the next open, as they hold at `applied`, the applied id of
    /// the records as they are. The caller holds the state machine's lock, so no apply runs
    /// meanwhile; the first apply or install after it takes them back
    /// ([`Trees::take_back_counts`]).
    pub(super) fn carry_counts(
        &self,
        applied: Option<&openraft::LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        let tables = self.owned.is_counted().then(|| {
            let tables = &self.owned.tables;
            tables.iter().map(|n| n.load(Ordering::Relaxed)).collect()
        });
        let owners = self
            .owned
            .owners()
            .iter()
            .filter(|&(_, &n)| n >= CARRY_AT_LEAST)
            .map(|(&(owner, table), &n)| (owner, table, n))
            .collect();
        let carried = Carried {
            applied: applied.copied(),
            tables,
            owners,
        };
        self.write_meta(CARRIED_COUNTS, &carried)?;
        self.owned.carried.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes the counts [`Trees::carry_counts`] left, before an apply changes what they
    /// count (an install's [`Trees::replace`] removes them itself). sled recovers a prefix of writes, so a crash after this write never leaves
    /// the counts beside records they do not hold. The caller holds the state machine's
    /// lock.
    pub(super) fn take_back_counts(&self) -> Result<(), StorageError> {
        if self.owned.carried.swap(false, Ordering::AcqRel) {
            self.meta.remove(CARRIED_COUNTS).map_err(sled_write)?;
        }
        Ok(())
    }

    /// Takes the counts the last clean close left, if they hold at `applied`, the applied
    /// id the trees opened with; `false` when there were none to take. They are removed
    /// either way, before anything is applied (see [`Trees::take_back_counts`]). Called by
    /// the open, before [`Trees::count_in_background`].
    pub(super) fn take_carried_counts(
        &self,
        applied: Option<&openraft::LogId<NodeId>>,
    ) -> Result<bool, StorageError> {
        let Some(bytes) = self.meta.get(CARRIED_COUNTS).map_err(sled_read)? else {
            return Ok(false);
        };
        self.meta.remove(CARRIED_COUNTS).map_err(sled_write)?;
        let carried = match from_stored::<Carried>(FORMAT_V1, &bytes) {
            Ok(carried) if carried.applied.as_ref() == applied => carried,
            Ok(_) => return Ok(false),
            Err(e) => {
                // Only a shortcut: the counts are made again as after any other open.
                tracing::warn!(error = %e, "ignoring unreadable owner counts left by the last close");
                return Ok(false);
            }
        };
        let mut owners = self.owned.owners();
        for (owner, table, n) in carried.owners {
            owners.insert((owner, table), n);
        }
        drop(owners);
        if let Some(tables) = carried.tables {
            for (slot, n) in self.owned.tables.iter().zip(tables) {
                slot.store(n, Ordering::Relaxed);
            }
            *self.owned.count() = Count::Done;
        }
        Ok(true)
    }

    /// Counts the owner index's keys per table on a thread of its own, a chunk at a time
    /// under `lock` shared (applies and installs hold it exclusively), so each chunk and
    /// the applies between chunks see one another's work exactly once. Returns at once
    /// when there is nothing to count.
    pub(super) fn count_in_background(&self, lock: Arc<RwLock<()>>) {
        if self.owned.is_counted() {
            return;
        }
        let trees = self.clone();
        let spawned = std::thread::Builder::new()
            .name("owner-count".into())
            .spawn(move || {
                if let Err(e) = trees.count_chunks(&lock) {
                    tracing::error!(error = %e, "could not count the owner index; the in-use gauges stay low");
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start counting the owner index");
        }
    }

    fn count_chunks(&self, lock: &RwLock<()>) -> Result<(), sled::Error> {
        std::thread::sleep(COUNT_DELAY);
        let mut after = None;
        loop {
            {
                let _guard = lock.read().unwrap_or_else(PoisonError::into_inner);
                if self.count_chunk(&mut after)? {
                    return Ok(());
                }
            }
            std::thread::sleep(COUNT_PAUSE);
        }
    }

    /// Counts the next [`COUNT_CHUNK`] keys of the owner index after `after` (from the
    /// first when `None`), moving `after` on; `true` once every key is counted, or an
    /// install replaced the index (and counted it). The caller holds the state machine's
    /// lock, so no apply runs meanwhile.
    pub(super) fn count_chunk(&self, after: &mut Option<sled::IVec>) -> Result<bool, sled::Error> {
        if self.owned.is_counted() {
            return Ok(true);
        }
        let keys = match after {
            None => self.owners.iter(),
            Some(last) => self
                .owners
                .range::<&[u8], _>((Bound::Excluded(&last[..]), Bound::Unbounded)),
        };
        let mut last = None;
        for key in keys.keys().take(COUNT_CHUNK) {
            let key = key?;
            // The owner (32 bytes), then the storage key.
            if let Some(n) = key.get(32..).and_then(|skey| self.owned.slot(skey)) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            last = Some(key);
        }
        let mut count = self.owned.count();
        match last {
            Some(key) => {
                *count = Count::Upto(Some(key.to_vec()));
                *after = Some(key);
                Ok(false)
            }
            None => {
                *count = Count::Done;
                Ok(true)
            }
        }
    }

    /// How many records of the table `table` (its byte) `owner` holds: counted in the
    /// index the first time it is asked for since the open, then followed in memory.
    fn owner_count(&self, owner: &Owner, table: u8) -> Result<u64, StorageError> {
        if let Some(&n) = self.owned.owners().get(&(*owner, table)) {
            return Ok(n);
        }
        let mut n = 0;
        for key in self.owners.scan_prefix(owner_key(owner, &[table])).keys() {
            key.map_err(sled_read)?;
            n += 1;
        }
        self.owned.owners().insert((*owner, table), n);
        Ok(n)
    }

    fn record(&self, skey: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.data.get(skey).map_err(sled_read)? {
            Some(bytes) => decode_record(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(sled_read)? {
            Some(bytes) => from_stored(FORMAT_V1, &bytes).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    pub(super) fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = to_stored(FORMAT_V1, value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(sled_write)?;
        Ok(())
    }

    pub(super) fn current(&self) -> Result<Option<Current>, StorageError> {
        self.read_meta(SNAPSHOT)
    }

    /// Names `current` as the current snapshot, with the install marker when `installing`,
    /// in one atomic batch.
    pub(super) fn set_current(
        &self,
        current: &Current,
        installing: bool,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT, to_stored(FORMAT_V1, current).map_err(write_err)?);
        if installing {
            batch.insert(INSTALLING, Vec::new());
        }
        self.meta.apply_batch(batch).map_err(sled_write)
    }

    /// Replaces every record, both indexes and the applied state with those of the
    /// snapshot file at `path`, writing to sled in bounded batches.
    pub(super) fn replace(&self, path: &Path, meta: &Meta) -> Result<(), StorageError> {
        let fail = |e: std::io::Error| snapshot_read(Some(meta), &e);
        // Opened first: a file that cannot be read leaves the trees as they are.
        let mut reader = snapshot::Reader::open(path).map_err(fail)?;
        // Counts carried by a clean close count the records about to go.
        self.meta.remove(CARRIED_COUNTS).map_err(sled_write)?;
        self.data.clear().map_err(sled_write)?;
        self.expiry.clear().map_err(sled_write)?;
        self.owners.clear().map_err(sled_write)?;
        self.owned.clear();
        let mut pending = Pending::default();
        while let Some((skey, value)) = reader.next().map_err(fail)? {
            let record = decode_record(&value)?;
            if let Some(deadline) = record.deadline_ms {
                pending
                    .expiry
                    .insert(expiry_key(deadline, &skey), Vec::new());
            }
            if let Some(owner) = &record.owner {
                pending.owners.insert(owner_key(owner, &skey), Vec::new());
                self.owned.add(owner, &skey);
            }
            pending.bytes += skey.len() + value.len();
            pending.data.insert(skey, value);
            if pending.bytes >= INSTALL_BATCH_BYTES {
                std::mem::take(&mut pending).apply(self)?;
            }
        }
        pending.apply(self)?;
        let mut batch = sled::Batch::default();
        match &meta.last_log_id {
            Some(id) => batch.insert(APPLIED, to_stored(FORMAT_V1, id).map_err(write_err)?),
            None => batch.remove(APPLIED),
        }
        let membership = to_stored(FORMAT_V1, &meta.last_membership).map_err(write_err)?;
        batch.insert(MEMBERSHIP, membership);
        batch.remove(INSTALLING);
        self.meta.apply_batch(batch).map_err(sled_write)
    }

    /// Whether `owner` holds `limit` or more records of the table `skey` names, not
    /// counting the one under `skey`.
    fn holds_at_least(&self, owner: &Owner, skey: &[u8], limit: u64) -> Result<bool, StorageError> {
        let Some(&table) = skey.first() else {
            return Ok(limit == 0);
        };
        let all = self.owner_count(owner, table)?;
        // Below the limit whether or not `skey` is among them: no read needed, which is
        // every put but those at the cap.
        if all < limit {
            return Ok(false);
        }
        let own = self
            .owners
            .contains_key(owner_key(owner, skey))
            .map_err(sled_read)?;
        Ok(all.saturating_sub(u64::from(own)) >= limit)
    }

    /// Writes `new` under `skey`, moving its expiry and owner index entries from `old`'s.
    fn store(
        &self,
        (table, key, skey): (Table, &[u8], &[u8]),
        old: Option<&Record>,
        new: &Record,
        changes: &mut Vec<Change>,
    ) -> Result<(), StorageError> {
        // Owner entries go in and come out before the record is written. sled recovers a
        // prefix of writes and the applied id is written last, so after a crash the entry
        // being applied runs again; a record is never present without its owner entry, and
        // an entry left without its record is completed by that rerun.
        let old_owner = old.and_then(|o| o.owner);
        if old_owner != new.owner {
            if let Some(owner) = &new.owner {
                let added = self.owners.insert(owner_key(owner, skey), Vec::<u8>::new());
                if added.map_err(sled_write)?.is_none() {
                    self.owned.add(owner, skey);
                }
            }
            if let Some(owner) = &old_owner {
                let removed = self.owners.remove(owner_key(owner, skey));
                if removed.map_err(sled_write)?.is_some() {
                    self.owned.sub(owner, skey);
                }
            }
        }
        // The new expiry entry goes in before the old one goes out: after a crash a stale
        // entry is harmless (expiry checks the record), a missing one would keep it forever.
        self.data.insert(skey, new.encode()).map_err(sled_write)?;
        if let Some(deadline) = new.deadline_ms {
            let ikey = expiry_key(deadline, skey);
            self.expiry
                .insert(ikey, Vec::<u8>::new())
                .map_err(sled_write)?;
        }
        if let Some(deadline) = old.and_then(|o| o.deadline_ms) {
            if Some(deadline) != new.deadline_ms {
                let ikey = expiry_key(deadline, skey);
                self.expiry.remove(ikey).map_err(sled_write)?;
            }
        }
        changes.push(Change::Record {
            table,
            key: key.to_vec(),
        });
        Ok(())
    }

    /// Removes the record `old` under `skey` and its index entries.
    fn remove(
        &self,
        (table, key, skey): (Table, &[u8], &[u8]),
        old: &Record,
        changes: &mut Vec<Change>,
    ) -> Result<(), StorageError> {
        // The owner entry goes first, for the reason given in `store`.
        if let Some(owner) = &old.owner {
            let removed = self.owners.remove(owner_key(owner, skey));
            if removed.map_err(sled_write)?.is_some() {
                self.owned.sub(owner, skey);
            }
        }
        self.data.remove(skey).map_err(sled_write)?;
        if let Some(deadline) = old.deadline_ms {
            let ikey = expiry_key(deadline, skey);
            self.expiry.remove(ikey).map_err(sled_write)?;
        }
        changes.push(Change::Record {
            table,
            key: key.to_vec(),
        });
        Ok(())
    }

    /// Applies one command.
    pub(super) fn run(
        &self,
        command: Command,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, StorageError> {
        match command.into_ops() {
            // A batch is flat (ops, never commands), so this never recurses.
            Ok(ops) => ops.into_iter().try_fold(Outcome::default(), |sum, op| {
                let one = self.op(op, changes)?;
                Ok(Outcome {
                    affected: sum.affected + one.affected,
                    refused: sum.refused || one.refused,
                })
            }),
            Err(Command::PutOwned {
                table,
                key,
                deadline_ms,
                sealed,
                owner,
                limit,
            }) => {
                let skey = storage_key(table, &key);
                if self.holds_at_least(&owner, &skey, limit)? {
                    return Ok(Outcome {
                        affected: 0,
                        refused: true,
                    });
                }
                let old = self.record(&skey)?;
                let new = Record {
                    deadline_ms,
                    sealed,
                    owner: Some(owner),
                };
                self.store((table, &key, &skey), old.as_ref(), &new, changes)?;
                Ok(Outcome {
                    affected: u64::from(old.is_some()),
                    refused: false,
                })
            }
            Err(Command::Create {
                table,
                key,
                deadline_ms,
                sealed,
            }) => {
                let skey = storage_key(table, &key);
                if self.record(&skey)?.is_some() {
                    return Ok(Outcome {
                        affected: 0,
                        refused: true,
                    });
                }
                let new = Record {
                    deadline_ms,
                    sealed,
                    owner: None,
                };
                self.store((table, &key, &skey), None, &new, changes)?;
                Ok(Outcome::default())
            }
            Err(_) => Err(write_err(AnyError::error(
                "a command that is neither ops, a capped put nor a create",
            ))),
        }
    }

    /// Applies one operation.
    fn op(&self, op: Op, changes: &mut Vec<Change>) -> Result<Outcome, StorageError> {
        let (table, key) = match &op {
            Op::Expire { now_ms } => {
                return Ok(Outcome {
                    affected: self.expire(*now_ms, changes)?,
                    refused: false,
                })
            }
            Op::Put { table, key, .. }
            | Op::Touch { table, key, .. }
            | Op::Delete { table, key }
            | Op::Reseal { table, key, .. } => (*table, key.as_slice()),
        };
        let skey = storage_key(table, key);
        let at = (table, key, skey.as_slice());
        let old = self.record(&skey)?;
        let new = match (&op, &old) {
            (
                Op::Put {
                    deadline_ms,
                    sealed,
                    ..
                },
                _,
            ) => Record {
                deadline_ms: *deadline_ms,
                sealed: sealed.clone(),
                owner: old.as_ref().and_then(|o| o.owner),
            },
            // Every other operation acts only on a record that exists.
            (_, None) => return Ok(Outcome::default()),
            (Op::Touch { deadline_ms, .. }, Some(old)) => Record {
                deadline_ms: *deadline_ms,
                sealed: old.sealed.clone(),
                owner: old.owner,
            },
            (Op::Reseal { expect, sealed, .. }, Some(old))
                if Sha256::digest(&old.sealed).as_slice() == expect.as_slice() =>
            {
                Record {
                    deadline_ms: old.deadline_ms,
                    sealed: sealed.clone(),
                    owner: old.owner,
                }
            }
            (Op::Delete { .. }, Some(old)) => {
                self.remove(at, old, changes)?;
                return Ok(Outcome {
                    affected: 1,
                    refused: false,
                });
            }
            // A reseal whose expected digest no longer matches.
            _ => return Ok(Outcome::default()),
        };
        self.store(at, old.as_ref(), &new, changes)?;
        Ok(Outcome {
            affected: u64::from(old.is_some()),
            refused: false,
        })
    }

    /// Removes every record due at or before `now_ms`, found through the index.
    fn expire(&self, now_ms: u64, changes: &mut Vec<Change>) -> Result<u64, StorageError> {
        let end = match now_ms.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes()),
            None => Bound::Unbounded,
        };
        let due = self
            .expiry
            .range((Bound::Unbounded, end))
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_read)?;
        let mut count = 0;
        for ikey in due {
            let skey = ikey
                .get(8..)
                .ok_or_else(|| read_err(AnyError::error("expiry index key too short")))?;
            let table = table_of(skey)?;
            // The record decides, not the index entry: an entry left stale by a crash must
            // not remove a record whose deadline has since moved.
            if let Some(record) = self.record(skey)? {
                if record.is_expired(now_ms) {
                    self.remove((table, &skey[1..], skey), &record, changes)?;
                    count += 1;
                }
            }
            self.expiry.remove(&ikey).map_err(sled_write)?;
        }
        Ok(count)
    }
}

/// Records of a snapshot waiting to be written to sled, one batch per tree.
#[derive(Default)]
struct Pending {
    data: sled::Batch,
    expiry: sled::Batch,
    owners: sled::Batch,
    bytes: usize,
}

impl Pending {
    fn apply(self, trees: &Trees) -> Result<(), StorageError> {
        trees.owners.apply_batch(self.owners).map_err(sled_write)?;
        trees.data.apply_batch(self.data).map_err(sled_write)?;
        trees.expiry.apply_batch(self.expiry).map_err(sled_write)
    }
}
