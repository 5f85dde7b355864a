//! The replicated store: one openraft group per fleet over sled, holding sealed records
//! (sessions, request state, tool state, tenant credentials, revocations) for every node.
//!
//! - [`command`] is what the log carries and how records are stored.
//! - [`log_store`] keeps the Raft log and vote in files of their own (`wal`), durable
//!   before acknowledging.
//! - [`state_machine`] applies commands, builds and installs snapshots.
//! - `trees` holds the records and their expiry and owner indexes in sled.
//! - `snapshot` streams snapshots to and from files, checked as they are read.
//! - `compaction` decides when a node snapshots and purges its log.
//! - [`network`] carries Raft messages, forwarded writes and leader reads between nodes,
//!   each AppendEntries within a byte budget.
//! - [`store`] is what the rest of the node uses: sealed, typed reads and writes.
//! - `keycheck` shows, before a node serves, that its key ring is the fleet's.
//! - `pending` tracks this node's unfinished writes, so readiness can tell a stall.
//! - `wire` decodes what other nodes send, within bounds whatever the bytes.
//! - `membership` reports the group's state and changes who belongs to it.
//! - `standing` tells whether this node is a member, waiting for a group, or removed.
//! - `election` stands again after a split vote, and tells when this node is cut off.
//! - [`config`] holds the group's settings.

mod batch;
mod budget;
mod changes;
pub mod command;
mod compaction;
mod config;
mod election;
mod fleetwide;
mod keycheck;
mod log_store;
mod membership;
pub mod network;
mod pending;
mod propose;
mod snapshot;
mod standing;
mod state_machine;
mod store;
#[cfg(test)]
mod tests;
mod trees;
mod wal;
pub(crate) mod wire;

pub use changes::Changes;
pub use command::{Change, Command, Op, Outcome, Owner, Record, Table};
pub use config::{parse_peers, Config, APPEND_ENVELOPE_BYTES};
pub use keycheck::{KeyReport, KeyState};
pub use log_store::{Committed, FlushMetrics, LogStore};
pub use membership::{Formed, Status};
pub use network::Client;
pub use snapshot::SnapshotFile;
pub use standing::Standing;
pub use state_machine::{Reader, StateMachine};
pub(crate) use store::Refusal;
pub use store::{now_ms, Error, Runtime, Store};

openraft::declare_raft_types!(
    /// The types of the fleet's Raft group.
    pub TypeConfig:
        D = Command,
        // One outcome per write the entry carries (a group carries several).
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = SnapshotFile,
);

/// A node's id in the group.
pub type NodeId = u64;

/// The storage error of this group.
pub type StorageError = openraft::StorageError<NodeId>;

/// Helpers for tests that wait on state the log changes.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::time::{Duration, Instant};

    /// Polls `probe` for up to 10 s; returns whether it became true.
    pub async fn eventually(mut probe: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if probe() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        probe()
    }
}
