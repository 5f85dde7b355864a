//! Membership and health of the group as one node sees it: status, readiness, forming the
//! group, adding and removing nodes, and a log line per change of leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::Serialize;

use super::store::{Error, Inner, Store};
use super::NodeId;

/// How many committed entries a ready node may not have applied yet and stay ready (see
/// [`Store::is_ready`]): far more than one moment of load leaves unapplied, far less than
/// a node restarted or cut off has to catch up on.
const READY_LAG: u64 = 64;

/// How long the leader waits for a removed node to acknowledge it was told, and between
/// two attempts.
const TELL_REMOVED: Duration = Duration::from_secs(2);

/// How long the leader keeps trying to tell a removed node it cannot reach.
const TELL_REMOVED_FOR: Duration = Duration::from_secs(600);

/// One node's view of the group, for `/cluster` and readiness.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node.
    pub node_id: NodeId,
    /// The leader this node knows of.
    pub leader_id: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    /// Voters and learners.
    pub members: Vec<Member>,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last applied entry.
    pub applied_index: Option<u64>,
    /// The highest commit index this node has heard of.
    pub committed_index: Option<u64>,
    /// Index of the last entry covered by this node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry purged from this node's log (it is in a snapshot).
    pub purged_index: Option<u64>,
    /// As the leader, how many milliseconds ago a quorum last acknowledged it; absent on
    /// other nodes and before the first acknowledgement.
    pub quorum_ack_ms: Option<u64>,
    /// Writes this node started and has not finished.
    pub pending_writes: usize,
    /// How long, in milliseconds, commits have stood still under this node's pending
    /// writes, once that is longer than `raft.write_timeout`; absent otherwise.
    pub stalled_ms: Option<u64>,
    /// This node's keys: active and readable key ids, ring fingerprint, key check.
    pub keys: super::KeyReport,
    /// The group's id, as this node's replica names it (random, drawn once per fleet).
    pub group_id: Option<String>,
}

/// What [`Store::form`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formed {
    /// A new group, with the voters given.
    New,
    /// A group with the same voters was formed already.
    Already,
    /// This node belongs to a group with these other voters.
    Other(BTreeMap<NodeId, String>),
}

/// A member of the group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Its internal address.
    pub addr: String,
    /// Whether it votes (learners do not).
    pub voter: bool,
}

impl Store {
    /// This node's view of the group.
    pub fn status(&self) -> Status {
        let m = self.0.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Status {
            node_id: self.0.id,
            leader_id: m.current_leader,
            term: m.current_term,
            state: format!("{:?}", m.state),
            members,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            committed_index: self.0.committed.index(),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            quorum_ack_ms: m.millis_since_quorum_ack,
            pending_writes: self.pending_writes(),
            stalled_ms: self.stalled_for().map(|d| d.as_millis() as u64),
            keys: self.key_report(),
            group_id: self.group_id(),
        }
    }

    /// Whether this node can serve: it is a member of a group (see
    /// [`Store::standing`]), knows a leader (or lost it to an election less than
    /// `raft.write_timeout` ago), has applied what it last heard was committed, and its
    /// writes are not stalled (see [`Store::stalled_for`]). A leader must also have heard
    /// from a quorum within the election timeout (see [`Store::lacks_quorum`]), and no
    /// node is ready while it is cut off from its group (see [`Store::cut_off`]).
    pub fn is_ready(&self) -> bool {
        if self.standing() != super::Standing::Member
            || self.stalled_for().is_some()
            || self.is_cut_off()
        {
            return false;
        }
        let applied = {
            let metrics = self.0.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader.is_none() && !self.in_short_election() {
                return false;
            }
            if self.lacks_quorum_in(&m) {
                return false;
            }
            m.last_applied.map(|l| l.index)
        };
        use std::sync::atomic::Ordering;
        let (caught_up, close) = match self.0.committed.index() {
            None => (true, true),
            Some(committed) => (
                applied.is_some_and(|a| a >= committed),
                applied.unwrap_or(0).saturating_add(READY_LAG) >= committed,
            ),
        };
        if caught_up {
            self.0.caught_up_once.store(true, Ordering::Release);
            return true;
        }
        // Under load, applying trails hearing of a commit by a few entries all the time;
        // a node that has caught up once stays in rotation while it is that close, or a
        // balancer's health checks would catch every node out at once. A node that has
        // not caught up since it started (restarted, far behind) stays out until it does.
        // Not `is_current`: requests on a node that is not current catch up with the leader
        // first (see `SessionHandle::get_fresh`), so the node can stay in rotation.
        close && self.0.caught_up_once.load(Ordering::Acquire)
    }

