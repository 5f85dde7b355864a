//! Tests of the log store and state machine: openraft's storage suite, command semantics
//! and restarts; snapshots and the owner index in their own files.

mod groups;
mod log_files;
mod owners;
mod snapshots;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, Vote,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::changes::Changes;
use super::{
    Change, Command, LogStore, NodeId, Outcome, Record, StateMachine, StorageError, Table,
    TypeConfig,
};

/// Opens sled at `path`. Reopening in the same process can find the file lock still held
/// for a moment by sled's background threads of the handle just dropped, so a held lock
/// is waited for (up to 10 s) instead of failing the test.
fn open_db(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(8 << 20)
            .open()
        {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open sled: {e:?}"),
        }
    }
}

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(dir.path());
        let changes = Changes::default();
        let log = LogStore::open(dir.path(), &db)?;
        let machine = StateMachine::open(&db, dir.path(), changes)?;
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload,
    }
}

fn put(table: Table, key: &[u8], deadline_ms: Option<u64>, sealed: &[u8]) -> Command {
    Command::Put {
        table,
        key: key.to_vec(),
        deadline_ms,
        sealed: sealed.to_vec(),
    }
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes = BTreeMap::from([(1, BasicNode::new("a:1")), (2, BasicNode::new("b:2"))]);
    Membership::new(vec![BTreeSet::from([1, 2])], nodes)
}

/// What [`super::Reader::scan`] returns for one table.
type Scan = Vec<(Vec<u8>, Record)>;

/// A state machine on its own temp dir, applying commands at increasing log indexes.
struct Machine {
    dir: TempDir,
    db: sled::Db,
    sm: StateMachine,
    changes: std::sync::Arc<std::sync::Mutex<Vec<Change>>>,
    next: u64,
}

impl Machine {
    fn new() -> Machine {
        Machine::open(tempfile::tempdir().expect("temp dir"), 1)
    }

    fn open(dir: TempDir, next: u64) -> Machine {
        let db = open_db(dir.path());
        let tx = Changes::default();
        let changes = std::sync::Arc::<std::sync::Mutex<Vec<Change>>>::default();
        let seen = changes.clone();
        tx.hook(move |change| seen.lock().unwrap().push(change.clone()));
        let sm = StateMachine::open(&db, dir.path(), tx).expect("open state machine");
        Machine {
            dir,
            db,
            sm,
            changes,
            next,
        }
    }

    /// Drops the state machine and the Db, then opens both again from the same dir.
    fn reopen(self) -> Machine {
        let Machine {
            dir, db, sm, next, ..
        } = self;
        drop(sm);
        drop(db);
        Machine::open(dir, next)
    }

    async fn run(&mut self, command: Command) -> u64 {
        self.outcome(command).await.affected
    }

    async fn outcome(&mut self, command: Command) -> Outcome {
        let outcomes = self.apply(EntryPayload::Normal(command)).await;
        outcomes[0][0]
    }

    /// Applies `payload` as the next entry: one outcome per write it carries.
    async fn apply(&mut self, payload: EntryPayload<TypeConfig>) -> Vec<Vec<Outcome>> {
        let e = entry(self.next, payload);
        self.next += 1;
        self.sm.apply([e]).await.expect("apply")
    }

    fn get(&self, table: Table, key: &[u8]) -> Option<Record> {
        self.sm.reader().get(table, key).expect("get")
    }

    fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.lock().unwrap())
    }

    async fn build(&mut self) -> Snapshot<TypeConfig> {
        let mut builder = self.sm.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("build a snapshot")
    }

    /// Receives `snapshot`'s bytes in one piece and installs it, as a follower does.
    async fn install(&mut self, snapshot: &Snapshot<TypeConfig>) {
        let mut received = self.sm.begin_receiving_snapshot().await.expect("begin");
        tokio::io::AsyncWriteExt::write_all(&mut received, &snapshot.snapshot.bytes())
            .await
            .expect("write");
        self.sm
            .install_snapshot(&snapshot.meta, received)
            .await
            .expect("install");
    }

    /// The files in the snapshot directory, by name.
    fn snapshot_files(&self) -> Vec<String> {
        let dir: PathBuf = self.dir.path().join("sm-snapshots");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("the snapshot directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn everything(&self) -> Vec<(Table, Scan)> {
        let reader = self.sm.reader();
        Table::ALL
            .iter()
            .map(|&t| (t, reader.scan(t).expect("scan")))
            .collect()
    }
}

