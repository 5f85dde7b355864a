//! The log's own files: restarts, torn and damaged tails, purges of whole segments, and a
//! log an older version kept in sled moved over on open.

use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{Entry, EntryPayload, RaftLogReader, Vote};

use super::{entry, log_id, membership, open_db, put};
use crate::raft::command::to_stored;
use crate::raft::{LogStore, Table, TypeConfig};

/// The log's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("raft-log"))
        .expect("log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn blanks(range: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
    range.map(|i| entry(i, EntryPayload::Blank)).collect()
}

fn sessions(range: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
    range
        .map(|i| {
            let key = format!("s{i}");
            let payload = put(Table::McpSessions, key.as_bytes(), Some(i), &[i as u8; 40]);
            entry(i, EntryPayload::Normal(payload))
        })
        .collect()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let got = log.try_get_log_entries(0..).await.expect("entries");
    got.iter().map(|e| e.log_id.index).collect()
}

/// Opens the log of `dir` (and the sled database beside it, as a node does).
fn open(dir: &Path) -> (sled::Db, LogStore) {
    let db = open_db(dir);
    let log = LogStore::open(dir, &db).expect("open log");
    (db, log)
}

#[tokio::test]
async fn a_restart_keeps_entries_vote_and_committed_id_from_the_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written = sessions(1..=20);
    {
        let (_db, mut log) = open(dir.path());
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
        log.blocking_append(written.clone()).await.expect("append");
        log.save_vote(&Vote::new_committed(3, 2))
            .await
            .expect("vote");
        log.save_committed(Some(log_id(1, 18)))
            .await
            .expect("committed");
        log.truncate(log_id(1, 19)).await.expect("truncate");
        log.blocking_append(blanks(19..=19)).await.expect("append");
    }
    let (_db, mut log) = open(dir.path());
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(3, 2))
    );
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 18))
    );
    assert_eq!(log.committed().index(), Some(18));
    let got = log.try_get_log_entries(1..=19).await.expect("entries");
    let mut expected = written[..18].to_vec();
    expected.extend(blanks(19..=19));
    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(log_id(1, 19)));
    assert_eq!(state.last_purged_log_id, None);
}

#[tokio::test]
async fn a_log_whose_creation_a_crash_cut_short_is_begun_again() {
    // A new data dir makes its log in place. A crash leaves the directory without a
    // segment, or with a segment whose header never reached the disk, or the temporary
    // directory of an earlier version's creation: each opens as an empty log that works.
    type Crash = fn(&Path);
    let states: [(&str, Crash); 3] = [
        ("no segment", |dir| {
            std::fs::create_dir(dir.join("raft-log")).expect("log dir");
        }),
        ("empty segment", |dir| {
            std::fs::create_dir(dir.join("raft-log")).expect("log dir");
            std::fs::write(dir.join("raft-log/00000000000000000001.wal"), b"").expect("file");
        }),
        ("temporary dir", |dir| {
            std::fs::create_dir(dir.join("raft-log.new")).expect("temp dir");
        }),
    ];
    for (name, crashed) in states {
        let dir = tempfile::tempdir().expect("temp dir");
        crashed(dir.path());
        {
            let (_db, mut log) = open(dir.path());
            assert_eq!(indexes(&mut log).await, Vec::<u64>::new(), "{name}");
            log.save_vote(&Vote::new(1, 1)).await.expect("vote");
            log.blocking_append(sessions(1..=3)).await.expect("append");
        }
        let (_db, mut log) = open(dir.path());
        assert_eq!(indexes(&mut log).await, vec![1, 2, 3], "{name}");
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new(1, 1)),
            "{name}"
        );
        assert_eq!(segments(dir.path()).len(), 1, "{name}");
        assert!(!dir.path().join("raft-log.new").exists(), "{name}");
    }
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_and_the_entries_before_it_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (_db, mut log) = open(dir.path());
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        log.blocking_append(sessions(1..=10)).await.expect("append");
    }
    // A crash in the middle of writing entry 10: its frame ends a few bytes short.
    let last = segments(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).expect("size").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    file.set_len(len - 5).expect("tear");
    drop(file);
    {
        let (_db, mut log) = open(dir.path());
        assert_eq!(indexes(&mut log).await, (1..=9).collect::<Vec<_>>());
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(1, 1)));
        // The torn bytes are gone from the file: what follows is read back whole.
        log.blocking_append(sessions(10..=12))
            .await
            .expect("append");
    }
    let (_db, mut log) = open(dir.path());
    assert_eq!(indexes(&mut log).await, (1..=12).collect::<Vec<_>>());
    let got = log.try_get_log_entries(10..=12).await.expect("entries");
    assert_eq!(format!("{got:?}"), format!("{:?}", sessions(10..=12)));
}

