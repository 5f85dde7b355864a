//! Elections as this node takes part in them: standing again at once after a split vote,
//! and telling when it is cut off from its group.
//!
//! # Split votes
//!
//! openraft 0.9 draws a node's election timeout once per process (`EngineConfig::new`,
//! between `raft.election_timeout` and its upper bound) and checks it only on its tick,
//! every 3/2 `raft.heartbeat_interval` at a phase fixed when the process starts. With the
//! defaults (ticks of 150 ms, a timeout of 250–300 ms), a candidate that lost stands again
//! exactly two ticks after it stood: whatever timeout it drew, the tick quantises it away.
//! Two survivors whose ticks are closer together than a vote's round trip both stand, each
//! votes for itself, each refuses the other, and both stand again 300 ms later, at the
//! same distance from each other: a split vote repeats until noise parts them (the term
//! jumping 3→5, 5→8 and failovers of 1.1–1.9 s in `cargo bench --bench fleet`).
//!
//! So a candidate that a voter refused because it had voted for another candidate in the
//! same term, with a log no longer than ours (the network notes such answers in
//! [`Ballots`]), stands again after a delay drawn afresh each time, between 1/5 and 4/5 of
//! `raft.election_timeout`: before openraft's own timer would (never less than the
//! election timeout after the term began), and far enough apart for the two to part. A
//! candidate a voter refused for a longer log does not: openraft then waits longer on
//! purpose, so the voter with the longer log wins. Nor does one that nobody answered (it
//! is cut off; standing faster would only raise its term), a learner, a node removed or
//! waiting for a group, or a leader stepping down.
//!
//! The refusal itself can end a candidacy: openraft adopts the vote a refusal carries when
//! it is greater, and of two candidates of one term the one with the higher node id has
//! the greater vote. So after a split the candidate with the lower id follows its rival's
//! candidacy, which cannot win when this node holds the longer log (it refused that rival
//! its vote), while the rival, refused for a shorter log, rightly waits. Nobody stood again
//! until openraft's own timer, lengthened by its "greater log seen" mark: failovers of
//! 1.5–2 s with the term rising by two or three (4 of 20 rounds of `cargo bench --bench
//! fleet` on a loaded machine). So the breaker does not ask that this node still be a
//! candidate, only that the term it stood in has no leader yet and its vote in that term is
//! not committed.
//!
//! # Standing after the leader's silence
//!
//! openraft's first stand after a leader's silence has the same fixed phase, and one more
//! trap: a node that once lost an election to a longer log keeps openraft's "greater log
//! seen" mark until it next stands on its own timer, which adds twice the upper bound of
//! the election timeout (600 ms by default) to its next wait, however long ago that was.
//! Two survivors that both lost such a race once wait 1.1–1.35 s before either stands
//! (failovers of that length with a term rising by one). So a follower whose leader is
//! silent for the election silence (the lease plus `raft.election_timeout`: when openraft
//! would stand at the earliest) stands itself after a further delay drawn afresh for each
//! silence, within 3/5 of `raft.election_timeout` (a tick's width by default), unless
//! openraft has stood first. Any append from the leader, late or not, ends a silence.
//! The survivors do not draw over the same span: it is cut into one slot per voter but
//! the leader, and each draws in the first half of its own slot, in the order of their
//! ids ([`stand_window`]), so that the first to stand is heard by the others before they
//! would stand themselves. Drawn over the same span, two survivors' delays fell within a
//! vote's round trip of each other in about a third of the failovers, each split adding
//! 50–200 ms.
//!
//! # Cut off
//!
//! A follower that has heard nothing from its leader for the election silence, and whose
//! vote requests since then went unanswered by so many voters that those left cannot make
//! a quorum with it, cannot commit a write or prove a read current: each request would
//! wait out `raft.write_timeout` for a 503. It says so at once instead (see
//! [`Store::cut_off`]): MCP requests are refused with a 503, a reason and `Retry-After`,
//! and `/ready` answers 503 so the balancer takes it out. A follower whose leader died
//! is not cut off: the other survivor answers its vote requests, and requests wait for the
//! new leader as before. Nor is a healthy follower under load: it hears its leader.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::ServerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::store::{Inner, Store};
use super::NodeId;

