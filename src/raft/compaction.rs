//! When a node snapshots (and so purges its log): once the log since its last snapshot
//! holds at least `raft.snapshot_after` entries *and* at least as many bytes as that
//! snapshot.
//!
//! A snapshot writes every record; a fixed count of entries between snapshots makes the
//! bytes written per entry grow with the store. At 100,000 sessions (a 24 MB snapshot)
//! every 5,000 entries of about 400 bytes each wrote the whole store again: 12 bytes of
//! snapshot per byte of log. Waiting until the log outweighs the snapshot caps that at
//! one byte per byte, while the log a restarted or lagging node replays stays smaller
//! than the snapshot it would otherwise be sent. openraft's own policy only counts
//! entries, so openraft is told never to snapshot on its own and this task asks it to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;

use super::TypeConfig;

/// How often the policy looks at the log.
const CHECK: Duration = Duration::from_millis(100);

/// How long a snapshot that was asked for may take to show before it is asked for again
/// (openraft drops a request while it is busy, e.g. installing one from the leader).
const RETRY: Duration = Duration::from_secs(60);

/// Byte counts the policy weighs, kept by the log store and the state machine.
#[derive(Clone, Debug, Default)]
pub(super) struct Weights {
    /// Bytes of entries this node's log store has appended since it opened.
    pub(super) appended: Arc<AtomicU64>,
    /// Bytes of the current snapshot file (0 for none).
    pub(super) snapshot: Arc<AtomicU64>,
}

/// Whether a snapshot is due: `entries` applied since the last snapshot and `bytes`
/// appended since then, against `after` (`raft.snapshot_after`) and the last snapshot's
/// size.
pub(super) fn due(entries: u64, bytes: u64, after: u64, snapshot_bytes: u64) -> bool {
    entries >= after && bytes >= snapshot_bytes
}

/// Asks the member `raft` returns for a snapshot whenever one is [`due`], until `raft`
/// returns `None` (the store is gone).
pub(super) fn spawn(
    runtime: &tokio::runtime::Handle,
    raft: impl Fn() -> Option<Raft<TypeConfig>> + Send + 'static,
    weights: Weights,
    after: u64,
) {
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The appended bytes when the last snapshot was asked for (or this node opened:
        // the log it held then is not counted, which at most delays one snapshot).
        let mut mark = 0;
        // The snapshot index when one was last asked for: no second request until it moves.
        let mut asked: Option<(u64, Instant)> = None;
        loop {
            tick.tick().await;
            let Some(raft) = raft() else { return };
            let (applied, snapshot) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                let index = |id: Option<&openraft::LogId<u64>>| id.map_or(0, |id| id.index + 1);
                (index(m.last_applied.as_ref()), index(m.snapshot.as_ref()))
            };
            if asked.is_some_and(|(at, when)| at == snapshot && when.elapsed() < RETRY) {
                continue;
            }
            asked = None;
            let appended = weights.appended.load(Ordering::Relaxed);
            let bytes = appended.saturating_sub(mark);
            let entries = applied.saturating_sub(snapshot);
            if !due(
                entries,
                bytes,
                after,
                weights.snapshot.load(Ordering::Relaxed),
            ) {
                continue;
            }
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            mark = appended;
            asked = Some((snapshot, Instant::now()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_waits_for_enough_entries_and_for_the_log_to_outweigh_the_last_one() {
        assert!(!due(9, 1_000_000, 10, 0), "too few entries");
        assert!(due(10, 0, 10, 0), "no snapshot yet: the entries decide");
        assert!(
            !due(5000, 2_000_000, 5000, 24_000_000),
            "the log is lighter"
        );
        assert!(due(60_000, 24_000_000, 5000, 24_000_000));
    }
}
