//! Membership and health of the group as one node sees it: status, readiness, forming the
//! group, adding and removing nodes, and a log line per change of leader.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::Serialize;

use super::store::{Error, Store};
use super::NodeId;

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
        }
    }

    /// Whether this node can serve: it knows a leader and has applied what it last heard
    /// was committed.
    pub fn is_ready(&self) -> bool {
        let m = self.0.raft.metrics().borrow().clone();
        let applied = m.last_applied.map(|l| l.index);
        m.current_leader.is_some()
            && m.state != ServerState::Candidate
            && match self.0.committed.index() {
                None => true,
                Some(committed) => applied.is_some_and(|a| a >= committed),
            }
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

    /// Whether this node belongs to a group yet.
    pub async fn is_initialized(&self) -> bool {
        self.0.raft.is_initialized().await.unwrap_or(false)
    }

    /// On the leader: adds `id` as a learner, waits for it to catch up, makes it a voter.
    pub async fn join(&self, id: NodeId, addr: String) -> Result<(), Error> {
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

    /// On the leader: removes `id` from the group.
    pub async fn leave(&self, id: NodeId) -> Result<(), Error> {
        let raft = self.0.raft.clone();
        self.on_runtime(async move {
            let voters: BTreeSet<NodeId> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if voters.contains(&id) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(membership_error)?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
            Ok(())
        })
        .await
    }

    /// The internal address of member `id`, if it is one.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        let m = self.0.raft.metrics().borrow().clone();
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some(node.addr)
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
        let mut metrics = self.0.raft.metrics();
        let id = self.0.id;
        let changes = self.0.leader_changes.clone();
        self.0.runtime.spawn(async move {
            let mut seen = (None, 0);
            // A spell without a leader that ends with the same one is no change.
            let mut known = None;
            while metrics.changed().await.is_ok() {
                let (leader, term, state) = {
                    let m = metrics.borrow_and_update();
                    (m.current_leader, m.current_term, m.state)
                };
                if leader.is_some() && leader != known {
                    known = leader;
                    changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if (leader, term) != seen {
                    seen = (leader, term);
                    match leader {
                        Some(leader) => {
                            tracing::info!(node = id, leader, term, state = ?state, "leader known")
                        }
                        None => tracing::warn!(node = id, term, state = ?state, "no leader known"),
                    }
                }
            }
        });
    }
}

fn membership_error<E: std::fmt::Display>(e: E) -> Error {
    Error::Membership(e.to_string())
}