/// How often a node checks whether it is cut off, besides each change Raft reports.
const CUT_OFF_CHECK: Duration = Duration::from_millis(25);

/// What this node's vote requests met, and when it last heard its leader: shared by the
/// network, which sees the answers, and the tasks of this module.
#[derive(Default)]
pub(super) struct Ballots {
    /// The highest term in which a voter refused this node's vote for another candidate of
    /// that term, holding a log no longer than this node's: a split vote.
    split: AtomicU64,
    /// The highest term in which a voter refused this node's vote holding a longer log.
    outlogged: AtomicU64,
    /// Wakes the split-vote task when `split` rises.
    split_seen: tokio::sync::Notify,
    /// By voter: when it last answered a vote request of this node, and when one last went
    /// unanswered (failed, or dropped at openraft's timeout), in local milliseconds.
    reach: Mutex<BTreeMap<NodeId, Reach>>,
    /// When this node last heard from its leader, in local milliseconds (0 for never).
    heard_ms: AtomicU64,
    /// Why this node is cut off from its group, as last found; see [`Store::cut_off`].
    cut_off: Mutex<Option<String>>,
    /// Whether `cut_off` holds a reason: read on every MCP request.
    is_cut_off: AtomicBool,
    /// Elections this node's breakers started, by reason.
    stands: Family<StandLabel, Counter>,
}

/// Why a breaker of this module made this node stand for election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StandLabel {
    reason: &'static str,
}

/// The leader was silent for the election silence: [`spawn_silence_breaker`].
const SILENCE: StandLabel = StandLabel { reason: "silence" };
/// A vote split in an election without a leader: [`spawn_split_vote_breaker`].
const SPLIT: StandLabel = StandLabel { reason: "split" };

/// One voter's answers to this node's vote requests; see [`Ballots::reach`].
#[derive(Default, Clone, Copy)]
struct Reach {
    answered_ms: u64,
    unanswered_ms: u64,
}

impl Ballots {
    /// Notes that this node heard from its leader now.
    pub(super) fn heard_leader(&self) {
        self.heard_ms.fetch_max(super::now_ms(), Ordering::AcqRel);
    }

    /// A vote request to `target` is under way: unless [`VoteSent::answered`] is called,
    /// it counts as unanswered (openraft drops it at its timeout without telling us).
    pub(super) fn vote_sent(self: &Arc<Self>, target: NodeId) -> VoteSent {
        VoteSent {
            ballots: self.clone(),
            target,
            answered: false,
        }
    }

    /// Notes what `target`'s answer to `request` says of the election.
    fn vote_answered(
        &self,
        request: &VoteRequest<NodeId>,
        answer: &VoteResponse<NodeId>,
        me: NodeId,
    ) {
        if answer.vote_granted {
            return;
        }
        let term = request.vote.leader_id().term;
        if answer.last_log_id > request.last_log_id {
            self.outlogged.fetch_max(term, Ordering::AcqRel);
            return;
        }
        let theirs = answer.vote.leader_id();
        let split =
            theirs.term == term && !answer.vote.is_committed() && theirs.voted_for() != Some(me);
        if split && self.split.fetch_max(term, Ordering::AcqRel) < term {
            self.split_seen.notify_waiters();
        }
    }

    fn note_reach(&self, target: NodeId, answered: bool) {
        let now = super::now_ms();
        let mut reach = self.reach.lock().unwrap_or_else(|e| e.into_inner());
        let entry = reach.entry(target).or_default();
        if answered {
            entry.answered_ms = now;
        } else {
            entry.unanswered_ms = now;
        }
    }

    /// Whether this node has been found cut off; see [`Store::cut_off`].
    pub(super) fn is_cut_off(&self) -> bool {
        self.is_cut_off.load(Ordering::Acquire)
    }

    /// Counts one election a breaker started, for `why`.
    fn stood(&self, why: StandLabel) {
        self.stands.get_or_create(&why).inc();
    }
}

/// A vote request on its way; see [`Ballots::vote_sent`].
pub(super) struct VoteSent {
    ballots: Arc<Ballots>,
    target: NodeId,
    answered: bool,
}