#[tokio::test]
async fn put_touch_delete() {
    let mut m = Machine::new();
    let t = Table::McpSessions;
    assert_eq!(m.run(put(t, b"k", Some(100), b"v1")).await, 0, "created");
    assert_eq!(m.run(put(t, b"k", Some(200), b"v2")).await, 1, "replaced");
    let record = m.get(t, b"k").expect("present");
    assert_eq!(record.sealed, b"v2");
    assert_eq!(record.deadline_ms, Some(200));
    assert_eq!(m.get(Table::ToolState, b"k"), None, "tables are separate");

    let touch = |key: &[u8], deadline_ms| Command::Touch {
        table: t,
        key: key.to_vec(),
        deadline_ms,
    };
    assert_eq!(m.run(touch(b"k", Some(900))).await, 1);
    let record = m.get(t, b"k").expect("present");
    assert_eq!(
        (record.deadline_ms, record.sealed),
        (Some(900), b"v2".to_vec())
    );
    assert_eq!(m.run(touch(b"missing", Some(900))).await, 0);
    assert_eq!(m.get(t, b"missing"), None, "touch never creates");

    let delete = |key: &[u8]| Command::Delete {
        table: t,
        key: key.to_vec(),
    };
    assert_eq!(m.run(delete(b"k")).await, 1);
    assert_eq!(m.run(delete(b"k")).await, 0);
    assert_eq!(m.get(t, b"k"), None);
    assert_eq!(m.sm.reader().count(t), 0);
    assert_eq!(
        m.sm.reader().earliest_deadline(),
        None,
        "index cleaned on delete"
    );
}

#[tokio::test]
async fn reseal_only_replaces_the_expected_value() {
    let mut m = Machine::new();
    let t = Table::TenantCredentials;
    m.run(put(t, b"k", Some(500), b"old")).await;
    let reseal = |expect: &[u8], sealed: &[u8]| Command::Reseal {
        table: t,
        key: b"k".to_vec(),
        expect: Sha256::digest(expect).into(),
        sealed: sealed.to_vec(),
    };
    assert_eq!(m.run(reseal(b"other", b"new")).await, 0, "digest mismatch");
    assert_eq!(m.get(t, b"k").expect("present").sealed, b"old");
    assert_eq!(m.run(reseal(b"old", b"new")).await, 1, "digest match");
    let record = m.get(t, b"k").expect("present");
    assert_eq!(
        (record.deadline_ms, record.sealed),
        (Some(500), b"new".to_vec())
    );
    assert_eq!(m.run(reseal(b"old", b"newer")).await, 0, "already resealed");
    let missing = Command::Reseal {
        table: t,
        key: b"nope".to_vec(),
        expect: Sha256::digest(b"old").into(),
        sealed: b"x".to_vec(),
    };
    assert_eq!(m.run(missing).await, 0);
}

#[tokio::test]
async fn expire_removes_records_due_by_the_cut_off() {
    let mut m = Machine::new();
    m.run(put(Table::AuthSessions, b"a", Some(100), b"a")).await;
    m.run(put(Table::AuthSessions, b"b", Some(200), b"b")).await;
    m.run(put(Table::AuthSessions, b"forever", None, b"f"))
        .await;
    m.run(put(Table::Revocations, b"c", Some(201), b"c")).await;
    m.run(put(Table::StreamEvents, b"d", Some(u64::MAX), b"d"))
        .await;
    assert_eq!(m.sm.reader().earliest_deadline(), Some(100));
    m.drain_changes();

    assert_eq!(m.run(Command::Expire { now_ms: 200 }).await, 2, "a and b");
    let mut expired = m.drain_changes();
    expired.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
    let record = |key: &[u8]| Change::Record {
        table: Table::AuthSessions,
        key: key.to_vec(),
    };
    assert_eq!(expired, vec![record(b"a"), record(b"b")]);
    assert_eq!(m.get(Table::AuthSessions, b"a"), None);
    assert!(m.get(Table::AuthSessions, b"forever").is_some());
    assert!(
        m.get(Table::Revocations, b"c").is_some(),
        "201 is after the cut-off"
    );
    assert_eq!(m.sm.reader().earliest_deadline(), Some(201));

    assert_eq!(
        m.run(Command::Expire { now_ms: 200 }).await,
        0,
        "index cleaned"
    );
    assert_eq!(
        m.run(Command::Expire { now_ms: u64::MAX }).await,
        2,
        "c and d"
    );
    assert!(
        m.get(Table::AuthSessions, b"forever").is_some(),
        "no deadline, never"
    );
    assert_eq!(m.sm.reader().earliest_deadline(), None);
}

