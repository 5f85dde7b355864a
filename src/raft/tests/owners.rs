//! The owner index behind `PutOwned`: a cap per owner and table that every replica counts
//! the same way, through replacement, delete, expiry, reseal, snapshots and restarts.

use super::*;
use crate::raft::trees::Trees;
use crate::raft::Owner;

const ALICE: Owner = [0xa1; 32];
const BOB: Owner = [0xb0; 32];
const T: Table = Table::McpSessions;

fn owned(owner: Owner, key: &[u8], deadline_ms: Option<u64>, limit: u64) -> Command {
    Command::PutOwned {
        table: T,
        key: key.to_vec(),
        deadline_ms,
        sealed: key.to_vec(),
        owner,
        limit,
    }
}

/// Whether `owner`'s put of `key` under `limit` was stored.
async fn stored(m: &mut Machine, owner: Owner, key: &[u8], limit: u64) -> bool {
    let outcome = m.outcome(owned(owner, key, None, limit)).await;
    let present = m.get(T, key).is_some_and(|r| r.sealed == key);
    assert_eq!(!outcome.refused, present, "{outcome:?} for {key:?}");
    !outcome.refused
}

#[tokio::test]
async fn the_limit_refuses_new_records_and_never_evicts() {
    let mut m = Machine::new();
    assert!(stored(&mut m, ALICE, b"a1", 2).await);
    assert!(stored(&mut m, ALICE, b"a2", 2).await);
    let refused = m.outcome(owned(ALICE, b"a3", None, 2)).await;
    assert_eq!(
        refused,
        Outcome {
            affected: 0,
            refused: true
        }
    );
    assert_eq!(m.get(T, b"a3"), None, "nothing stored");
    assert!(
        m.get(T, b"a1").is_some() && m.get(T, b"a2").is_some(),
        "none evicted"
    );
    // Another owner, and the same owner in another table, have their own counts.
    assert!(stored(&mut m, BOB, b"b1", 2).await);
    let other_table = Command::PutOwned {
        table: Table::ToolState,
        key: b"a1".to_vec(),
        deadline_ms: None,
        sealed: vec![1],
        owner: ALICE,
        limit: 2,
    };
    assert!(!m.outcome(other_table).await.refused);
    // Replacing a record the owner already has does not count it twice.
    let replaced = m.outcome(owned(ALICE, b"a1", Some(9), 2)).await;
    assert_eq!(
        replaced,
        Outcome {
            affected: 1,
            refused: false
        }
    );
    // The limit is the proposer's: a node configured higher lets more in.
    assert!(stored(&mut m, ALICE, b"a3", 3).await);
    assert!(!stored(&mut m, ALICE, b"a4", 3).await);
    assert_eq!(m.sm.reader().owned(T), 4);
    assert_eq!(m.sm.reader().owned(Table::ToolState), 1);
}

#[tokio::test]
async fn rewriting_an_owned_record_keeps_its_owner() {
    let mut m = Machine::new();
    assert!(stored(&mut m, ALICE, b"a1", 1).await);
    // A plain put (a session's value changing), a touch and a reseal all keep the owner.
    m.run(put(T, b"a1", Some(50), b"new value")).await;
    m.run(Command::Touch {
        table: T,
        key: b"a1".to_vec(),
        deadline_ms: Some(60),
    })
    .await;
    let reseal = Command::Reseal {
        table: T,
        key: b"a1".to_vec(),
        expect: Sha256::digest(b"new value").into(),
        sealed: b"resealed".to_vec(),
    };
    assert_eq!(m.run(reseal).await, 1);
    let record = m.get(T, b"a1").expect("present");
    assert_eq!(record.owner, Some(ALICE));
    assert_eq!(record.sealed, b"resealed");
    assert!(!stored(&mut m, ALICE, b"a2", 1).await, "a1 still counts");
    // A record written by a plain put has no owner and counts for no one.
    m.run(put(T, b"plain", None, b"p")).await;
    assert_eq!(m.get(T, b"plain").expect("present").owner, None);
    assert_eq!(m.sm.reader().owned(T), 1);
}

