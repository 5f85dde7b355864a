//! Snapshots: built into files, sent in chunks, checked in full before an install replaces
//! anything, finished after a crash, moved out of sled for data dirs of older versions.

use openraft::SnapshotMeta;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::*;
use crate::raft::command::{storage_key, to_stored};
use crate::raft::snapshot::Writer;
use crate::raft::SnapshotFile;

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The index of the last entry [`leader`] applies.
const LEADER_LAST: u64 = 2 * Table::ALL.len() as u64 + 2;

/// A leader with a record in every table, some with deadlines, one deleted: a membership,
/// two puts per table and a delete ([`LEADER_LAST`] entries).
async fn leader() -> Machine {
    let mut leader = Machine::new();
    leader.apply(EntryPayload::Membership(membership())).await;
    for (i, table) in Table::ALL.into_iter().enumerate() {
        let i = i as u64;
        leader.run(put(table, b"forever", None, &[i as u8])).await;
        leader
            .run(put(table, &i.to_be_bytes(), Some(100 * i), b"due"))
            .await;
    }
    leader
        .run(Command::Delete {
            table: Table::ToolState,
            key: b"forever".to_vec(),
        })
        .await;
    leader
}

/// Receives `bytes` the way openraft's chunked transport writes them: in chunks, with one
/// chunk sent again after a seek back, as a retry after a lost answer does.
async fn receive(m: &mut Machine, bytes: &[u8]) -> Box<SnapshotFile> {
    let mut file = m.sm.begin_receiving_snapshot().await.expect("begin");
    let chunk = bytes.len() / 3 + 1;
    let mut offset = 0;
    for (n, part) in bytes.chunks(chunk).enumerate() {
        file.write_all(part).await.expect("write a chunk");
        if n == 0 {
            file.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
            file.write_all(part).await.expect("write it again");
        }
        offset += part.len();
    }
    assert_eq!(offset, bytes.len());
    file.shutdown().await.expect("shutdown");
    file
}

/// The bytes of a snapshot file holding `records` under `meta`.
fn file_bytes(meta: &Meta, records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let mut writer = Writer::create(&path, meta).expect("create");
    for (k, v) in records {
        writer.record(k, v).expect("record");
    }
    writer.finish().expect("finish");
    std::fs::read(&path).expect("read")
}

/// Every (storage key, stored value) of `m`'s records, as a snapshot holds them.
fn stored(m: &Machine) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.db.open_tree("sm_data")
        .expect("tree")
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
        .collect()
}

#[tokio::test]
async fn applied_state_and_snapshot_survive_reopen() {
    let mut m = Machine::new();
    m.apply(EntryPayload::Membership(membership())).await;
    m.run(put(Table::AuthSessions, b"a", Some(50), b"1")).await;
    m.run(put(Table::Revocations, b"r", None, b"2")).await;
    let snapshot = m.build().await;
    m.run(put(Table::AuthSessions, b"b", Some(60), b"3")).await;
    let before = m.everything();
    let state = m.sm.applied_state().await.expect("applied state");

    let mut m = m.reopen();
    assert_eq!(m.everything(), before);
    assert_eq!(m.sm.applied_state().await.expect("applied state"), state);
    assert_eq!(m.sm.reader().applied_index(), Some(4));
    let current =
        m.sm.get_current_snapshot()
            .await
            .expect("read")
            .expect("kept");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(current.snapshot.bytes(), snapshot.snapshot.bytes());
    assert_eq!(
        m.run(Command::Expire { now_ms: 60 }).await,
        2,
        "index survives"
    );
}

