//! The state machine: sealed records in sled with an expiry index, the applied log id and
//! membership, and snapshots built from and installed into those trees.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers here return
// the same type so `?` needs no conversions. Storage errors are rare and stop the node, so
// boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::changes::Changes;
use super::command::{from_stored, storage_key, to_stored};
use super::{Change, Command, NodeId, Op, Outcome, Record, StorageError, Table, TypeConfig};

/// Format byte in front of metadata and snapshot data; bump it when a shape changes.
const FORMAT_V1: u8 = 1;

const DATA_TREE: &str = "sm_data";
const EXPIRY_TREE: &str = "sm_expiry";
const META_TREE: &str = "sm_meta";
const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// Present while a snapshot replaces the trees, so a crash midway is finished on open.
const INSTALLING: &[u8] = b"installing";

type Membership = StoredMembership<NodeId, BasicNode>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What a snapshot carries after its format byte.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    /// Every (storage key, encoded record) pair, in key order.
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

fn read_err(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::read_state_machine(e).into()
}

fn write_err(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::write_state_machine(e).into()
}

fn sled_read(e: sled::Error) -> StorageError {
    read_err(&e)
}

fn sled_write(e: sled::Error) -> StorageError {
    write_err(&e)
}

/// The expiry index key of the record under `skey`: the deadline big-endian, then `skey`,
/// so a range scan from the start finds every record due by a cut-off.
fn expiry_key(deadline_ms: u64, skey: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + skey.len());
    out.extend_from_slice(&deadline_ms.to_be_bytes());
    out.extend_from_slice(skey);
    out
}

/// The table of a storage key, or an error naming the damage.
fn table_of(skey: &[u8]) -> Result<Table, StorageError> {
    skey.first()
        .and_then(|&b| Table::from_byte(b))
        .ok_or_else(|| read_err(AnyError::error("stored key has no known table byte")))
}

fn decode_record(bytes: &[u8]) -> Result<Record, StorageError> {
    Record::decode(bytes).ok_or_else(|| read_err(AnyError::error("damaged stored record")))
}

/// Checks every pair of a snapshot and returns its records.
fn decode_snapshot(data: &[u8]) -> Result<Vec<(Vec<u8>, Record)>, AnyError> {
    let body: SnapshotBody = from_stored(FORMAT_V1, data)?;
    body.records
        .into_iter()
        .map(|(skey, bytes)| {
            table_of(&skey).map_err(|e| AnyError::new(&e))?;
            let record = Record::decode(&bytes)
                .ok_or_else(|| AnyError::error("damaged record in snapshot"))?;
            Ok((skey, record))
        })
        .collect()
}

fn applied_raw(applied: Option<&LogId<NodeId>>) -> u64 {
    // index + 1, so that 0 can mean "nothing applied".
    applied.map_or(0, |id| id.index.saturating_add(1))
}

/// The trees of the state machine, shared by the machine, its readers and its builders.
#[derive(Clone)]
struct Trees {
    data: sled::Tree,
    expiry: sled::Tree,
    meta: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees, StorageError> {
        let open = |name: &str| db.open_tree(name).map_err(sled_read);
        Ok(Trees {
            data: open(DATA_TREE)?,
            expiry: open(EXPIRY_TREE)?,
            meta: open(META_TREE)?,
        })
    }