#[tokio::test]
async fn delete_and_expiry_give_the_place_back() {
    let mut m = Machine::new();
    m.run(owned(ALICE, b"a1", None, 2)).await;
    m.run(owned(ALICE, b"a2", Some(100), 2)).await;
    assert!(!stored(&mut m, ALICE, b"a3", 2).await);

    m.run(Command::Delete {
        table: T,
        key: b"a1".to_vec(),
    })
    .await;
    assert_eq!(m.sm.reader().owned(T), 1);
    assert!(stored(&mut m, ALICE, b"a3", 2).await);
    assert!(!stored(&mut m, ALICE, b"a4", 2).await);

    assert_eq!(m.run(Command::Expire { now_ms: 100 }).await, 1);
    assert_eq!(m.sm.reader().owned(T), 1);
    assert!(stored(&mut m, ALICE, b"a4", 2).await);
    assert!(!stored(&mut m, ALICE, b"a5", 2).await);
}

/// Waits (a generous minute) for the count of the owner index an open starts.
async fn counted(m: &Machine) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !m.sm.reader().owned_is_counted() {
        assert!(
            std::time::Instant::now() < deadline,
            "the owner index was never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_owner_index_survives_reopen() {
    let mut m = Machine::new();
    m.run(owned(ALICE, b"a1", None, 2)).await;
    m.run(owned(ALICE, b"a2", Some(100), 2)).await;
    let mut m = m.reopen();
    // The cap holds from the first put, whether or not the table's count is done.
    assert!(!stored(&mut m, ALICE, b"a3", 2).await);
    counted(&m).await;
    assert_eq!(m.sm.reader().owned(T), 2);
    assert_eq!(m.run(Command::Expire { now_ms: 100 }).await, 1);
    assert!(stored(&mut m, ALICE, b"a3", 2).await);
}

#[tokio::test]
async fn caps_and_counts_hold_for_writes_right_after_a_reopen() {
    // Enough owners that the count after the reopen takes many chunks; whether these
    // writes land between its chunks is up to the scheduler (the chunk-by-chunk test
    // below drives that case).
    let mut m = Machine::new();
    let owners: Vec<Owner> = (0..40u8).map(|i| [i.wrapping_mul(6); 32]).collect();
    for (i, owner) in owners.iter().enumerate() {
        for k in 0..25u32 {
            let key = format!("{i}-{k}");
            assert!(stored(&mut m, *owner, key.as_bytes(), 1000).await);
        }
    }
    let mut m = m.reopen();
    for (i, owner) in owners.iter().enumerate().rev() {
        let new = format!("{i}-new");
        assert!(stored(&mut m, *owner, new.as_bytes(), 1000).await);
        m.run(Command::Delete {
            table: T,
            key: format!("{i}-0").into_bytes(),
        })
        .await;
        // Each owner's cap counts what it holds now: 25 records, after one in, one out.
        assert!(!stored(&mut m, *owner, b"over", 25).await);
    }
    counted(&m).await;
    assert_eq!(m.sm.reader().owned(T), 40 * 25);
    let reopened = m.reopen();
    counted(&reopened).await;
    assert_eq!(reopened.sm.reader().owned(T), 40 * 25);
}

#[tokio::test]
async fn a_snapshot_carries_the_owner_index() {
    let mut leader = Machine::new();
    leader.run(owned(ALICE, b"a1", None, 2)).await;
    leader.run(owned(ALICE, b"a2", Some(100), 2)).await;
    leader.run(owned(BOB, b"b1", None, 2)).await;
    let snapshot = leader.build().await;

    let mut follower = Machine::new();
    follower.run(owned(BOB, b"old1", None, 2)).await;
    follower.run(owned(BOB, b"old2", None, 2)).await;
    follower.install(&snapshot).await;
    assert_eq!(follower.sm.reader().owned(T), 3);
    follower.next = leader.next;

    // Both replicas decide every later command the same way.
    for (owner, key) in [(ALICE, b"a3"), (BOB, b"b2"), (BOB, b"b3")] {
        let on_leader = leader.outcome(owned(owner, key, None, 2)).await;
        let on_follower = follower.outcome(owned(owner, key, None, 2)).await;
        assert_eq!(on_leader, on_follower, "{key:?}");
    }
    assert_eq!(follower.everything(), leader.everything());
    let expire = Command::Expire { now_ms: 100 };
    assert_eq!(follower.run(expire.clone()).await, leader.run(expire).await);
    assert!(stored(&mut follower, ALICE, b"a4", 2).await);
    // The follower's own records went with the install: their index entries too.
    assert_eq!(follower.sm.reader().owned(T), 4);

    let mut follower = follower.reopen();
    counted(&follower).await;
    assert_eq!(follower.sm.reader().owned(T), 4);
    assert!(!stored(&mut follower, ALICE, b"a5", 2).await);
}

#[test]
fn writes_between_chunks_of_the_count_after_an_open_are_counted_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let owners: Vec<Owner> = (0..40u8).map(|i| [i * 6; 32]).collect();
    {
        let db = open_db(dir.path());
        let trees = Trees::open(&db).expect("trees");
        let mut changes = Vec::new();
        for (i, owner) in owners.iter().enumerate() {
            for k in 0..25 {
                let put = owned(*owner, format!("{i}-{k}").as_bytes(), None, 1000);
                trees.run(put, &mut changes).expect("put");
            }
        }
        db.flush().expect("flush");
    }
    let db = open_db(dir.path());
    let trees = Trees::open(&db).expect("trees");
    assert!(
        !trees.owned.is_counted(),
        "an index with keys is counted after the open"
    );
    let mut changes = Vec::new();
    let mut after = None;
    let mut chunks = 0usize;
    loop {
        // Between chunks, one owner puts a record and deletes one (before the first, puts
        // only): the owners go from the last to the first, so the writes fall past the
        // counted keys, then among them.
        let i = owners.len() - 1 - chunks % owners.len();
        let put = owned(owners[i], format!("{i}-new{chunks}").as_bytes(), None, 1000);
        trees.run(put, &mut changes).expect("put");
        if chunks > 0 {
            let delete = Command::Delete {
                table: T,
                key: format!("{i}-{}", chunks % 25).into_bytes(),
            };
            trees.run(delete, &mut changes).expect("delete");
        }
        chunks += 1;
        if trees.count_chunk(&mut after).expect("count") {
            break;
        }
    }
    assert!(chunks > 10, "counted in {chunks} chunks");
    assert!(trees.owned.is_counted());
    let held = trees.owners.iter().count() as u64;
    assert_eq!(trees.owned.of(T), held);
}

