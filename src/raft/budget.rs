//! How large an AppendEntries may be: the byte budget, the per-peer window learned from
//! failed appends, and what the leader measures of them. [`super::network`] explains why
//! and how openraft's `PayloadTooLarge` hint is used.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::config::APPEND_ENVELOPE_BYTES;

/// Upper bounds, in seconds, of the AppendEntries round-trip buckets: up to the default
/// 75 ms soft TTL (3/4 of the 100 ms heartbeat) finely enough to see how close appends
/// come to it, and the 100 ms hard TTL past which openraft gives up on them.
const APPEND_SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.06, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];

/// Upper bounds, in bytes, of the AppendEntries size buckets: 1 KiB to 16 MiB by fours.
const APPEND_BYTES_BUCKETS: [f64; 8] = [
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Why an AppendEntries was answered with PayloadTooLarge instead of being sent whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Split {
    /// Its encoded entries exceeded `raft.max_append_bytes`.
    Budget,
    /// It carried more entries than the peer's window allows after earlier failures.
    Window,
    /// It was sent and timed out (or openraft dropped it at its hard TTL).
    Timeout,
    /// It was sent and failed otherwise: refused (413), reset, unreadable answer.
    Failure,
}

impl Split {
    const ALL: [Split; 4] = [Split::Budget, Split::Window, Split::Timeout, Split::Failure];

    fn label(self) -> &'static str {
        match self {
            Split::Budget => "budget",
            Split::Window => "window",
            Split::Timeout => "timeout",
            Split::Failure => "failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SplitLabel {
    reason: &'static str,
}

/// What the leader measures of the AppendEntries it sends; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppendMetrics {
    splits: Family<SplitLabel, Counter>,
    seconds: Histogram,
    bytes: Histogram,
}

impl Default for AppendMetrics {
    fn default() -> Self {
        let metrics = Self {
            splits: Family::default(),
            seconds: Histogram::new(APPEND_SECONDS_BUCKETS),
            bytes: Histogram::new(APPEND_BYTES_BUCKETS),
        };
        for split in Split::ALL {
            drop(metrics.splits.get_or_create(&SplitLabel {
                reason: split.label(),
            }));
        }
        metrics
    }
}

impl AppendMetrics {
    /// Registers the metrics in `registry` (under its `mcp_fleet` prefix).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "raft_append_splits",
            "AppendEntries this leader sent in smaller pieces instead of whole, by reason: \
             budget (over raft.max_append_bytes), window (held small after failures), \
             timeout and failure (a multi-entry append that failed)",
            self.splits.clone(),
        );
        registry.register(
            "raft_append_seconds",
            "Round trip of AppendEntries carrying entries, from this leader: send, decode, \
             append and fsync on the follower, answer",
            self.seconds.clone(),
        );
        registry.register(
            "raft_append_bytes",
            "Encoded size of the AppendEntries carrying entries that this leader sent",
            self.bytes.clone(),
        );
    }

    /// Counts one append split for `why`.
    pub(super) fn split(&self, why: Split) {
        self.splits
            .get_or_create(&SplitLabel {
                reason: why.label(),
            })
            .inc();
    }

    /// Records an append carrying entries that was answered: its size and round trip.
    pub(super) fn sent(&self, bytes: usize, elapsed: Duration) {
        self.seconds.observe(elapsed.as_secs_f64());
        self.bytes.observe(bytes as f64);
    }

    /// Splits counted so far for `why`.
    #[cfg(test)]
    pub(super) fn splits(&self, why: Split) -> u64 {
        self.splits
            .get_or_create(&SplitLabel {
                reason: why.label(),
            })
            .get()
    }
}

/// How the leader sizes AppendEntries; the same for every peer.
#[derive(Clone)]
pub(super) struct Budget {
    /// `raft.max_append_bytes`.
    pub max_append_bytes: usize,
    /// openraft's `max_payload_entries`: a window this large is no limit.
    pub max_entries: u64,
    /// What is measured.
    pub metrics: AppendMetrics,
}

/// How many of the leading entries, of the encoded `sizes`, fit `budget` bytes with the
/// request's envelope; `None` when all of them do. Never less than one: a single entry is
/// sent whatever its size, since nothing smaller can be sent instead.
pub(super) fn entries_within(sizes: impl IntoIterator<Item = usize>, budget: usize) -> Option<u64> {
    let mut total = APPEND_ENVELOPE_BYTES;
    for (fitted, size) in sizes.into_iter().enumerate() {
        total = total.saturating_add(size);
        if total > budget {
            return Some((fitted as u64).max(1));
        }
    }
    None
}

/// Successes in a row at the window's size before it doubles.
const GROW_AFTER: u32 = 4;

/// How many entries an AppendEntries to one peer may carry, learned from multi-entry
/// appends that failed: halved at each failure, doubled after [`GROW_AFTER`] successes at
/// that size, gone once it reaches openraft's own `max_payload_entries`.
///
/// A follower that was stopped for a while leaves the window at one entry (everything
/// timed out); it grows back as soon as appends succeed, by one doubling each time
/// openraft tries the full range again (its hint lasts 10 RPCs), so within some tens of
/// RPCs. Single entries that time out leave the window as it is: an overloaded follower
/// times out on everything, and resending full batches would only add to what it must
/// still decode and append after we have given up on them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Window {
    /// Most entries per append; `None` for no limit but the byte budget.
    cap: Option<u64>,
    /// Entries of the append in flight. Still set when the next append begins means
    /// openraft dropped the call at its hard TTL before we could answer.
    in_flight: Option<u64>,
    /// Appends in a row that succeeded with at least `cap` entries.
    streak: u32,
}

impl Window {
    /// Before sending `entries`: `Err(hint)` when they exceed the window. A call left in
    /// flight by the previous append counts as a failure of that append (its size is
    /// returned, when it carried several entries, so it can be counted).
    pub(super) fn begin(&mut self, entries: u64) -> (Option<u64>, Result<(), u64>) {
        let dropped = self.in_flight.take();
        if let Some(n) = dropped {
            self.failed(n);
        }
        let dropped = dropped.filter(|n| *n > 1);
        match self.cap {
            Some(cap) if entries > cap => (dropped, Err(cap)),
            _ => {
                self.in_flight = Some(entries);
                (dropped, Ok(()))
            }
        }
    }

    /// The append begun last was not sent after all (refused before sending, or its peer
    /// is down): it says nothing about sizes.
    pub(super) fn abandon(&mut self) {
        self.in_flight = None;
    }

    /// `entries` went through.
    pub(super) fn succeeded(&mut self, entries: u64, max_entries: u64) {
        self.in_flight = None;
        let Some(cap) = self.cap else { return };
        if entries < cap {
            return;
        }
        self.streak += 1;
        if self.streak >= GROW_AFTER {
            self.streak = 0;
            let grown = cap.saturating_mul(2);
            self.cap = (grown < max_entries).then_some(grown);
        }
    }

    /// `entries` failed: the hint for a retry (half as many), or `None` for a single entry,
    /// which cannot be split.
    pub(super) fn failed(&mut self, entries: u64) -> Option<u64> {
        self.in_flight = None;
        self.streak = 0;
        if entries <= 1 {
            return None;
        }
        let half = (entries / 2).max(1);
        self.cap = Some(self.cap.map_or(half, |cap| cap.min(half)));
        Some(half)
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