    fn record(&self, skey: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.data.get(skey).map_err(sled_read)? {
            Some(bytes) => decode_record(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(sled_read)? {
            Some(bytes) => from_stored(FORMAT_V1, &bytes).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = to_stored(FORMAT_V1, value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(sled_write)?;
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
        let meta = self.read_meta::<Meta>(SNAPSHOT_META)?;
        let data = self.meta.get(SNAPSHOT_DATA).map_err(sled_read)?;
        Ok(meta.zip(data).map(|(meta, data)| (meta, data.to_vec())))
    }

    /// Stores `meta` and `data` as the current snapshot in one atomic batch.
    fn keep_snapshot(
        &self,
        meta: &Meta,
        data: &[u8],
        installing: bool,
    ) -> Result<(), StorageError> {
        let meta = to_stored(FORMAT_V1, meta).map_err(write_err)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, meta);
        batch.insert(SNAPSHOT_DATA, data);
        if installing {
            batch.insert(INSTALLING, Vec::new());
        }
        self.meta.apply_batch(batch).map_err(sled_write)
    }

    /// Replaces every record, the index and the applied state with a snapshot's.
    fn replace(&self, records: &[(Vec<u8>, Record)], meta: &Meta) -> Result<(), StorageError> {
        self.data.clear().map_err(sled_write)?;
        self.expiry.clear().map_err(sled_write)?;
        let mut data = sled::Batch::default();
        let mut expiry = sled::Batch::default();
        for (skey, record) in records {
            data.insert(skey.as_slice(), record.encode());
            if let Some(deadline) = record.deadline_ms {
                expiry.insert(expiry_key(deadline, skey), Vec::new());
            }
        }
        self.data.apply_batch(data).map_err(sled_write)?;
        self.expiry.apply_batch(expiry).map_err(sled_write)?;
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

    /// Writes `new` under `skey`, moving its expiry index entry from `old`'s deadline.
    fn store(
        &self,
        (table, key, skey): (Table, &[u8], &[u8]),
        old: Option<&Record>,
        new: &Record,
        changes: &mut Vec<Change>,
    ) -> Result<(), StorageError> {
        // The new index entry goes in before the old one goes out: after a crash a stale
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

    /// Removes the record `old` under `skey` and its index entry.
    fn remove(
        &self,
        (table, key, skey): (Table, &[u8], &[u8]),
        old: &Record,
        changes: &mut Vec<Change>,
    ) -> Result<(), StorageError> {
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

    /// Applies one command and returns how many records it affected.
    fn run(&self, command: Command, changes: &mut Vec<Change>) -> Result<u64, StorageError> {
        // A batch is flat (ops, never commands), so this never recurses.
        command
            .into_ops()
            .into_iter()
            .try_fold(0, |sum, op| Ok(sum + self.op(op, changes)?))
    }

    /// Applies one operation and returns how many records it affected.
    fn op(&self, op: Op, changes: &mut Vec<Change>) -> Result<u64, StorageError> {
        let (table, key) = match &op {
            Op::Expire { now_ms } => return self.expire(*now_ms, changes),
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
            },
            // Every other operation acts only on a record that exists.
            (_, None) => return Ok(0),
            (Op::Touch { deadline_ms, .. }, Some(old)) => Record {
                deadline_ms: *deadline_ms,
                sealed: old.sealed.clone(),
            },
            (Op::Reseal { expect, sealed, .. }, Some(old))
                if Sha256::digest(&old.sealed).as_slice() == expect.as_slice() =>
            {
                Record {
                    deadline_ms: old.deadline_ms,
                    sealed: sealed.clone(),
                }
            }
            (Op::Delete { .. }, Some(old)) => {
                self.remove(at, old, changes)?;
                return Ok(1);
            }
            // A reseal whose expected digest no longer matches.
            _ => return Ok(0),
        };
        self.store(at, old.as_ref(), &new, changes)?;
        Ok(u64::from(old.is_some()))
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

/// The Raft state machine over one shared `sled::Db`: records in `sm_data`, the expiry
/// index in `sm_expiry`, applied state and the current snapshot in `sm_meta`.
pub struct StateMachine {
    db: sled::Db,
    trees: Trees,
    changes: Changes,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    applied_index: Arc<AtomicU64>,
    // Apply and install hold it exclusively; a snapshot build holds it shared while it
    // reads, so the records it copies match the applied log id it reports.
    lock: Arc<RwLock<()>>,
}

impl StateMachine {
    /// Opens the state machine trees of `db`, restoring the applied log id, membership and
    /// current snapshot, and announcing record changes on `changes`.
    pub fn open(db: &sled::Db, changes: Changes) -> Result<StateMachine, StorageError> {
        let trees = Trees::open(db)?;
        if trees.meta.contains_key(INSTALLING).map_err(sled_read)? {
            // A crash interrupted an install: the trees are half replaced, the snapshot is
            // stored, so finish the install from it.
            let (meta, data) = trees
                .current_snapshot()?
                .ok_or_else(|| read_err(AnyError::error("install marker without snapshot")))?;
            let records = decode_snapshot(&data).map_err(read_err)?;
            trees.replace(&records, &meta)?;
            db.flush().map_err(sled_write)?;
        }
        let applied = trees.read_meta::<LogId<NodeId>>(APPLIED)?;
        let membership = trees
            .read_meta::<Membership>(MEMBERSHIP)?
            .unwrap_or_default();
        Ok(StateMachine {
            db: db.clone(),
            trees,
            changes,
            applied_index: Arc::new(AtomicU64::new(applied_raw(applied.as_ref()))),
            applied,
            membership,
            lock: Arc::default(),
        })
    }

    /// A handle for reads outside Raft, usable from any thread.
    pub fn reader(&self) -> Reader {
        Reader {
            data: self.trees.data.clone(),
            expiry: self.trees.expiry.clone(),
            applied: self.applied_index.clone(),
        }
    }

    fn apply_entries(
        &mut self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<Outcome>, StorageError> {
        let lock = self.lock.clone();
        let _guard = lock.write().unwrap_or_else(PoisonError::into_inner);
        let mut outcomes = Vec::new();
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::default(),
                EntryPayload::Normal(command) => Outcome {
                    affected: self.trees.run(command, changes)?,
                },
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    self.trees.write_meta(MEMBERSHIP, &self.membership)?;
                    Outcome::default()
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

    fn install(&mut self, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
        let records = decode_snapshot(data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        let lock = self.lock.clone();
        let _guard = lock.write().unwrap_or_else(PoisonError::into_inner);
        self.trees.keep_snapshot(meta, data, true)?;
        self.trees.replace(&records, meta)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
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
            lock: self.lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.get_ref())?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.applied_index
            .store(applied_raw(self.applied.as_ref()), Ordering::Release);
        self.changes.send(Change::Reset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.trees.current_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds snapshots of a [`StateMachine`] while it keeps applying entries.
pub struct SnapshotBuilder {
    db: sled::Db,
    trees: Trees,
    lock: Arc<RwLock<()>>,
}

impl SnapshotBuilder {
    /// Copies the records with the applied state they belong to.
    fn capture(&self) -> Result<(Meta, Vec<u8>), StorageError> {
        let guard = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        let applied = self.trees.read_meta::<LogId<NodeId>>(APPLIED)?;
        let membership = self
            .trees
            .read_meta::<Membership>(MEMBERSHIP)?
            .unwrap_or_default();
        let records = self
            .trees
            .data
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_read)?;
        drop(guard);
        let data = to_stored(FORMAT_V1, &SnapshotBody { records }).map_err(write_err)?;
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
        Ok((meta, data))
    }

    /// Keeps the built snapshot as the current one unless a newer one was installed.
    fn keep(&self, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
        let _guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.trees.read_meta::<Meta>(SNAPSHOT_META)?;
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(());
        }
        self.trees.keep_snapshot(meta, data, false)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = self.capture()?;
        self.keep(&meta, &data)?;
        // openraft purges the log up to the snapshot next: keep the snapshot on disk first.
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Reads the applied records outside Raft, from any thread, without locking.
#[derive(Clone)]
pub struct Reader {
    data: sled::Tree,
    expiry: sled::Tree,
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