/// Trees on `dir` holding `alice` records of ALICE's and 3 of BOB's, each counted.
fn counted_trees(dir: &Path, alice: usize) -> (sled::Db, Trees) {
    let db = open_db(dir);
    let trees = Trees::open(&db).expect("trees");
    let mut changes = Vec::new();
    for (owner, n) in [(ALICE, alice), (BOB, 3)] {
        for k in 0..n {
            let put = owned(owner, format!("{}-{k}", owner[0]).as_bytes(), None, 1000);
            trees.run(put, &mut changes).expect("put");
        }
    }
    let mut after = None;
    while !trees.count_chunk(&mut after).expect("count") {}
    (db, trees)
}

fn reopen_trees(dir: &Path, db: sled::Db, trees: Trees) -> (sled::Db, Trees) {
    db.flush().expect("flush");
    drop(trees);
    drop(db);
    let db = open_db(dir);
    let trees = Trees::open(&db).expect("trees");
    (db, trees)
}

#[test]
fn a_clean_close_carries_the_counts_to_the_next_open_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, trees) = counted_trees(dir.path(), 70);
    let at = log_id(1, 42);
    trees.carry_counts(Some(&at)).expect("carry");
    let (db, trees) = reopen_trees(dir.path(), db, trees);
    assert!(!trees.owned.is_counted(), "counted after the open, as ever");
    assert!(trees.take_carried_counts(Some(&at)).expect("take"));
    // Counted at once: the tables, and the owner holding many records; the owner holding
    // few is counted again at its first capped put.
    assert!(trees.owned.is_counted());
    assert_eq!(trees.owned.of(T), 73);
    assert_eq!(trees.owned.of_owner(&ALICE, T), Some(70));
    assert_eq!(trees.owned.of_owner(&BOB, T), None);
    let mut changes = Vec::new();
    let over = owned(ALICE, b"over", None, 70);
    assert!(trees.run(over, &mut changes).expect("put").refused);
    let fits = owned(BOB, b"fits", None, 4);
    assert!(!trees.run(fits, &mut changes).expect("put").refused);
    assert_eq!(trees.owned.of_owner(&BOB, T), Some(4));
    assert_eq!(trees.owned.of(T), 74);
    // Taken by that open: the next finds none, whatever happened in between.
    let (_db, trees) = reopen_trees(dir.path(), db, trees);
    assert!(!trees.take_carried_counts(Some(&at)).expect("take"));
    assert!(!trees.owned.is_counted());
    assert_eq!(trees.owned.of_owner(&ALICE, T), None);
}