#[tokio::test]
async fn snapshot_transfers_the_whole_state() {
    let mut leader = leader().await;
    let snapshot = leader.build().await;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, LEADER_LAST)));

    let mut follower = Machine::new();
    follower
        .run(put(Table::McpSessions, b"stale", None, b"gone"))
        .await;
    follower.build().await;
    follower.drain_changes();
    let received = receive(&mut follower, &snapshot.snapshot.bytes()).await;
    follower
        .sm
        .install_snapshot(&snapshot.meta, received)
        .await
        .expect("install");

    assert_eq!(follower.everything(), leader.everything());
    assert_eq!(follower.get(Table::McpSessions, b"stale"), None);
    assert_eq!(
        follower.sm.applied_state().await.expect("follower"),
        leader.sm.applied_state().await.expect("leader"),
    );
    assert_eq!(follower.sm.reader().applied_index(), Some(LEADER_LAST));
    assert_eq!(follower.drain_changes(), vec![Change::Reset]);
    let current = follower
        .sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(current.snapshot.bytes(), snapshot.snapshot.bytes());
    // The received file became the current one; the follower's own older one is gone.
    assert_eq!(
        follower.snapshot_files().len(),
        1,
        "{:?}",
        follower.snapshot_files()
    );

    // The expiry index was rebuilt from the records' deadlines.
    assert_eq!(follower.sm.reader().earliest_deadline(), Some(0));
    follower.next = leader.next;
    let cut = Command::Expire { now_ms: 300 };
    assert_eq!(follower.run(cut.clone()).await, leader.run(cut).await);
    assert_eq!(follower.everything(), leader.everything());
}

#[tokio::test]
async fn a_snapshot_read_from_elsewhere_is_copied_in() {
    // What openraft's storage suite does: the leader's snapshot handle is installed as it
    // is, so its bytes live in another state machine's directory.
    let mut leader = leader().await;
    leader.build().await;
    let current = leader
        .sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("kept");
    let expected = leader.everything();
    let bytes = current.snapshot.bytes();
    let mut follower = Machine::new();
    follower
        .sm
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .expect("install");
    drop(leader);
    assert_eq!(follower.everything(), expected);
    let mut follower = follower.reopen();
    let again = follower
        .sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(again.snapshot.bytes(), bytes, "a copy of its own");
    assert_eq!(follower.snapshot_files().len(), 1);
}

#[tokio::test]
async fn a_damaged_snapshot_changes_nothing() {
    let mut leader = Machine::new();
    leader.run(put(Table::AuthSessions, b"a", None, b"1")).await;
    leader.run(put(Table::AuthSessions, b"b", None, b"2")).await;
    let good = leader.build().await;
    let data = good.snapshot.bytes();
    let meta = good.meta.clone();
    let records = stored(&leader);

    let mut follower = Machine::new();
    follower
        .run(put(Table::AuthSessions, b"mine", None, b"kept"))
        .await;
    let before = follower.everything();

    let mut flipped = data.clone();
    let middle = data.len() / 2;
    flipped[middle] ^= 1;
    let mut wrong_format = data.clone();
    wrong_format[8] = 1;
    let truncated = data[..data.len() - 1].to_vec();
    let record = Record {
        deadline_ms: None,
        sealed: vec![1],
        owner: None,
    }
    .encode();
    let bad_table = file_bytes(&meta, &[(vec![0, 1], record.clone())]);
    let bad_record = file_bytes(&meta, &[(storage_key(Table::AuthSessions, b"x"), vec![9])]);
    let out_of_order = file_bytes(&meta, &[records[1].clone(), records[0].clone()]);
    let twice = file_bytes(&meta, &[records[0].clone(), records[0].clone()]);
    let other_meta = Meta {
        snapshot_id: "another".to_owned(),
        ..meta.clone()
    };
    let wrong_meta = file_bytes(&other_meta, &records);
    for (what, damaged) in [
        ("empty", vec![]),
        ("a flipped byte", flipped),
        ("an old format byte", wrong_format),
        ("truncated", truncated),
        ("a key of no table", bad_table),
        ("a damaged record", bad_record),
        ("keys out of order", out_of_order),
        ("a key twice", twice),
        ("another snapshot's header", wrong_meta),
    ] {
        let received = receive(&mut follower, &damaged).await;
        let result = follower.sm.install_snapshot(&meta, received).await;
        assert!(result.is_err(), "{what} was accepted");
        assert_eq!(follower.everything(), before, "{what} changed the records");
        assert!(
            follower.snapshot_files().is_empty(),
            "{what} left {:?}",
            follower.snapshot_files()
        );
    }
    assert!(follower
        .sm
        .get_current_snapshot()
        .await
        .expect("read")
        .is_none());
    // The good one still installs.
    let received = receive(&mut follower, &data).await;
    follower
        .sm
        .install_snapshot(&meta, received)
        .await
        .expect("install");
    assert_eq!(follower.everything(), leader.everything());
}