    /// Whether this node is the leader of a group of several voters and no quorum has
    /// acknowledged it for as long as its followers wait before they elect (none at all,
    /// for that long since it was elected; see [`Store::election_silence`]): it is cut off
    /// from its followers, which are electing, or have elected, another leader. openraft
    /// 0.9 keeps such a node leader (it has no step-down), so its `current_leader` names
    /// itself for as long as it is cut off. Nothing it is asked can succeed: writes cannot
    /// commit and reads cannot be proven current, so each would wait out
    /// `raft.write_timeout` for a 503. Out of rotation, the balancer sends them to the
    /// majority instead. A healthy leader is acknowledged at every heartbeat (3/2
    /// `raft.heartbeat_interval`), almost four times within that silence by default.
    pub fn lacks_quorum(&self) -> bool {
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        self.lacks_quorum_in(&m)
    }

    fn lacks_quorum_in(&self, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool {
        if m.state != ServerState::Leader
            || m.membership_config.membership().voter_ids().count() <= 1
        {
            return false;
        }
        let stale_ms = self.election_silence().as_millis() as u64;
        match m.millis_since_quorum_ack {
            Some(ms) => ms >= stale_ms,
            None => {
                let since = self
                    .0
                    .leading_since_ms
                    .load(std::sync::atomic::Ordering::Acquire);
                since != 0 && crate::raft::now_ms().saturating_sub(since) >= stale_ms
            }
        }
    }

    /// openraft's leader lease (the upper bound of `raft.election_timeout`): a voter that
    /// heard from its leader less than this ago refuses to vote for anyone else.
    pub(crate) fn lease(&self) -> Duration {
        super::config::election_timeout_max(self.0.stale_after)
    }

    /// The shortest silence from its leader after which a follower stands for election:
    /// the lease plus its own election timeout, at least `raft.election_timeout`
    /// (openraft 0.9 adds the lease to a follower's timeout when it knew a leader). A
    /// leader no quorum has acknowledged for this long may have been replaced.
    pub(crate) fn election_silence(&self) -> Duration {
        self.lease() + self.0.stale_after
    }

    /// Whether this node lost sight of its leader less than `raft.write_timeout` ago: an
    /// election is under way. Requests arriving now wait for the new leader (up to the
    /// write timeout), so the node stays ready: taking every node out of the balancer at
    /// once during an election would turn those waits into refusals.
    fn in_short_election(&self) -> bool {
        let lost = self
            .0
            .leader_lost_ms
            .load(std::sync::atomic::Ordering::Acquire);
        lost != 0
            && crate::raft::now_ms().saturating_sub(lost) < self.0.write_timeout.as_millis() as u64
    }

    /// Whether what this node's replica (and the memory tiers over it) holds is known to be
    /// current: as the leader, a quorum acknowledged it within the leader lease; as a
    /// follower, the leader reached it within the lease and it has applied the commit index
    /// the leader named then. (No other leader can have been elected meanwhile: a voter
    /// grants its vote only once it has not heard from its leader for the lease, and a
    /// candidate stands only after a longer silence; see [`Store::lease`].) A node that was paused, cut off or restarted is
    /// not current until the leader reaches it and it catches up; until then reads must
    /// ask the leader (see [`Store::read_barrier`]).
    pub fn is_current(&self) -> bool {
        use std::sync::atomic::Ordering;
        let contact = &self.0.contact;
        let now = crate::raft::now_ms();
        // The watchdog has not ticked for a while: this process may have just resumed from a
        // pause it has not noticed yet.
        if now.saturating_sub(contact.tick_ms.load(Ordering::Acquire)) > super::store::PAUSE_GAP_MS
        {
            return false;
        }
        let stale_ms = self.lease().as_millis() as u64;
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let alone = m.membership_config.membership().voter_ids().count() <= 1;
        let resumed = contact.resumed_ms.load(Ordering::Acquire);
        // After a start or a pause, the leader must vouch for this replica once (a read
        // barrier) before it serves anything on its own again.
        if !alone && contact.verified_ms.load(Ordering::Acquire) <= resumed {
            return false;
        }
        if m.state == ServerState::Leader {
            let acked_since_resume = m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < stale_ms && now.saturating_sub(ms) > resumed);
            return alone || acked_since_resume;
        }
        let sent = contact.at_ms.load(Ordering::Acquire);
        if sent == 0 || sent <= resumed || now.saturating_sub(sent) >= stale_ms {
            return false;
        }
        let named = contact.leader_commit.load(Ordering::Acquire);
        let applied = m.last_applied.map_or(0, |l| l.index + 1);
        applied >= named
    }

