//! Whether this node takes part in a group: a member, waiting to be formed or joined, or
//! removed. A node that is not a member says so at once and loudly: in its log every few
//! seconds, in `/ready`, and to every MCP request (503 with the reason), rather than
//! letting callers wait out `raft.write_timeout` for a leader that will never come.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::store::{Error, Store};

/// How often a node without a group says what it waits for.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);

/// Where a removal is remembered across restarts: a removed node whose last log still
/// lists it must not stand for election after a restart either.
const STANDING_TREE: &str = "node_standing";
const REMOVED: &[u8] = b"removed";

/// Whether this node takes part in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It is a voter or learner of the membership it holds.
    Member,
    /// It holds no membership: no group was formed with it, and none has added it yet.
    Waiting,
    /// It was a member and is no longer: `cluster leave` removed it.
    Removed,
}

/// What this node knows of its own standing beyond the membership it holds.
pub(super) struct Watch {
    /// Told it was removed, or saw a membership without it after one with it.
    removed: AtomicBool,
    /// The log index of the membership it held when it was removed: a later one that lists
    /// it means it was added again.
    removed_at: AtomicU64,
    /// A member answered its vote request that it is not one (see
    /// [`Store::is_removed_candidate`]); set by the network.
    not_member: Arc<AtomicBool>,
    /// It has held a membership that lists it. Until then a membership without it (from a
    /// snapshot older than the entry that added it) is no removal.
    was_member: AtomicBool,
    /// The internal address others reach this node at, for the commands it suggests.
    advertise: OnceLock<String>,
}

impl Watch {
    /// A watch that also heeds members saying, through the network, that this node is not
    /// one (`not_member`).
    pub(super) fn new(not_member: Arc<AtomicBool>) -> Self {
        Self {
            removed: AtomicBool::new(false),
            removed_at: AtomicU64::new(0),
            not_member,
            was_member: AtomicBool::new(false),
            advertise: OnceLock::new(),
        }
    }
}

impl Store {
    /// Whether this node takes part in a group; see [`Standing`].
    pub fn standing(&self) -> Standing {
        let watch = &self.0.standing;
        if watch.removed.load(Ordering::Acquire) {
            return Standing::Removed;
        }
        if watch.not_member.load(Ordering::Acquire) {
            self.mark_removed("a member answered its vote request that it is not one");
            return Standing::Removed;
        }
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        if membership.get_node(&self.0.id).is_some() {
            return Standing::Member;
        }
        if membership.nodes().next().is_none() {
            return Standing::Waiting;
        }
        if watch.was_member.load(Ordering::Acquire) {
            Standing::Removed
        } else {
            // Catching up from a snapshot taken before it was added: the entry that adds
            // it comes next.
            Standing::Waiting
        }
    }

    /// Why this node serves nothing, when it is not a member of a group: for `/ready`, the
    /// log, and MCP requests refused at once.
    pub fn not_serving(&self) -> Option<String> {
        match self.standing() {
            Standing::Member => None,
            Standing::Waiting => Some(self.waiting_reason()),
            Standing::Removed => {
                let id = self.0.id;
                let addr = self.advertised();
                Some(format!(
                    "removed from the group: node {id} is no longer a member (`mcp-fleet \
                     cluster leave`), so it serves nothing and stands for no election; to \
                     bring it back, run `mcp-fleet cluster join --via <a member's internal \
                     HOST:PORT> --node-id {id} --raft-addr {addr}`"
                ))
            }
        }
    }

    /// The internal address others reach this node at, or a placeholder.
    fn advertised(&self) -> &str {
        self.0
            .standing
            .advertise
            .get()
            .map_or("<this node's internal HOST:PORT>", String::as_str)
    }

    fn waiting_reason(&self) -> String {
        let id = self.0.id;
        let addr = self.advertised();
        format!(
            "waiting to be added to a group: node {id} belongs to none yet and serves \
             nothing until it does. To form a new group, run `mcp-fleet cluster init --via \
             {addr} --peers {id}={addr},<ID>=<HOST:PORT>,...` naming every voter (the same \
             list for every node); to add it to a running group, run `mcp-fleet cluster join \
             --via <a member's internal HOST:PORT> --node-id {id} --raft-addr {addr}`"
        )
    }

    /// Whether a vote request from `candidate`, whose log ends at `last_log_index`, comes
    /// from a node the group removed that never heard it: openraft stops replicating to a
    /// removed node at once, so such a node stands for election for ever. Only when this
    /// node is a member whose membership leaves the candidate out, is committed, and comes
    /// after the candidate's whole log, so a node added again later is never told off by
    /// a member that has not heard of it yet.
    pub(crate) fn is_removed_candidate(
        &self,
        candidate: super::NodeId,
        last_log_index: Option<u64>,
    ) -> bool {
        if candidate == self.0.id || self.standing() != Standing::Member {
            return false;
        }
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let held = &m.membership_config;
        let Some(at) = held.log_id().map(|l| l.index) else {
            return false;
        };
        held.membership().get_node(&candidate).is_none()
            && self.0.committed.index().is_some_and(|c| c >= at)
            && last_log_index.is_none_or(|last| last < at)
    }

    /// Records the internal address other nodes reach this one at, for the commands a
    /// waiting node suggests.
    pub fn set_advertised(&self, addr: String) {
        let _ = self.0.standing.advertise.set(addr);
    }