impl VoteSent {
    /// The voter answered `answer` (`None`: it answered with an error, which still shows
    /// it is reachable).
    pub(super) fn answered(
        mut self,
        request: &VoteRequest<NodeId>,
        answer: Option<&VoteResponse<NodeId>>,
        me: NodeId,
    ) {
        self.answered = true;
        self.ballots.note_reach(self.target, true);
        if let Some(answer) = answer {
            self.ballots.vote_answered(request, answer, me);
        }
    }
}

impl Drop for VoteSent {
    fn drop(&mut self) {
        if !self.answered {
            self.ballots.note_reach(self.target, false);
        }
    }
}

/// Where in `spread` a survivor of rank `rank` among `of` draws the delay it stands after
/// when its leader falls silent: the spread cut into `of` equal slots, the survivor drawing
/// in the first half of its own. Two survivors then stand at least half a slot apart
/// (37 ms of 150 with two), time enough for the first one's vote request to reach the
/// other before it stands, where two delays drawn over the whole spread fell closer than a
/// vote's round trip in about a third of the failovers and split the vote.
fn stand_window(spread: Duration, (rank, of): (u32, u32)) -> (Duration, Duration) {
    let slot = spread / of.max(1);
    let low = slot * rank.min(of.saturating_sub(1));
    (low, low + (slot / 2).max(Duration::from_millis(1)))
}

/// A duration drawn uniformly between `low` and `high`.
fn random_between(low: Duration, high: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    crate::crypto::fill_random(&mut bytes);
    let span = high.saturating_sub(low).as_micros() as u64;
    low + Duration::from_micros(u64::from_le_bytes(bytes) % span.max(1))
}

impl Inner {
    /// Why this node is cut off from its group, for a refused write or read.
    pub(super) fn cut_off_reason(&self) -> String {
        self.ballots
            .cut_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "cut off from the group".to_owned())
    }
}

impl Store {
    /// Registers what the breakers of this module count in `registry` (under its
    /// `mcp_fleet` prefix).
    pub(crate) fn register_election_metrics(&self, registry: &mut Registry) {
        let stands = self.0.ballots.stands.clone();
        for why in [SILENCE, SPLIT] {
            drop(stands.get_or_create(&why));
        }
        registry.register(
            "raft_election_stands",
            "Elections this node started ahead of openraft's own timer, by reason: silence \
             (its leader silent for the lease plus raft.election_timeout, and a random \
             delay) and split (a vote split in an election that has no leader yet)",
            stands,
        );
    }

    /// This node's place among the voters that would stand when their leader falls silent
    /// (every voter but the leader, by id), and how many they are: `(rank, of)`.
    fn silence_rank(&self) -> (u32, u32) {
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader;
        let survivors: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|&id| Some(id) != leader)
            .collect();
        let rank = survivors.iter().filter(|&&id| id < self.0.id).count();
        (rank as u32, survivors.len().max(1) as u32)
    }

    /// Whether this node is a voting member following a leader (its vote for it
    /// committed), may stand for election, and is neither leading nor stepping down: what
    /// [`spawn_silence_breaker`] checks before it stands for it.
    fn follows_a_silent_leader(&self) -> bool {
        if self.standing() != super::Standing::Member
            || self.0.stepping_down.load(Ordering::Acquire)
        {
            return false;
        }
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        m.state == ServerState::Follower
            && m.vote.is_committed()
            && membership.voter_ids().count() > 1
            && membership.voter_ids().any(|id| id == self.0.id)
    }

    /// Why this node cannot serve anything now, being a follower cut off from its group:
    /// it has not heard its leader for the election silence, and its vote requests since
    /// then too few voters answered to make a quorum with it (see the module
    /// documentation). A leader without quorum is told by [`Store::lacks_quorum`] instead:
    /// its requests still wait, so that a stall shows as one. `None` otherwise, and while it is not a member (see
    /// [`Store::not_serving`]). Kept up to date every 25 ms by a task; reading it is cheap.
    pub fn cut_off(&self) -> Option<String> {
        if !self.0.ballots.is_cut_off() {
            return None;
        }
        self.0
            .ballots
            .cut_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this node is cut off from its group (see [`Store::cut_off`]): one atomic
    /// read, for every MCP request.
    pub fn is_cut_off(&self) -> bool {
        self.0.ballots.is_cut_off()
    }

    /// Works out whether this node is cut off now; see [`Store::cut_off`].
    fn find_cut_off(&self) -> Option<String> {
        if self.standing() != super::Standing::Member {
            return None;
        }
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        if m.state == ServerState::Leader {
            // Leading counts as hearing the leader: a deposed leader's silence starts then.
            self.0.ballots.heard_leader();
            return None;
        }
        if voters.len() <= 1 || !voters.contains(&self.0.id) {
            return None;
        }
        drop(m);
        let heard = self.0.ballots.heard_ms.load(Ordering::Acquire);
        let now = super::now_ms();
        let silence = now.saturating_sub(heard);
        if heard == 0 || silence < self.election_silence().as_millis() as u64 {
            return None;
        }
        // A voter counts as out of reach when its last vote request since the leader's
        // last word went unanswered, and none was answered after it.
        let unreached = {
            let reach = self
                .0
                .ballots
                .reach
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            voters
                .iter()
                .filter(|&&id| id != self.0.id)
                .filter(|id| {
                    reach.get(id).is_some_and(|r| {
                        r.unanswered_ms > heard && r.unanswered_ms >= r.answered_ms
                    })
                })
                .count()
        };
        let quorum = voters.len() / 2 + 1;
        if voters.len() - unreached >= quorum {
            return None;
        }
        Some(format!(
            "cut off from the group: node {} has not heard from a leader for {silence} ms, \
             and {unreached} of the other {} voters do not answer its vote requests",
            self.0.id,
            voters.len() - 1
        ))
    }
}