#[tokio::test]
async fn an_abandoned_transfer_leaves_no_file() {
    let mut m = Machine::new();
    let mut receiving = m.sm.begin_receiving_snapshot().await.expect("begin");
    receiving
        .write_all(b"half a snapshot")
        .await
        .expect("write");
    assert_eq!(m.snapshot_files().len(), 1);
    drop(receiving);
    assert!(m.snapshot_files().is_empty());
}

#[tokio::test]
async fn old_and_stray_snapshot_files_are_removed() {
    let mut m = Machine::new();
    m.run(put(Table::ToolState, b"t", None, b"1")).await;
    m.build().await;
    m.run(put(Table::ToolState, b"u", None, b"2")).await;
    let second = m.build().await;
    assert_eq!(m.snapshot_files().len(), 1, "{:?}", m.snapshot_files());
    // What a crash leaves: a build and a transfer cut short.
    let dir = m.dir.path().join("sm-snapshots");
    std::fs::write(dir.join("build-0.tmp"), b"partial").expect("write");
    std::fs::write(dir.join("incoming-0.tmp"), b"partial").expect("write");
    let mut m = m.reopen();
    assert_eq!(m.snapshot_files().len(), 1, "{:?}", m.snapshot_files());
    let current =
        m.sm.get_current_snapshot()
            .await
            .expect("read")
            .expect("kept");
    assert_eq!(current.meta, second.meta);
}

#[tokio::test]
async fn a_missing_snapshot_file_is_built_again_on_open() {
    let mut m = Machine::new();
    m.run(put(Table::ToolState, b"t", None, b"1")).await;
    let lost = m.build().await;
    m.run(put(Table::ToolState, b"u", None, b"2")).await;
    let everything = m.everything();
    for name in m.snapshot_files() {
        std::fs::remove_file(m.dir.path().join("sm-snapshots").join(name)).expect("remove");
    }
    let mut m = m.reopen();
    let current =
        m.sm.get_current_snapshot()
            .await
            .expect("read")
            .expect("built again");
    assert_eq!(
        current.meta.last_log_id,
        Some(log_id(1, 2)),
        "of the records now"
    );
    assert_ne!(current.meta.snapshot_id, lost.meta.snapshot_id);
    let mut other = Machine::new();
    let received = receive(&mut other, &current.snapshot.bytes()).await;
    other
        .sm
        .install_snapshot(&current.meta, received)
        .await
        .expect("install");
    assert_eq!(other.everything(), everything);
}

#[tokio::test]
async fn a_build_racing_with_an_install_never_replaces_a_newer_snapshot() {
    let mut leader = leader().await;
    let newer = leader.build().await;

    let mut follower = Machine::new();
    follower
        .run(put(Table::AuthSessions, b"a", None, b"1"))
        .await;
    let builder = follower.sm.get_snapshot_builder().await;
    // The build reads the state at index 1 ...
    let (built, name) = builder.capture().expect("capture");
    assert_eq!(built.last_log_id, Some(log_id(1, 1)));
    // ... an install of index LEADER_LAST lands before the build names its file ...
    let received = receive(&mut follower, &newer.snapshot.bytes()).await;
    follower
        .sm
        .install_snapshot(&newer.meta, received)
        .await
        .expect("install");
    // ... and the build must not name its older snapshot as the current one.
    let kept = builder.keep(&built, &name).expect("keep");
    assert_eq!(kept, crate::raft::state_machine::Kept::No);
    let current = follower
        .sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(current.meta, newer.meta);
}