#[tokio::test]
async fn a_moved_deadline_is_not_expired_by_the_old_one() {
    let mut m = Machine::new();
    let t = Table::RequestState;
    m.run(put(t, b"put", Some(100), b"1")).await;
    m.run(put(t, b"put", Some(500), b"2")).await;
    m.run(put(t, b"touch", Some(100), b"1")).await;
    let touch = Command::Touch {
        table: t,
        key: b"touch".to_vec(),
        deadline_ms: None,
    };
    m.run(touch).await;
    assert_eq!(m.run(Command::Expire { now_ms: 100 }).await, 0);
    assert_eq!(m.sm.reader().count(t), 2);
    assert_eq!(m.run(Command::Expire { now_ms: 500 }).await, 1, "put");
    assert!(m.get(t, b"touch").is_some(), "touched to no deadline");
}

/// One batch of the operations of `commands`, in order.
fn batch(commands: Vec<Command>) -> Command {
    Command::Batch(
        commands
            .into_iter()
            .flat_map(|c| c.into_ops().expect("no capped puts in a batch"))
            .collect(),
    )
}

#[tokio::test]
async fn batch_applies_in_order_and_sums() {
    let mut m = Machine::new();
    let t = Table::ToolState;
    m.run(put(t, b"x", None, b"0")).await;
    let batch = batch(vec![
        put(t, b"a", Some(10), b"1"),
        put(t, b"x", None, b"2"),
        Command::Delete {
            table: t,
            key: b"a".to_vec(),
        },
        put(t, b"x", None, b"3"),
        put(t, b"y", None, b"4"),
        Command::Touch {
            table: t,
            key: b"a".to_vec(),
            deadline_ms: None,
        },
        Command::Expire { now_ms: 5 },
    ]);
    // x replaced twice, a deleted once; creations, the touch of a deleted key and an
    // expiry with nothing due count 0.
    assert_eq!(m.run(batch).await, 3);
    let keys: Vec<_> = m.sm.reader().scan(t).expect("scan");
    let got: Vec<_> = keys
        .iter()
        .map(|(k, r)| (k.as_slice(), r.sealed.as_slice()))
        .collect();
    assert_eq!(got, vec![(&b"x"[..], &b"3"[..]), (&b"y"[..], &b"4"[..])]);
    assert_eq!(m.run(Command::Batch(vec![])).await, 0);
}

#[tokio::test]
async fn changes_and_applied_state() {
    let mut m = Machine::new();
    assert_eq!(m.sm.reader().applied_index(), None);
    // Entries that carry no write have no outcome.
    assert_eq!(m.apply(EntryPayload::Blank).await, vec![vec![]]);
    assert_eq!(
        m.apply(EntryPayload::Membership(membership())).await,
        vec![vec![]]
    );
    assert_eq!(m.sm.reader().applied_index(), Some(2));
    let (applied, stored) = m.sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(stored.log_id(), &Some(log_id(1, 2)));
    assert_eq!(stored.membership(), &membership());
    assert!(m.drain_changes().is_empty());

    m.run(put(Table::McpSessions, b"s", None, b"v")).await;
    m.run(Command::Delete {
        table: Table::McpSessions,
        key: b"absent".to_vec(),
    })
    .await;
    let change = Change::Record {
        table: Table::McpSessions,
        key: b"s".to_vec(),
    };
    assert_eq!(
        m.drain_changes(),
        vec![change],
        "no change for a no-op delete"
    );
    assert_eq!(m.sm.reader().applied_index(), Some(4));
}