#[test]
fn counts_carried_at_another_applied_id_are_not_taken() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, trees) = counted_trees(dir.path(), 70);
    trees.carry_counts(Some(&log_id(1, 42))).expect("carry");
    let (db, trees) = reopen_trees(dir.path(), db, trees);
    assert!(!trees
        .take_carried_counts(Some(&log_id(1, 43)))
        .expect("take"));
    assert!(!trees.owned.is_counted());
    assert_eq!(trees.owned.of_owner(&ALICE, T), None);
    let (_db, trees) = reopen_trees(dir.path(), db, trees);
    assert!(!trees
        .take_carried_counts(Some(&log_id(1, 42)))
        .expect("take"));
}

#[tokio::test]
async fn a_write_after_the_close_takes_the_carried_counts_back_first() {
    let mut m = Machine::new();
    for k in 0..70u32 {
        assert!(stored(&mut m, ALICE, format!("a{k}").as_bytes(), 1000).await);
    }
    counted(&m).await;
    m.sm.closer().close().expect("close");
    let meta = m.db.open_tree("sm_meta").expect("meta");
    let carried = crate::raft::trees::CARRIED_COUNTS;
    assert!(meta.contains_key(carried).expect("read"));
    // An apply that runs after the close (Raft's state machine task ending its last
    // batch) removes them before it writes: a crash midway leaves no counts that miss it.
    assert!(stored(&mut m, ALICE, b"late", 1000).await);
    assert!(!meta.contains_key(carried).expect("read"));
    drop(meta);
    let mut m = m.reopen();
    assert_eq!(m.sm.reader().owner_counted(&ALICE, T), None);
    assert!(!stored(&mut m, ALICE, b"over", 71).await);
    counted(&m).await;
    assert_eq!(m.sm.reader().owned(T), 71);

    // Closed with nothing after: the next open has them, and they hold.
    m.sm.closer().close().expect("close");
    let mut m = m.reopen();
    assert!(m.sm.reader().owned_is_counted());
    assert_eq!(m.sm.reader().owned(T), 71);
    assert_eq!(m.sm.reader().owner_counted(&ALICE, T), Some(71));
    assert!(!stored(&mut m, ALICE, b"over", 71).await);
    assert!(stored(&mut m, ALICE, b"fits", 72).await);
    assert_eq!(m.sm.reader().owned(T), 72);
}

#[tokio::test]
async fn an_install_after_the_close_drops_the_carried_counts() {
    let mut leader = Machine::new();
    leader.run(owned(BOB, b"b1", None, 2)).await;
    let snapshot = leader.build().await;
    let mut m = Machine::new();
    for k in 0..70u32 {
        assert!(stored(&mut m, ALICE, format!("a{k}").as_bytes(), 1000).await);
    }
    counted(&m).await;
    m.sm.closer().close().expect("close");
    let meta = m.db.open_tree("sm_meta").expect("meta");
    let carried = crate::raft::trees::CARRIED_COUNTS;
    assert!(meta.contains_key(carried).expect("read"));
    m.install(&snapshot).await;
    assert!(!meta.contains_key(carried).expect("read"));
    drop(meta);
    let m = m.reopen();
    assert_eq!(m.sm.reader().owner_counted(&ALICE, T), None);
    counted(&m).await;
    assert_eq!(m.sm.reader().owned(T), 1);
}
