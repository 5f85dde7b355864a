//! Tests of the fleet store on a group of one: sealing, rotation, expiry, and that no
//! plaintext reaches the disk.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::crypto::{IndexKey, Key, Ring, Sealer};
use crate::limits::Limits;
use crate::raft::tests_support::eventually;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Value {
    email: String,
    n: u64,
}

fn value(email: &str) -> Value {
    Value {
        email: email.to_owned(),
        n: 7,
    }
}

fn config() -> Config {
    Config {
        expire_interval: Duration::from_millis(50),
        snapshot_after: 10,
        ..Config::default()
    }
}

async fn open(dir: &Path, ring: Ring) -> (Store, Runtime) {
    Store::open_single_with(&config(), dir, "127.0.0.1:0".into(), ring)
        .await
        .unwrap()
}

async fn close(store: Store, runtime: Runtime) {
    store.shutdown().await;
    drop(store);
    drop(runtime);
    // The runtime stops in the background; wait until sled's lock is released.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn ring_with(index: &IndexKey, keys: Vec<(u32, Key)>, active: u32) -> Ring {
    Ring {
        sealer: Sealer::new(keys, active).unwrap(),
        index: index.clone(),
    }
}

#[actix_web::test]
async fn values_round_trip_sealed_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Ring::single(Key::generate());
    let (store, rt) = open(dir.path(), ring.clone()).await;
    assert_eq!(
        store
            .put(
                Table::AuthSessions,
                b"token-1",
                &value("a@example.com"),
                None
            )
            .await
            .unwrap()
            .affected,
        0
    );
    let found: Found<Value> = store.get(Table::AuthSessions, b"token-1").unwrap().unwrap();
    assert_eq!(found.value, value("a@example.com"));
    // Another table, same natural key: another record.
    assert!(store
        .get::<Value>(Table::McpSessions, b"token-1")
        .unwrap()
        .is_none());
    let key = store.key(Table::AuthSessions, b"token-1");
    assert_eq!(key.len(), 32);
    assert_ne!(key, store.key(Table::McpSessions, b"token-1"));
    close(store, rt).await;

    let (store, rt) = open(dir.path(), ring).await;
    let again: Found<Value> = store.get(Table::AuthSessions, b"token-1").unwrap().unwrap();
    assert_eq!(again.value.email, "a@example.com");
    assert!(store.delete(Table::AuthSessions, b"token-1").await.unwrap());
    assert!(store
        .get::<Value>(Table::AuthSessions, b"token-1")
        .unwrap()
        .is_none());
    assert!(!store.delete(Table::AuthSessions, b"token-1").await.unwrap());
    close(store, rt).await;
}

#[actix_web::test]
async fn tampered_moved_and_retired_records_fail_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = Key::generate();
    let ring = Ring::single(k1.clone());
    let (store, rt) = open(dir.path(), ring.clone()).await;
    store
        .put(Table::McpSessions, b"a", &value("a@example.com"), None)
        .await
        .unwrap();
    let key_a = store.key(Table::McpSessions, b"a");
    let record = store
        .0
        .reader
        .get(Table::McpSessions, &key_a)
        .unwrap()
        .unwrap();

    // A flipped byte anywhere in the sealed value.
    let mut flipped = record.sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let key_b = store.key(Table::McpSessions, b"b");
    store
        .write(Command::Put {
            table: Table::McpSessions,
            key: key_b.clone(),
            deadline_ms: None,
            sealed: flipped,
        })
        .await
        .unwrap();
    assert!(matches!(
        store.get::<Value>(Table::McpSessions, b"b"),
        Err(Error::Sealed { .. })
    ));

    // A valid ciphertext moved to another key, and to another table.
    store
        .write(Command::Put {
            table: Table::McpSessions,
            key: key_b,
            deadline_ms: None,
            sealed: record.sealed.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(
        store.get::<Value>(Table::McpSessions, b"b"),
        Err(Error::Sealed { .. })
    ));
    store
        .write(Command::Put {
            table: Table::ToolState,
            key: key_a.clone(),
            deadline_ms: None,
            sealed: record.sealed,
        })
        .await
        .unwrap();
    assert!(matches!(
        store.get_stored::<Value>(Table::ToolState, &key_a),
        Err(Error::Sealed { .. })
    ));
    close(store, rt).await;

    // Key 1 retired from the ring: its records no longer open.
    let retired = ring_with(&ring.index, vec![(2, Key::generate())], 2);
    let (store, rt) = open(dir.path(), retired).await;
    assert!(matches!(
        store.get::<Value>(Table::McpSessions, b"a"),
        Err(Error::Sealed { .. })
    ));
    close(store, rt).await;
}