    /// Notes that the leader reached this node, naming its commit index, with a message
    /// sent at `sent_ms` (the leader's clock). A message that waited longer than the
    /// leader lease to be read says nothing about now, and is not news.
    pub(crate) fn heard_from_leader(&self, leader_commit: Option<u64>, sent_ms: Option<u64>) {
        use std::sync::atomic::Ordering;
        // Late or not, the leader is alive and reaches this node: no election is due.
        self.0.ballots.heard_leader();
        let stale_ms = self.lease().as_millis() as u64;
        let now = crate::raft::now_ms();
        let Some(sent) = sent_ms.filter(|sent| now.saturating_sub(*sent) < stale_ms) else {
            return;
        };
        let named = leader_commit.map_or(0, |i| i + 1);
        self.0
            .contact
            .leader_commit
            .fetch_max(named, Ordering::AcqRel);
        self.0.contact.at_ms.fetch_max(sent, Ordering::AcqRel);
    }

    /// Initialises a new group whose voters are `peers`. The same call on every node of a
    /// new fleet is safe; on a node that already belongs to a group it changes nothing.
    pub async fn initialize(&self, peers: BTreeMap<NodeId, String>) -> Result<bool, Error> {
        let raft = self.0.raft.clone();
        let nodes: BTreeMap<NodeId, BasicNode> = peers
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        self.on_runtime(async move {
            // openraft refuses (and logs an ERROR) once the node has a vote or a log: the
            // usual case on every node but the first, which has already heard from it.
            let formed = {
                let m = raft.metrics();
                let m = m.borrow();
                m.last_log_index.is_some() || m.vote != openraft::Vote::default()
            };
            if formed {
                return Ok(false);
            }
            match raft.initialize(nodes).await {
                Ok(()) => Ok(true),
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {
                    Ok(false)
                }
                Err(e) => Err(Error::Membership(e.to_string())),
            }
        })
        .await
    }

