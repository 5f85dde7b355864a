//! Real `mcp-fleet serve` processes forming a Raft group: a session made on one node is
//! served by every node, through leader loss, restarts and new members; the internal
//! listener refuses callers without the cluster secret; data directories hold only
//! ciphertext.

mod client;
mod harness;

mod durability;
mod failover;
mod membership;
mod security;
mod sessions;
