//! Groups: several writes in one entry, each with its own outcome, leaving what the same
//! writes as entries of their own leave, whether applied as proposed, replayed from the log
//! or carried by a snapshot.

use super::*;
use crate::raft::Owner;

const ALICE: Owner = [0xa1; 32];
const BOB: Owner = [0xb0; 32];
const T: Table = Table::McpSessions;

fn owned(owner: Owner, key: &[u8], limit: u64) -> Command {
    Command::PutOwned {
        table: T,
        key: key.to_vec(),
        deadline_ms: Some(100),
        sealed: key.to_vec(),
        owner,
        limit,
    }
}

fn delete(key: &[u8]) -> Command {
    Command::Delete {
        table: T,
        key: key.to_vec(),
    }
}

/// `writes` as one group entry, as the proposer builds it.
fn group(writes: &[Command]) -> Command {
    Command::Group(
        writes
            .iter()
            .map(|w| postcard::to_stdvec(w).expect("encode"))
            .collect(),
    )
}

const STORED: Outcome = Outcome {
    affected: 0,
    refused: false,
};
const REPLACED: Outcome = Outcome {
    affected: 1,
    refused: false,
};
const REFUSED: Outcome = Outcome {
    affected: 0,
    refused: true,
};

/// Writes whose outcomes depend on each other: Alice is at her cap of one (`a1`), so her
/// `a2` is refused, and only then is `a1` deleted; a later write of `x` replaces an
/// earlier one.
fn writes() -> Vec<Command> {
    vec![
        owned(ALICE, b"a2", 1),
        owned(BOB, b"b1", 1),
        put(T, b"x", None, b"1"),
        delete(b"a1"),
        put(T, b"x", Some(50), b"2"),
        Command::Touch {
            table: T,
            key: b"absent".to_vec(),
            deadline_ms: None,
        },
    ]
}

const OUTCOMES: [Outcome; 6] = [REFUSED, STORED, STORED, REPLACED, REPLACED, STORED];

/// A machine where Alice holds `a1` under a cap of one.
async fn machine() -> Machine {
    let mut m = Machine::new();
    assert_eq!(m.outcome(owned(ALICE, b"a1", 1)).await, STORED);
    m
}

#[tokio::test]
async fn each_write_of_a_group_has_its_own_outcome_and_a_refusal_refuses_only_itself() {
    let mut m = machine().await;
    let outcomes = m.apply(EntryPayload::Normal(group(&writes()))).await;
    assert_eq!(outcomes, vec![OUTCOMES.to_vec()]);
    assert_eq!(m.get(T, b"a2"), None, "refused");
    assert_eq!(m.get(T, b"a1"), None, "deleted");
    assert_eq!(m.get(T, b"x").expect("x").sealed, b"2");
    assert_eq!(m.sm.reader().owned(T), 1, "b1");
}

#[tokio::test]
async fn a_group_leaves_what_its_writes_leave_one_by_one() {
    let mut one_by_one = machine().await;
    let mut outcomes = Vec::new();
    for write in writes() {
        outcomes.push(one_by_one.outcome(write).await);
    }
    assert_eq!(outcomes, OUTCOMES.to_vec());
    let mut grouped = machine().await;
    grouped.apply(EntryPayload::Normal(group(&writes()))).await;
    assert_eq!(grouped.everything(), one_by_one.everything());
    assert_eq!(
        grouped.sm.reader().owned(T),
        one_by_one.sm.reader().owned(T)
    );
}

#[tokio::test]
async fn a_group_replays_from_the_log_as_it_was_applied() {
    let mut applied = machine().await;
    let index = applied.next;
    applied.apply(EntryPayload::Normal(group(&writes()))).await;

    // The entry goes through the log store's bytes, as a follower or a restart reads it.
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = open_db(dir.path());
        let mut log = LogStore::open(dir.path(), &db).expect("open");
        let grouped = entry(index, EntryPayload::Normal(group(&writes())));
        log.blocking_append([grouped]).await.expect("append");
    }
    let db = open_db(dir.path());
    let mut log = LogStore::open(dir.path(), &db).expect("reopen");
    let read = log.try_get_log_entries(index..=index).await.expect("read");
    let mut replayed = machine().await;
    let outcomes = replayed.sm.apply(read.clone()).await.expect("apply");
    assert_eq!(outcomes, vec![OUTCOMES.to_vec()]);
    assert_eq!(replayed.everything(), applied.everything());

    // Applied again, as after a crash before its applied id was on disk: rerun whole, the
    // group would store Alice's refused a2 (a1 is gone by then); it resumes instead.
    replayed.sm.apply(read).await.expect("apply again");
    assert_eq!(replayed.get(T, b"a2"), None);
    assert_eq!(replayed.everything(), applied.everything());
    assert_eq!(replayed.sm.reader().owned(T), applied.sm.reader().owned(T));
}

#[tokio::test]
async fn a_snapshot_after_a_group_carries_what_it_left() {
    let mut leader = machine().await;
    leader.apply(EntryPayload::Normal(group(&writes()))).await;
    let snapshot = leader.build().await;

    let mut follower = Machine::new();
    follower.install(&snapshot).await;
    assert_eq!(follower.everything(), leader.everything());
    assert_eq!(follower.sm.reader().owned(T), leader.sm.reader().owned(T));

    // Both decide the next group alike: Alice has room for one more, Bob has none.
    follower.next = leader.next;
    let next = group(&[
        owned(ALICE, b"a4", 1),
        owned(ALICE, b"a5", 1),
        owned(BOB, b"b2", 1),
    ]);
    let on_leader = leader.apply(EntryPayload::Normal(next.clone())).await;
    let on_follower = follower.apply(EntryPayload::Normal(next)).await;
    assert_eq!(on_leader, vec![vec![STORED, REFUSED, REFUSED]]);
    assert_eq!(on_follower, on_leader);
    assert_eq!(follower.everything(), leader.everything());
}

#[tokio::test]
async fn a_group_inside_a_group_is_refused_by_every_replica() {
    let mut m = Machine::new();
    let nested = group(&[group(&[put(T, b"x", None, b"1")])]);
    let e = entry(m.next, EntryPayload::Normal(nested));
    assert!(m.sm.apply([e]).await.is_err());
    assert_eq!(m.get(T, b"x"), None);
}
