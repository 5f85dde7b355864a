//! Writes this node started and has not finished, and whether the fleet's commits have
//! stalled under them: what `/ready` needs to send a load balancer elsewhere.
//!
//! A node whose writes cannot commit answers every request that writes with 503 after
//! `raft.write_timeout`, while `/ready`, which looks only at leader and replica, says 200;
//! a balancer keeps sending it traffic it can only refuse. So: this node is *stalled* when
//! writes it started are pending and the commit index it knows has not moved for longer
//! than `raft.write_timeout`, counted from the later of the last advance and the moment
//! writes became pending (a node idle for an hour is not stalled by its first write).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Pending writes and the last commit advance this node saw; shared by the node's writes.
#[derive(Debug)]
pub(super) struct Pending {
    state: Mutex<State>,
    /// How long commits may stand still under pending writes.
    stall_after: Duration,
}

#[derive(Debug)]
struct State {
    /// Writes started and not finished.
    count: usize,
    /// When `count` last went from 0 to 1.
    busy_since: Instant,
    /// The commit index last seen (`None`: nothing committed yet).
    committed: Option<u64>,
    /// When `committed` last changed (or tracking began).
    advanced_at: Instant,
}

impl Pending {
    /// Tracking that starts at `now` with `committed`.
    pub(super) fn new(stall_after: Duration, committed: Option<u64>, now: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                count: 0,
                busy_since: now,
                committed,
                advanced_at: now,
            }),
            stall_after,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing in the state can be left half-updated by a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one write as pending until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>, now: Instant) -> Guard {
        let mut state = self.state();
        if state.count == 0 {
            state.busy_since = now;
        }
        state.count += 1;
        Guard(self.clone())
    }

    /// Records the commit index as seen at `now`; a change is an advance.
    pub(super) fn note_commit(&self, committed: Option<u64>, now: Instant) {
        let mut state = self.state();
        if state.committed != committed {
            state.committed = committed;
            state.advanced_at = now;
        }
    }

    /// How long commits have stood still under pending writes, when that is longer than
    /// the stall threshold; `None` when this node is not stalled.
    pub(super) fn stalled(&self, committed: Option<u64>, now: Instant) -> Option<Duration> {
        self.note_commit(committed, now);
        let state = self.state();
        if state.count == 0 {
            return None;
        }
        let still = now.saturating_duration_since(state.busy_since.max(state.advanced_at));
        (still > self.stall_after).then_some(still)
    }

    /// Writes pending now.
    pub(super) fn count(&self) -> usize {
        self.state().count
    }
}

/// One pending write; dropping it ends it.
#[derive(Debug)]
pub(super) struct Guard(Arc<Pending>);

impl Drop for Guard {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.count = state.count.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(5);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_idle_node_is_not_stalled_however_long_commits_stand_still() {
        let t0 = Instant::now();
        let pending = Arc::new(Pending::new(STALL, Some(3), t0));
        assert_eq!(pending.stalled(Some(3), t0 + secs(3600)), None);
        // The first write after an hour of quiet starts its own clock.
        let _write = pending.begin(t0 + secs(3600));
        assert_eq!(pending.stalled(Some(3), t0 + secs(3601)), None);
        assert_eq!(
            pending.stalled(Some(3), t0 + secs(3606)),
            Some(secs(6)),
            "a write pending 6 s with no commit is a stall"
        );
    }

    #[test]
    fn an_advance_ends_the_stall_and_starts_the_clock_again() {
        let t0 = Instant::now();
        let pending = Arc::new(Pending::new(STALL, None, t0));
        let _write = pending.begin(t0);
        assert!(pending.stalled(None, t0 + secs(6)).is_some());
        assert_eq!(pending.stalled(Some(1), t0 + secs(7)), None);
        assert_eq!(pending.stalled(Some(1), t0 + secs(11)), None);
        assert!(pending.stalled(Some(1), t0 + secs(13)).is_some());
    }

    #[test]
    fn finished_writes_are_not_pending() {
        let t0 = Instant::now();
        let pending = Arc::new(Pending::new(STALL, None, t0));
        let a = pending.begin(t0);
        let b = pending.begin(t0 + secs(1));
        assert_eq!(pending.count(), 2);
        drop(a);
        assert!(
            pending.stalled(None, t0 + secs(7)).is_some(),
            "one write is still pending"
        );
        drop(b);
        assert_eq!(pending.count(), 0);
        assert_eq!(pending.stalled(None, t0 + secs(8)), None);
    }
}