#[actix_web::test]
async fn rotation_keeps_old_records_and_reseal_moves_them_to_the_active_key() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = Key::generate();
    let k2 = Key::generate();
    let ring = Ring::single(k1.clone());
    let (store, rt) = open(dir.path(), ring.clone()).await;
    for i in 0..5u64 {
        store
            .put(
                Table::ToolState,
                &i.to_be_bytes(),
                &value("x"),
                Some(u64::MAX),
            )
            .await
            .unwrap();
    }
    close(store, rt).await;

    let both = ring_with(&ring.index, vec![(1, k1), (2, k2.clone())], 2);
    let (store, rt) = open(dir.path(), both).await;
    // Old records stay readable; new writes use key 2.
    assert!(store
        .get::<Value>(Table::ToolState, &0u64.to_be_bytes())
        .unwrap()
        .is_some());
    store
        .put(Table::ToolState, b"new", &value("y"), None)
        .await
        .unwrap();
    let new_key = store.key(Table::ToolState, b"new");
    let sealed = store
        .0
        .reader
        .get(Table::ToolState, &new_key)
        .unwrap()
        .unwrap()
        .sealed;
    assert_eq!(Sealer::key_id(&sealed), Some(2));
    assert_eq!(store.reseal().await.unwrap(), 5);
    assert_eq!(store.reseal().await.unwrap(), 0);
    close(store, rt).await;

    // With key 1 gone, everything still opens: it was all re-sealed with key 2.
    let only_new = ring_with(&ring.index, vec![(2, k2)], 2);
    let (store, rt) = open(dir.path(), only_new).await;
    for i in 0..5u64 {
        let found: Found<Value> = store
            .get(Table::ToolState, &i.to_be_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            found.deadline_ms,
            Some(u64::MAX),
            "re-sealing kept the deadline"
        );
    }
    close(store, rt).await;
}

#[actix_web::test]
async fn records_past_their_deadline_read_as_absent_and_are_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rt) = open(dir.path(), Ring::single(Key::generate())).await;
    let past = now_ms() - 1;
    store
        .put(Table::RequestState, b"old", &value("o"), Some(past))
        .await
        .unwrap();
    store
        .put(
            Table::RequestState,
            b"live",
            &value("l"),
            Some(now_ms() + 3_600_000),
        )
        .await
        .unwrap();
    store
        .put(Table::RequestState, b"forever", &value("f"), None)
        .await
        .unwrap();
    assert!(store
        .get::<Value>(Table::RequestState, b"old")
        .unwrap()
        .is_none());
    // The leader proposes the expiry; the record then leaves the replica.
    assert!(eventually(|| store.count(Table::RequestState) == 2).await);
    assert!(store
        .get::<Value>(Table::RequestState, b"live")
        .unwrap()
        .is_some());
    // Touch moves a deadline without rewriting the value.
    assert!(store
        .touch(Table::RequestState, b"live", Some(past))
        .await
        .unwrap());
    assert!(!store
        .touch(Table::RequestState, b"missing", Some(past))
        .await
        .unwrap());
    assert!(eventually(|| store.count(Table::RequestState) == 1).await);
    close(store, rt).await;
}

#[actix_web::test]
async fn no_plaintext_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rt) = open(dir.path(), Ring::single(Key::generate())).await;
    // Enough writes for snapshots to be built and the log purged.
    for i in 0..40u64 {
        let token = format!("token-canary-{i:04}");
        store
            .put(
                Table::AuthSessions,
                token.as_bytes(),
                &value(&format!("email-canary-{i:04}@example.com")),
                None,
            )
            .await
            .unwrap();
    }
    assert!(eventually(|| store.status().applied_index >= Some(40)).await);
    close(store, rt).await;
    let mut files = 0;
    for path in walk(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for needle in [&b"canary"[..], b"example.com"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                path.display()
            );
        }
    }
    assert!(files > 0);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[actix_web::test]
async fn waiting_readers_share_one_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rt) = open(dir.path(), Ring::single(Key::generate())).await;
    let barriers = &store.0.barriers;
    // Hold the turn so every caller arrives before any barrier starts.
    let turn = barriers.turn.lock().await;
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.read_barrier().await })
        })
        .collect();
    assert!(eventually(|| barriers.arrived.load(Ordering::SeqCst) == 20).await);
    drop(turn);
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    assert_eq!(barriers.rounds.load(Ordering::SeqCst), 1);
    // A caller arriving after that barrier finished gets a barrier of its own.
    store.read_barrier().await.unwrap();
    assert_eq!(barriers.rounds.load(Ordering::SeqCst), 2);
    close(store, rt).await;
}