    /// Notes that this node is no longer a member (`by` says how it learned it): from now
    /// on, and after restarts, it serves nothing and stands for no election.
    pub fn mark_removed(&self, by: &str) {
        self.mark_removed_at(by, 0);
    }

    /// Like [`Store::mark_removed`], knowing that the membership that removed it is at log
    /// index `removal` (0 when unknown). Only a membership after that one and after the one
    /// this node holds counts as adding it again: entries from before its removal may
    /// still arrive late.
    pub fn mark_removed_at(&self, by: &str, removal: u64) {
        if self.0.standing.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        // An election by a node outside the group can only disturb the members: its term
        // would depose their leader.
        self.0.raft.runtime_config().elect(false);
        self.0.raft.runtime_config().heartbeat(false);
        let at = self.held_membership().1.max(removal);
        self.0.standing.removed_at.store(at, Ordering::Release);
        let mut record = at.to_be_bytes().to_vec();
        record.extend_from_slice(by.as_bytes());
        if let Err(e) = self.0.db.open_tree(STANDING_TREE).and_then(|tree| {
            tree.insert(REMOVED, record)?;
            tree.flush().map(drop)
        }) {
            tracing::error!(error = %e, "could not record the removal on disk");
        }
        tracing::error!(
            node = self.0.id,
            by,
            "this node was removed from the group: it no longer serves or stands for election"
        );
    }

    /// Whether the membership this node holds lists it, and that membership's log index
    /// (0 for none).
    fn held_membership(&self) -> (bool, u64) {
        let metrics = self.0.raft.metrics();
        let m = metrics.borrow();
        let held = &m.membership_config;
        (
            held.membership().get_node(&self.0.id).is_some(),
            held.log_id().map_or(0, |l| l.index),
        )
    }

    /// Ends a removal once a membership newer than the one this node held when it was
    /// removed lists it again: `cluster join` added it back (with its data directory, as
    /// it was), so it serves and stands for election again.
    fn readmit_if_added_again(&self) {
        let watch = &self.0.standing;
        if !watch.removed.load(Ordering::Acquire) {
            return;
        }
        let (listed, at) = self.held_membership();
        if !listed || at <= watch.removed_at.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self
            .0
            .db
            .open_tree(STANDING_TREE)
            .and_then(|tree| tree.remove(REMOVED).and_then(|_| tree.flush()))
        {
            tracing::error!(error = %e, "could not erase the record of a removal");
            return;
        }
        watch.not_member.store(false, Ordering::Release);
        watch.removed.store(false, Ordering::Release);
        self.0.raft.runtime_config().heartbeat(true);
        self.0.raft.runtime_config().elect(true);
        tracing::warn!(
            node = self.0.id,
            membership_index = at,
            "this node was added to the group again: it serves and stands for election again"
        );
    }

    /// Restores a removal recorded before a restart and watches the membership: a
    /// removal this node applies marks it removed, and while it waits for a group it says
    /// so, with the commands that form or join one, every few seconds.
    pub(super) fn spawn_standing_watch(&self) -> Result<(), Error> {
        let tree = self
            .0
            .db
            .open_tree(STANDING_TREE)
            .map_err(|e| Error::Storage(e.to_string()))?;
        if let Some(record) = tree
            .get(REMOVED)
            .map_err(|e| Error::Storage(e.to_string()))?
        {
            let (at, by) = match record.split_first_chunk::<8>() {
                Some((at, by)) => (u64::from_be_bytes(*at), by),
                None => (0, &record[..]),
            };
            self.0.standing.removed_at.store(at, Ordering::Release);
            self.0.standing.removed.store(true, Ordering::Release);
            self.0.raft.runtime_config().elect(false);
            self.0.raft.runtime_config().heartbeat(false);
            tracing::error!(
                node = self.0.id,
                by = %String::from_utf8_lossy(by),
                "this node was removed from the group before it stopped: it serves nothing \
                 and stands for no election"
            );
        }
        let weak = Arc::downgrade(&self.0);
        // Membership and role only: not woken by every entry.
        let mut metrics = self.0.raft.server_metrics();
        self.0.runtime.spawn(async move {
            let mut waited = tokio::time::interval(WAITING_LOG_EVERY);
            // The first tick is immediate: give a node started with `--peers` a moment.
            waited.tick().await;
            loop {
                // `Some(false)`: the membership may have changed; `Some(true)`: time to say
                // again what this node waits for; `None`: Raft has stopped.
                let tick = tokio::select! {
                    changed = metrics.changed() => changed.is_ok().then_some(false),
                    _ = waited.tick() => Some(true),
                };
                let Some(inner) = weak.upgrade() else { return };
                let Some(tick) = tick else { return };
                let store = Store(inner);
                let listed = metrics
                    .borrow_and_update()
                    .membership_config
                    .membership()
                    .get_node(&store.0.id)
                    .is_some();
                if listed {
                    store.0.standing.was_member.store(true, Ordering::Release);
                }
                store.readmit_if_added_again();
                match store.standing() {
                    // Once only: a node already marked returns at once.
                    Standing::Removed => {
                        store.mark_removed("applied a membership without this node")
                    }
                    Standing::Waiting if tick => {
                        tracing::warn!(node = store.0.id, "{}", store.waiting_reason());
                    }
                    _ => {}
                }
            }
        });
        Ok(())
    }
}