#[tokio::test]
async fn log_store_state_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let entries: Vec<Entry<TypeConfig>> = (0..=5)
        .map(|i| match i {
            2 => entry(i, EntryPayload::Membership(membership())),
            3 => entry(
                i,
                EntryPayload::Normal(put(Table::AuthSessions, b"k", Some(9), b"v")),
            ),
            _ => entry(i, EntryPayload::Blank),
        })
        .collect();
    let vote = Vote::new(3, 1);
    {
        let db = open_db(dir.path());
        let mut log = LogStore::open(dir.path(), &db).expect("open");
        assert_eq!(log.committed().index(), None);
        log.blocking_append(entries.clone()).await.expect("append");
        log.save_vote(&vote).await.expect("vote");
        log.save_committed(Some(log_id(1, 4)))
            .await
            .expect("committed");
        assert_eq!(log.committed().index(), Some(4));
        log.purge(log_id(1, 1)).await.expect("purge");
        // Golden bytes: the frame of entry 5 is its length (6), its CRC-32, the entry kind
        // (1), then the stored entry: format 1, postcard of (term 1, node 0), index 5, Blank.
        let stored = [1u8, 1, 1, 0, 5, 0];
        let mut frame = 6u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&stored).to_le_bytes());
        frame.extend_from_slice(&stored);
        let file =
            std::fs::read(dir.path().join("raft-log/00000000000000000001.wal")).expect("segment");
        assert!(file.windows(frame.len()).any(|w| w == frame), "{file:?}");
    }
    let db = open_db(dir.path());
    let mut log = LogStore::open(dir.path(), &db).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 4))
    );
    assert_eq!(log.committed().index(), Some(4));
    let got = log.try_get_log_entries(0..).await.expect("entries");
    assert_eq!(format!("{got:?}"), format!("{:?}", &entries[2..]));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert_eq!(
        log.try_get_log_entries(3..=4).await.expect("range").len(),
        2
    );
    assert_eq!(log.try_get_log_entries(4..4).await.expect("empty").len(), 0);

    log.truncate(log_id(1, 4)).await.expect("truncate");
    log.purge(log_id(1, 3)).await.expect("purge");
    drop(log);
    drop(db);
    let db = open_db(dir.path());
    let mut log = LogStore::open(dir.path(), &db).expect("reopen");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(
        state.last_log_id,
        Some(log_id(1, 3)),
        "empty log: last is the purged id"
    );
    assert!(log
        .try_get_log_entries(0..)
        .await
        .expect("entries")
        .is_empty());
}

#[tokio::test]
async fn purges_and_truncations_longer_than_one_batch_leave_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_db(dir.path());
    let mut log = LogStore::open(dir.path(), &db).expect("open");
    let entries: Vec<Entry<TypeConfig>> =
        (1..=1000).map(|i| entry(i, EntryPayload::Blank)).collect();
    log.blocking_append(entries).await.expect("append");
    log.purge(log_id(1, 600)).await.expect("purge");
    log.truncate(log_id(1, 800)).await.expect("truncate");
    let left = log.try_get_log_entries(0..).await.expect("entries");
    let indexes: Vec<u64> = left.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (601..800).collect::<Vec<_>>());
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 600)));
    assert_eq!(state.last_log_id, Some(log_id(1, 799)));
}

#[tokio::test]
async fn a_replication_read_stops_at_the_read_budget_but_never_returns_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_db(dir.path());
    // Ten entries of a 10 KB sealed value each.
    let entries: Vec<Entry<TypeConfig>> = (1..=10)
        .map(|i| {
            let value = vec![7u8; 10_000];
            entry(
                i,
                EntryPayload::Normal(put(Table::McpSessions, b"k", None, &value)),
            )
        })
        .collect();
    let mut log = LogStore::open(dir.path(), &db)
        .expect("open")
        .with_read_budget(35_000);
    log.blocking_append(entries).await.expect("append");
    let indexes =
        |got: Vec<Entry<TypeConfig>>| got.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    // Three entries fit 35 KB, a fourth would not; the rest is asked for again.
    let got = log.limited_get_log_entries(1, 11).await.expect("read");
    assert_eq!(indexes(got), vec![1, 2, 3]);
    let got = log.limited_get_log_entries(4, 6).await.expect("read");
    assert_eq!(indexes(got), vec![4, 5]);
    // One entry larger than the budget still goes out alone.
    let mut tight = LogStore::open(dir.path(), &db)
        .expect("open")
        .with_read_budget(1);
    let got = tight.limited_get_log_entries(2, 11).await.expect("read");
    assert_eq!(indexes(got), vec![2]);
    assert!(tight
        .limited_get_log_entries(5, 5)
        .await
        .expect("empty")
        .is_empty());
    // Without a budget the whole range comes back.
    let mut all = LogStore::open(dir.path(), &db).expect("open");
    assert_eq!(
        all.limited_get_log_entries(1, 11)
            .await
            .expect("read")
            .len(),
        10
    );
}

#[tokio::test]
async fn a_create_stores_only_where_nothing_is_and_the_first_wins() {
    let mut m = Machine::new();
    let create = |sealed: &[u8]| Command::Create {
        table: Table::KeyCheck,
        key: b"index".to_vec(),
        deadline_ms: None,
        sealed: sealed.to_vec(),
    };
    assert_eq!(m.outcome(create(b"first")).await, Outcome::default());
    let second = m.outcome(create(b"second")).await;
    assert!(second.refused && second.affected == 0, "{second:?}");
    assert_eq!(
        m.get(Table::KeyCheck, b"index").map(|r| r.sealed),
        Some(b"first".to_vec())
    );
}