#[actix_web::test]
async fn waiting_readers_share_a_failed_barrier_instead_of_each_waiting_it_out() {
    // A node that belongs to no group knows no leader: each barrier fails after
    // `raft.write_timeout`. Callers queued behind one get its answer at once.
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        write_timeout: Duration::from_millis(300),
        ..config()
    };
    let (store, rt) = Store::open(
        &config,
        dir.path(),
        "secret",
        Ring::single(Key::generate()),
        &Limits::default(),
    )
    .unwrap();
    let barriers = &store.0.barriers;
    let turn = barriers.turn.lock().await;
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.read_barrier().await })
        })
        .collect();
    assert!(eventually(|| barriers.arrived.load(Ordering::SeqCst) == 10).await);
    drop(turn);
    for caller in callers {
        let refused = caller.await.unwrap().unwrap_err();
        assert!(
            matches!(&refused, Error::Unavailable(why) if why == "no leader is known"),
            "{refused:?}"
        );
    }
    assert_eq!(barriers.rounds.load(Ordering::SeqCst), 1);
    // One arriving after that failure runs a barrier of its own.
    store.read_barrier().await.unwrap_err();
    assert_eq!(barriers.rounds.load(Ordering::SeqCst), 2);
    close(store, rt).await;
}

#[actix_web::test]
async fn writes_waiting_together_share_entries_and_each_gets_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        // One entry under way at a time, and no expiry entries in between.
        max_proposed_entries: 1,
        expire_interval: Duration::from_secs(3600),
        ..config()
    };
    let (store, rt) = Store::open_single_with(
        &config,
        dir.path(),
        "127.0.0.1:0".into(),
        Ring::single(Key::generate()),
    )
    .await
    .unwrap();
    // Entries applied so far; none yet (`None`) when the store's own first entries are
    // still on their way, which then count below and only make the bound harder to meet.
    let applied = |store: &Store| store.0.reader.applied_index().map_or(0, |i| i + 1);
    let before = applied(&store);
    // One owner under a cap of 5 makes 30 records at once, among 30 plain puts.
    let owner = store.owner(b"alice");
    let writes: Vec<_> = (0..60u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let natural = format!("record-{i}");
                let stored = if i % 2 == 0 {
                    let value = value("alice@example.com");
                    store
                        .put_owned(
                            Table::McpSessions,
                            natural.as_bytes(),
                            &value,
                            None,
                            owner,
                            5,
                        )
                        .await
                        .unwrap()
                } else {
                    let value = value("bob@example.com");
                    let outcome = store
                        .put(Table::McpSessions, natural.as_bytes(), &value, None)
                        .await
                        .unwrap();
                    assert_eq!(outcome.affected, 0, "a new record");
                    true
                };
                (natural, stored)
            })
        })
        .collect();
    let mut stored = 0;
    for write in writes {
        let (natural, was_stored) = write.await.unwrap();
        let found = store
            .get::<Value>(Table::McpSessions, natural.as_bytes())
            .unwrap();
        assert_eq!(found.is_some(), was_stored, "{natural}");
        stored += usize::from(was_stored);
    }
    // Every refusal was its own: exactly the cap's worth of Alice's records went in.
    assert_eq!(stored, 30 + 5);
    let entries = applied(&store) - before;
    assert!(entries < 60, "60 writes took {entries} entries");
    close(store, rt).await;
}

async fn open_capped(
    dir: &Path,
    ring: Ring,
    max_entry_bytes: usize,
    limits: &Limits,
) -> (Store, Runtime) {
    let config = Config {
        max_entry_bytes,
        ..config()
    };
    Store::open_single_secret(
        &config,
        dir,
        "127.0.0.1:0".into(),
        "secret-for-tests",
        ring,
        limits,
    )
    .await
    .unwrap()
}

#[actix_web::test]
async fn a_write_over_the_entry_cap_is_refused_counted_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    let (store, rt) = open_capped(dir.path(), Ring::single(Key::generate()), 2048, &limits).await;
    let big = Value {
        email: "x".repeat(4096),
        n: 1,
    };
    let refused = store.put(Table::ToolState, b"big", &big, None).await;
    assert!(
        matches!(refused, Err(Error::TooLarge { size, cap: 2048 }) if size > 4096),
        "{refused:?}"
    );
    assert_eq!(limits.refusals(MAX_ENTRY_BYTES), 1);
    assert!(store
        .get::<Value>(Table::ToolState, b"big")
        .unwrap()
        .is_none());
    store
        .put(Table::ToolState, b"small", &value("y"), None)
        .await
        .unwrap();
    assert_eq!(store.pending_writes(), 0, "every write finished");
    close(store, rt).await;
}