#[tokio::test]
async fn a_damaged_record_ends_the_last_segment_but_is_an_error_in_an_earlier_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (_db, log) = open(dir.path());
        let mut log = log.with_segment_bytes(500);
        for i in 1..=30 {
            log.blocking_append(sessions(i..=i)).await.expect("append");
        }
    }
    let files = segments(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let flip = |path: &Path, from_end: u64| {
        let mut bytes = std::fs::read(path).expect("read");
        let at = bytes.len() - from_end as usize;
        bytes[at] ^= 0xff;
        std::fs::write(path, bytes).expect("write");
    };
    // A flipped byte in the last entry of the last segment: that entry is lost, not the log.
    flip(files.last().expect("last"), 3);
    {
        let (_db, mut log) = open(dir.path());
        assert_eq!(indexes(&mut log).await, (1..=29).collect::<Vec<_>>());
    }
    // In an earlier segment it cannot be a torn write: the log does not open.
    flip(&files[0], 3);
    let db = open_db(dir.path());
    assert!(LogStore::open(dir.path(), &db).is_err());
}

#[tokio::test]
async fn a_purge_deletes_the_segments_it_covers_and_the_vote_outlives_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (_db, log) = open(dir.path());
        let mut log = log.with_segment_bytes(500);
        log.save_vote(&Vote::new_committed(4, 1))
            .await
            .expect("vote");
        log.blocking_append([entry(1, EntryPayload::Membership(membership()))])
            .await
            .expect("append");
        for i in 2..=60 {
            log.blocking_append(sessions(i..=i)).await.expect("append");
        }
        log.save_committed(Some(log_id(1, 55)))
            .await
            .expect("committed");
        let before = segments(dir.path()).len();
        assert_eq!(log.segment_count(), before);
        assert!(before >= 4, "{before} segments");
        log.purge(log_id(1, 40)).await.expect("purge");
        let after = segments(dir.path()).len();
        assert!(after < before, "{before} segments, then {after}");
        assert_eq!(log.segment_count(), after);
        assert_eq!(indexes(&mut log).await, (41..=60).collect::<Vec<_>>());
        // Past every entry: only the active segment is left.
        log.purge(log_id(1, 70)).await.expect("purge");
        assert_eq!(segments(dir.path()).len(), 1);
        log.blocking_append(sessions(71..=72))
            .await
            .expect("append");
    }
    let (_db, mut log) = open(dir.path());
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(4, 1))
    );
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 55))
    );
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 70)));
    assert_eq!(state.last_log_id, Some(log_id(1, 72)));
    assert_eq!(indexes(&mut log).await, vec![71, 72]);
}