/// Puts `leader`'s records in `m`'s sled as an older version stored its snapshot: one
/// postcard blob and the metadata in `sm_meta`.
fn store_legacy_snapshot(m: &Machine, meta: &Meta, records: &[(Vec<u8>, Vec<u8>)]) {
    let tree = m.db.open_tree("sm_meta").expect("tree");
    tree.insert("snapshot_meta", to_stored(1, meta).expect("encode"))
        .expect("insert");
    let blob = to_stored(1, &(records.to_vec(),)).expect("encode");
    tree.insert("snapshot_data", blob).expect("insert");
}

#[tokio::test]
async fn a_snapshot_an_older_version_kept_in_sled_moves_to_a_file() {
    let mut leader = leader().await;
    let built = leader.build().await;
    let records = stored(&leader);

    let mut old = Machine::new();
    old.run(put(Table::AuthSessions, b"own", None, b"x")).await;
    store_legacy_snapshot(&old, &built.meta, &records);
    let own = old.everything();

    let mut upgraded = old.reopen();
    assert_eq!(upgraded.everything(), own, "the records are untouched");
    let meta = upgraded.db.open_tree("sm_meta").expect("tree");
    assert!(!meta.contains_key("snapshot_data").expect("read"));
    assert!(!meta.contains_key("snapshot_meta").expect("read"));
    assert_eq!(upgraded.snapshot_files().len(), 1);
    let current = upgraded
        .sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("the same snapshot");
    assert_eq!(current.meta, built.meta, "openraft sees the same snapshot");

    // It is a whole snapshot: another node installs the leader's state from it.
    let mut other = Machine::new();
    let received = receive(&mut other, &current.snapshot.bytes()).await;
    other
        .sm
        .install_snapshot(&current.meta, received)
        .await
        .expect("install");
    assert_eq!(other.everything(), leader.everything());
}

#[tokio::test]
async fn an_interrupted_install_is_finished_on_open() {
    let mut leader = Machine::new();
    leader.run(put(Table::ToolState, b"t", Some(7), b"1")).await;
    let snapshot = leader.build().await;

    let mut follower = Machine::new();
    follower
        .run(put(Table::AuthSessions, b"old", None, b"x"))
        .await;
    // What install does before it replaces the trees: the checked file published and named
    // with the marker. Then a crash, half-way through the replacement.
    let name = "snapshot-1-0.snap";
    let dir = follower.dir.path().join("sm-snapshots");
    std::fs::write(dir.join(name), snapshot.snapshot.bytes()).expect("write");
    let meta = follower.db.open_tree("sm_meta").expect("tree");
    let current = to_stored(1, &(name, &snapshot.meta)).expect("encode");
    meta.insert("snapshot", current).expect("insert");
    meta.insert("installing", Vec::<u8>::new()).expect("insert");
    drop(meta);

    let mut follower = follower.reopen();
    assert_eq!(follower.everything(), leader.everything());
    let (applied, _) = follower.sm.applied_state().await.expect("applied");
    assert_eq!(applied, snapshot.meta.last_log_id);
    assert_eq!(follower.run(Command::Expire { now_ms: 7 }).await, 1);
}

#[tokio::test]
async fn an_install_an_older_version_left_unfinished_is_finished_on_open() {
    let mut leader = Machine::new();
    leader.run(put(Table::ToolState, b"t", Some(7), b"1")).await;
    let snapshot = leader.build().await;
    let records = stored(&leader);

    let mut follower = Machine::new();
    follower
        .run(put(Table::AuthSessions, b"old", None, b"x"))
        .await;
    // What the older install wrote first, then a crash before the trees were replaced.
    store_legacy_snapshot(&follower, &snapshot.meta, &records);
    let meta = follower.db.open_tree("sm_meta").expect("tree");
    meta.insert("installing", Vec::<u8>::new()).expect("insert");
    drop(meta);

    let mut follower = follower.reopen();
    assert_eq!(follower.everything(), leader.everything());
    let (applied, _) = follower.sm.applied_state().await.expect("applied");
    assert_eq!(applied, snapshot.meta.last_log_id);
    assert_eq!(follower.snapshot_files().len(), 1);
    assert_eq!(follower.run(Command::Expire { now_ms: 7 }).await, 1);
}