#[actix_web::test]
async fn reseal_batches_stay_within_the_entry_cap() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = Key::generate();
    let k2 = Key::generate();
    let ring = Ring::single(k1.clone());
    let limits = Limits::default();
    let (store, rt) = open_capped(dir.path(), ring.clone(), 64 * 1024, &limits).await;
    let record = |n| Value {
        email: "r".repeat(1000),
        n,
    };
    for i in 0..12u64 {
        store
            .put(Table::ToolState, &i.to_be_bytes(), &record(i), None)
            .await
            .unwrap();
    }
    // One record stored before the cap was lowered: too large for any entry now.
    let huge = Value {
        email: "h".repeat(8000),
        n: 99,
    };
    store
        .put(Table::ToolState, b"huge", &huge, None)
        .await
        .unwrap();
    close(store, rt).await;

    let both = ring_with(&ring.index, vec![(1, k1), (2, k2)], 2);
    let (store, rt) = open_capped(dir.path(), both, 4096, &limits).await;
    let before = store.status().last_log_index.unwrap();
    assert_eq!(store.reseal().await.unwrap(), 12, "the huge record is left");
    let entries = store.status().last_log_index.unwrap() - before;
    // About three 1 kB records fit 4 KiB: at least four entries for twelve records.
    assert!(entries >= 4, "{entries} entries");
    assert_eq!(
        limits.refusals(MAX_ENTRY_BYTES),
        0,
        "nothing over the cap was proposed"
    );
    assert_eq!(
        store
            .get::<Value>(Table::ToolState, b"huge")
            .unwrap()
            .map(|f| f.value),
        Some(huge),
        "left as it was, still readable with key 1"
    );
    close(store, rt).await;
}

#[actix_web::test]
async fn reseal_batches_are_measured_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rt) = open_capped(
        dir.path(),
        Ring::single(Key::generate()),
        4096,
        &Limits::default(),
    )
    .await;
    let reseal = |bytes: usize| Op::Reseal {
        table: Table::ToolState,
        key: vec![1; 32],
        expect: [0; 32],
        sealed: vec![9; bytes],
    };
    let ops: Vec<Op> = (0..20)
        .map(|i| reseal(if i == 7 { 5000 } else { 900 }))
        .collect();
    let batches = store.batches(ops);
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 19);
    for batch in &batches {
        let size = encoded_len(&Command::Batch(batch.clone()));
        assert!(size <= 4096, "a batch of {} is {size} bytes", batch.len());
    }
    assert!(batches.len() >= 5, "{} batches", batches.len());
    close(store, rt).await;
}

#[actix_web::test]
async fn a_snapshot_waits_until_the_log_since_the_last_one_outweighs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rt) = open(dir.path(), Ring::single(Key::generate())).await;
    let big = |i: u64| Value {
        email: "x".repeat(16 * 1024),
        n: i,
    };
    // Ten records of 16 KiB. The first snapshot comes after `snapshot_after` (10) entries,
    // a few of them the group's own, so it holds at least seven: over 112 KiB. It may come
    // while the last big writes are still on their way (the policy looks every 100 ms, and
    // each write waits for its fsync): at index 9 at the earliest, the tenth entry.
    for i in 0..10u64 {
        let key = format!("big-{i}");
        store
            .put(Table::ToolState, key.as_bytes(), &big(i), None)
            .await
            .unwrap();
    }
    assert!(
        eventually(|| store.status().snapshot_index >= Some(9)).await,
        "no snapshot after ten entries: {:?}",
        store.status().snapshot_index
    );
    let first = store.status().snapshot_index;
    // Forty small writes: four times `snapshot_after`, a few KiB of log in all (with the
    // big writes after the snapshot, at most 54 KiB).
    for i in 0..40u64 {
        let key = format!("small-{i}");
        store
            .put(Table::ToolState, key.as_bytes(), &value("s"), None)
            .await
            .unwrap();
    }
    // Ten checks of the policy, and more: the snapshot has not moved.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        store.status().snapshot_index,
        first,
        "a snapshot was built for less log than the last one weighs"
    );
    // Twice as many bytes of log as the snapshot: the next one comes.
    for i in 0..20u64 {
        let key = format!("big-{i}");
        store
            .put(Table::ToolState, key.as_bytes(), &big(i + 100), None)
            .await
            .unwrap();
    }
    assert!(eventually(|| store.status().snapshot_index > first).await);
    close(store, rt).await;
}