/// Writes a log the way versions before the log's own files kept it: entries in sled's
/// `raft_log` tree under their big-endian index, the vote and the committed and purged
/// ids in `raft_meta`, each value a format byte and postcard.
fn write_sled_log(
    db: &sled::Db,
    entries: &[Entry<TypeConfig>],
    vote: &Vote<u64>,
    committed: u64,
    purged: u64,
) {
    let log = db.open_tree("raft_log").expect("tree");
    let meta = db.open_tree("raft_meta").expect("tree");
    for e in entries {
        let bytes = to_stored(1, e).expect("encode");
        log.insert(e.log_id.index.to_be_bytes(), bytes)
            .expect("insert");
    }
    meta.insert("vote", to_stored(1, vote).expect("encode"))
        .expect("insert");
    meta.insert(
        "committed",
        to_stored(1, &log_id(1, committed)).expect("encode"),
    )
    .expect("insert");
    meta.insert("purged", to_stored(1, &log_id(1, purged)).expect("encode"))
        .expect("insert");
    db.flush().expect("flush");
}

/// Checks the log moved by [`a_log_kept_in_sled_is_moved_to_the_files_once`].
async fn moved_as_written(log: &mut LogStore, written: &[Entry<TypeConfig>], vote: &Vote<u64>) {
    assert_eq!(log.read_vote().await.expect("vote").as_ref(), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 37))
    );
    assert_eq!(log.committed().index(), Some(37));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 40)));
    let got = log.try_get_log_entries(0..).await.expect("entries");
    assert_eq!(format!("{got:?}"), format!("{:?}", &written[1..]));
}

/// What an older version left in `dir`: a log kept in sled, its entries and vote.
/// Entries 1 and 2 were purged, and entry 3 too, but a crash left it in the tree.
fn older_versions_log(dir: &Path) -> (Vec<Entry<TypeConfig>>, Vote<u64>) {
    let mut written = vec![entry(3, EntryPayload::Membership(membership()))];
    written.extend(sessions(4..=40));
    let vote = Vote::new_committed(5, 2);
    let db = open_db(dir);
    write_sled_log(&db, &written, &vote, 37, 3);
    assert!(!dir.join("raft-log").exists());
    (written, vote)
}

#[tokio::test]
async fn a_log_kept_in_sled_is_moved_to_the_files_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (written, vote) = older_versions_log(dir.path());
    {
        let (db, mut log) = open(dir.path());
        moved_as_written(&mut log, &written, &vote).await;
        let names = db.tree_names();
        assert!(
            !names
                .iter()
                .any(|n| n.as_ref() == b"raft_log" || n.as_ref() == b"raft_meta"),
            "the old trees are dropped"
        );
        log.blocking_append(sessions(41..=41))
            .await
            .expect("append");
        log.truncate(log_id(1, 41)).await.expect("truncate");
    }
    assert!(!dir.path().join("raft-log.new").exists());
    // Reopened: from the files alone, the same log.
    let (_db, mut log) = open(dir.path());
    moved_as_written(&mut log, &written, &vote).await;
}

#[tokio::test]
async fn files_opened_before_sled_as_a_node_opens_them_never_skip_a_move() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (written, vote) = older_versions_log(dir.path());
    // The node's order: the log's files first, then sled, then the rest of the open.
    let files = LogStore::open_files(dir.path()).expect("open files");
    assert!(
        !dir.path().join("raft-log").exists(),
        "no empty log made in place of the one sled holds"
    );
    let db = open_db(dir.path());
    let mut log = LogStore::open_with(dir.path(), &db, files).expect("open");
    moved_as_written(&mut log, &written, &vote).await;
}

#[tokio::test]
async fn a_new_replica_opens_its_log_files_before_sled_and_keeps_what_they_hold() {
    let base = tempfile::tempdir().expect("temp dir");
    let dir = base.path().join("raft");
    {
        let files = LogStore::open_files(&dir).expect("open files");
        assert!(dir.join("raft-log").is_dir());
        let db = open_db(&dir);
        let mut log = LogStore::open_with(&dir, &db, files).expect("open");
        log.blocking_append(sessions(1..=5)).await.expect("append");
    }
    let files = LogStore::open_files(&dir).expect("reopen files");
    let db = open_db(&dir);
    let mut log = LogStore::open_with(&dir, &db, files).expect("reopen");
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5]);
}