/// Starts the tasks of this module for the store `inner`: standing again after a split
/// vote, standing after a silence of the leader, and keeping [`Store::cut_off`] current.
/// They end when the store is dropped or Raft stops.
pub(super) fn spawn(inner: &Arc<Inner>) {
    spawn_split_vote_breaker(inner);
    spawn_silence_breaker(inner);
    spawn_cut_off_watch(inner);
}

/// Stands for election once this follower has not heard its leader for the election
/// silence plus a delay drawn afresh for each silence, up to 3/5 of
/// `raft.election_timeout`; see the module documentation.
fn spawn_silence_breaker(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let ballots = inner.ballots.clone();
    let spread = inner.stale_after * 3 / 5;
    inner.runtime.spawn(async move {
        let mut every = tokio::time::interval(CUT_OFF_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The leader's last word the delay was drawn for, and the delay.
        let mut drawn: (u64, u64) = (0, 0);
        // The leader's last word this node stood after: once per silence.
        let mut stood_after = 0;
        loop {
            every.tick().await;
            let heard = ballots.heard_ms.load(Ordering::Acquire);
            if heard == 0 || heard == stood_after {
                continue;
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = Store(inner);
            if drawn.0 != heard {
                let (low, high) = stand_window(spread, store.silence_rank());
                drawn = (heard, random_between(low, high).as_millis() as u64);
            }
            let silence = super::now_ms().saturating_sub(heard);
            if silence < store.election_silence().as_millis() as u64 + drawn.1
                || !store.follows_a_silent_leader()
            {
                continue;
            }
            tracing::info!(
                node = store.0.id,
                silence_ms = silence,
                "no word from the leader: standing for election after a fresh random delay"
            );
            stood_after = heard;
            ballots.stood(SILENCE);
            if store.0.raft.trigger().elect().await.is_err() {
                return;
            }
        }
    });
}

fn spawn_cut_off_watch(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    // The server's metrics (role, leader, vote, membership) change only when those do; the
    // full metrics change at every entry, which would wake this task at every write.
    let mut metrics = inner.raft.server_metrics();
    inner.runtime.spawn(async move {
        let mut every = tokio::time::interval(CUT_OFF_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = every.tick() => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = Store(inner);
            let found = store.find_cut_off();
            let ballots = &store.0.ballots;
            let was = ballots.is_cut_off();
            match (&found, was) {
                (Some(why), false) => tracing::warn!(
                    node = store.0.id,
                    "{why}; refusing requests until it hears from the group"
                ),
                (None, true) => {
                    tracing::info!(node = store.0.id, "reaches its group again; serving")
                }
                _ => {}
            }
            let is = found.is_some();
            *ballots.cut_off.lock().unwrap_or_else(|e| e.into_inner()) = found;
            ballots.is_cut_off.store(is, Ordering::Release);
        }
    });
}

/// Whether `m` shows this node in an election without a leader yet: not leading, no
/// leader known, and its vote (for itself as a candidate, or for a rival candidate whose
/// vote it adopted from a refusal) not committed. `Some(term)`.
fn electing_term(
    m: &openraft::metrics::RaftServerMetrics<NodeId, openraft::BasicNode>,
) -> Option<u64> {
    (m.state != ServerState::Leader
        && m.state != ServerState::Learner
        && m.current_leader.is_none()
        && !m.vote.is_committed())
    .then_some(m.vote.leader_id().get_term())
}

fn spawn_split_vote_breaker(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    // Role, leader and vote only: not woken by every entry.
    let mut metrics = inner.raft.server_metrics();
    let ballots = inner.ballots.clone();
    let low = inner.stale_after / 5;
    let high = inner.stale_after * 4 / 5;
    inner.runtime.spawn(async move {
        loop {
            // Wait for an election without a leader (whether this node stood in it is
            // known once an answer shows a split: `split` is set only from answers to this
            // node's own vote requests).
            let term = loop {
                if let Some(term) = electing_term(&metrics.borrow_and_update()) {
                    break term;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            };
            let delay = random_between(low, high);
            let until = tokio::time::Instant::now() + delay;
            // Until the delay is over and a voter has refused for another candidate: leave
            // once the term or the state changes, or a longer log shows up.
            let stand = loop {
                let split = ballots.split_seen.notified();
                tokio::pin!(split);
                split.as_mut().enable();
                let now = tokio::time::Instant::now();
                let term_now = electing_term(&metrics.borrow_and_update());
                if term_now != Some(term) || ballots.outlogged.load(Ordering::Acquire) >= term {
                    break false;
                }
                if now >= until && ballots.split.load(Ordering::Acquire) >= term {
                    break true;
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep_until(until), if now < until => {}
                    () = &mut split => {}
                }
            };
            if !stand {
                // The term or state changed: look again. A longer log elsewhere: wait for
                // the next change.
                if electing_term(&metrics.borrow_and_update()) == Some(term)
                    && metrics.changed().await.is_err()
                {
                    return;
                }
                continue;
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = Store(inner);
            if store.standing() != super::Standing::Member
                || store.0.stepping_down.load(Ordering::Acquire)
            {
                continue;
            }
            // Checked again just before standing: a leader heard of meanwhile must not be
            // deposed by a higher term.
            if electing_term(&metrics.borrow_and_update()) != Some(term) {
                continue;
            }
            tracing::info!(
                node = store.0.id,
                term,
                delay_ms = delay.as_millis() as u64,
                "split vote: standing again after a fresh random delay"
            );
            ballots.stood(SPLIT);
            if store.0.raft.trigger().elect().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_delays_stay_within_their_bounds_and_differ() {
        let (low, high) = (Duration::from_millis(50), Duration::from_millis(200));
        let drawn: Vec<Duration> = (0..200).map(|_| random_between(low, high)).collect();
        assert!(drawn.iter().all(|d| *d >= low && *d < high));
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 100, "{} distinct delays", distinct.len());
    }

    #[test]
    fn survivors_of_a_silent_leader_draw_in_windows_half_a_slot_apart() {
        let ms = Duration::from_millis;
        let spread = ms(150);
        assert_eq!(
            stand_window(spread, (0, 2)),
            (ms(0), ms(37) + Duration::from_micros(500))
        );
        assert_eq!(
            stand_window(spread, (1, 2)),
            (ms(75), ms(112) + Duration::from_micros(500))
        );
        assert_eq!(stand_window(spread, (0, 1)), (ms(0), ms(75)));
        // Four survivors of a group of five, in order, each window after the one before.
        let windows: Vec<_> = (0..4).map(|rank| stand_window(spread, (rank, 4))).collect();
        for pair in windows.windows(2) {
            assert!(pair[1].0 >= pair[0].1 + spread / 8, "{windows:?}");
        }
        assert!(windows[3].1 <= spread, "{windows:?}");
        // A rank past the end (membership changing) stays within the spread.
        assert!(stand_window(spread, (5, 2)).1 <= spread);
        assert!(stand_window(spread, (0, 0)).1 <= spread);
    }
}