    /// `cluster init`: forms a new group whose voters are `peers`, or finds this node
    /// already in one. The same voters again is the repeat a deployment script makes on
    /// every node; other voters would make a second group, so they are reported instead.
    pub async fn form(&self, peers: BTreeMap<NodeId, String>) -> Result<Formed, Error> {
        if self.initialize(peers.clone()).await? {
            return Ok(Formed::New);
        }
        // A node may have voted in the first election (so it cannot initialise) before the
        // leader's first append brings it the membership: wait for that, within the write
        // timeout, rather than report a group without voters.
        let until = std::time::Instant::now() + self.0.write_timeout;
        let voters = loop {
            let voters: BTreeMap<NodeId, String> = self
                .status()
                .members
                .into_iter()
                .filter(|m| m.voter)
                .map(|m| (m.id, m.addr))
                .collect();
            if !voters.is_empty() || std::time::Instant::now() >= until {
                break voters;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(if voters == peers {
            Formed::Already
        } else {
            Formed::Other(voters)
        })
    }

    /// On the leader: adds `id` as a learner, waits for it to catch up, makes it a voter.
    pub async fn join(&self, id: NodeId, addr: String) -> Result<(), Error> {
        // An id names one replica: a member's id given with another address is a new disk
        // (or another machine) claiming to be that member, which would vote with a log the
        // group never wrote. Joining a member again at its own address changes nothing.
        if let Some(known) = self.member_addr(id).filter(|known| *known != addr) {
            return Err(Error::Membership(format!(
                "node {id} is already a member at {known}: a node whose disk was lost joins \
                 under a new id (remove the old one with `cluster leave --node-id {id}`)"
            )));
        }
        let raft = self.0.raft.clone();
        self.on_runtime(async move {
            raft.add_learner(id, BasicNode { addr }, true)
                .await
                .map_err(membership_error)?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
            Ok(())
        })
        .await
    }

    /// On the leader: removes `id` from the group, then tells it so (best effort: a node
    /// that does not hear it notices once it applies a membership without itself).
    pub async fn leave(&self, id: NodeId) -> Result<(), Error> {
        let raft = self.0.raft.clone();
        let addr = self.member_addr(id);
        self.on_runtime(async move {
            let voters: BTreeSet<NodeId> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            // A voter goes in one change (`retain` false drops it as a node too): a leader
            // that has just removed itself as a voter must not propose again.
            let change = if voters.contains(&id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(change, false)
                .await
                .map_err(membership_error)?;
            Ok(())
        })
        .await?;
        if id == self.0.id {
            self.mark_removed("removed itself as the leader");
        } else if let Some(addr) = addr {
            let removal = self
                .0
                .raft
                .metrics()
                .borrow()
                .membership_config
                .log_id()
                .map_or(0, |l| l.index);
            self.tell_removed(id, addr, removal).await;
        }
        Ok(())
    }

    /// Tells node `id` at `addr` that it was removed, by the membership at log index
    /// `removal`. The leader stops sending it anything
    /// once it is out, so a node that misses this would never learn it and would stand for
    /// election for ever: while it cannot be reached, keep trying in the background (for
    /// [`TELL_REMOVED_FOR`]).
    async fn tell_removed(&self, id: NodeId, addr: String, removal: u64) {
        let client = self.0.client.clone();
        let tell = move || {
            let client = client.clone();
            let addr = addr.clone();
            async move {
                client
                    .call::<_, bool>(&addr, super::network::path::REMOVED, &removal, TELL_REMOVED)
                    .await
            }
        };
        let Err(e) = tell().await else { return };
        tracing::warn!(
            node = id,
            error = %e,
            "could not tell a removed node it was removed; trying again in the background"
        );
        let raft = self.0.raft.clone();
        self.0.runtime.spawn(async move {
            let until = std::time::Instant::now() + TELL_REMOVED_FOR;
            while std::time::Instant::now() < until {
                tokio::time::sleep(TELL_REMOVED).await;
                // Added again meanwhile (a fresh data directory under the same id): the
                // node at that address is a member now, and must not be told otherwise.
                let member_again = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .is_some();
                if member_again {
                    return;
                }
                if tell().await.is_ok() {
                    tracing::info!(node = id, "told a removed node it was removed");
                    return;
                }
            }
            tracing::warn!(node = id, "gave up telling a removed node it was removed");
        });
    }

    /// How many voters the membership this node holds has.
    pub fn voter_count(&self) -> usize {
        self.0
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
    }

    /// Hands leadership to the most caught-up voter before this node stops, so the fleet
    /// does not wait out an election timeout after it is gone. openraft 0.9 has no
    /// leadership transfer, so: stop taking writes and reads from other nodes (they retry
    /// until a new leader answers), stop heartbeats, wait until the followers' leader lease
    /// has lapsed, and ask the chosen follower to stand for election. Best effort: if it
    /// fails, the followers elect a leader on their own once this node is gone.
    pub async fn step_down(&self) {
        use std::sync::atomic::Ordering;
        let (target, lease) = {
            let metrics = self.0.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                return;
            }
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            let best = m.replication.as_ref().and_then(|replication| {
                replication
                    .iter()
                    .filter(|(id, _)| **id != self.0.id && voters.contains(id))
                    .max_by_key(|(_, matched)| matched.map(|l| l.index))
                    .map(|(id, _)| *id)
            });
            (best, self.lease())
        };
        let Some((id, addr)) = target.and_then(|id| Some((id, self.member_addr(id)?))) else {
            return;
        };
        self.0.stepping_down.store(true, Ordering::Release);
        let raft = self.0.raft.clone();
        let client = self.0.client.clone();
        let me = self.0.id;
        let _ = self
            .on_runtime(async move {
                raft.runtime_config().heartbeat(false);
                raft.runtime_config().elect(false);
                tokio::time::sleep(lease + Duration::from_millis(100)).await;
                let asked = client
                    .call::<_, bool>(
                        &addr,
                        super::network::path::ELECT,
                        &(),
                        Duration::from_secs(2),
                    )
                    .await;
                let handed = asked.is_ok()
                    && raft
                        .wait(Some(Duration::from_secs(3)))
                        .metrics(
                            |m| m.current_leader.is_some_and(|l| l != me),
                            "a new leader",
                        )
                        .await
                        .is_ok();
                tracing::info!(node = id, handed, "stepped down before stopping");
                Ok(())
            })
            .await;
    }

    /// The internal address of member `id`, if it is one.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        let m = self.0.raft.metrics().borrow().clone();
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some(node.addr)
    }

    /// Every other member's id and internal address (voters and learners alike).
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        // Read under the borrow instead of cloning every metric: this runs per relayed
        // batch of resource updates.
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let nodes = m.membership_config.membership().nodes();
        nodes
            .filter(|(id, _)| **id != self.0.id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// The leader's id and internal address, if one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.0.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node.addr))
    }

    /// How many times the leader this node knows of became another node (the first
    /// leader it learns of included), since this node started.
    pub fn leader_changes(&self) -> u64 {
        self.0
            .leader_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs each change of leader or term once, as this node sees it, and counts changes of
    /// the known leader.
    pub(super) fn spawn_leader_log(&self) {
        // Leader, vote and role only: not woken by every entry.
        let mut metrics = self.0.raft.server_metrics();
        let id = self.0.id;
        let changes = self.0.leader_changes.clone();
        let lost = self.0.leader_lost_ms.clone();
        let leading_since = self.0.leading_since_ms.clone();
        self.0.runtime.spawn(async move {
            let mut seen = (None, 0);
            // A spell without a leader that ends with the same one is no change.
            let mut known = None;
            while metrics.changed().await.is_ok() {
                let (leader, term, state) = {
                    let m = metrics.borrow_and_update();
                    (m.current_leader, m.vote.leader_id().get_term(), m.state)
                };
                if leader.is_some() && leader != known {
                    known = leader;
                    changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                match leader {
                    Some(_) => lost.store(0, std::sync::atomic::Ordering::Release),
                    None if known.is_some() => {
                        let _ = lost.compare_exchange(
                            0,
                            crate::raft::now_ms(),
                            std::sync::atomic::Ordering::AcqRel,
                            std::sync::atomic::Ordering::Acquire,
                        );
                    }
                    None => {}
                }
                if state == ServerState::Leader {
                    let _ = leading_since.compare_exchange(
                        0,
                        crate::raft::now_ms(),
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Acquire,
                    );
                } else {
                    leading_since.store(0, std::sync::atomic::Ordering::Release);
                }
                if (leader, term) != seen {
                    seen = (leader, term);
                    match leader {
                        Some(leader) => {
                            tracing::info!(node = id, leader, term, state = ?state, "leader known")
                        }
                        // Losing a leader is worth a warning; not having met one yet, at
                        // every start while the first election runs, is not.
                        None if known.is_some() => {
                            tracing::warn!(node = id, term, state = ?state, "no leader known")
                        }
                        None => tracing::info!(node = id, term, state = ?state, "no leader yet"),
                    }
                }
            }
        });
    }
}

impl Inner {
    /// Completes once the leader this node knows of is no longer `from`: another one, or
    /// none (an election is under way). Never, once Raft has stopped.
    async fn leader_gone(&self, from: NodeId) {
        let mut metrics = self.raft.server_metrics();
        while metrics.borrow_and_update().current_leader == Some(from) {
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the leader this node knows of is no longer `from`, or `pause` passes.
    /// A write or read that `from` failed (refused, or unreachable because it died) goes
    /// to its successor as soon as this node hears of one, rather than a pause later, and
    /// tries `from` again no faster than `pause`.
    pub(super) async fn leader_other_than(&self, from: NodeId, pause: Duration) {
        let _ = tokio::time::timeout(pause, self.leader_gone(from)).await;
    }

    /// Runs `call`, a request to `leader`, unless this node hears first that `leader` is
    /// no longer the leader (`None`). A leader that vanished without closing its
    /// connections (its host or container gone, a partition) leaves a call hanging until
    /// its timeout, while the survivors may already have elected a successor; the caller
    /// tries that one instead. (A write abandoned this way may still have been committed:
    /// retrying it is what a lost answer already leads to, and every command is
    /// idempotent.)
    pub(super) async fn unless_leader_changes<T>(
        &self,
        leader: NodeId,
        call: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            biased;
            out = call => Some(out),
            () = self.leader_gone(leader) => None,
        }
    }
}

fn membership_error<E: std::fmt::Display>(e: E) -> Error {
    Error::Membership(e.to_string())
}
