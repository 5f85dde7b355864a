//! Real `mcp-fleet serve` processes forming a Raft group: a session made on one node is
//! served by every node, through leader loss, restarts and new members; the internal
//! listener refuses callers without the cluster secret; data directories hold only
//! ciphertext. The fleet scenarios add what an operator runs in front and beside it: a
//! real HAProxy, a real token issuer, and the official Python SDK as a client.

mod client;
#[path = "../support/examples.rs"]
mod examples;
mod fleet;
mod harness;
#[path = "../support/issuer.rs"]
mod issuer;
mod lb;
mod load;
#[path = "../support/python.rs"]
mod python;
#[path = "../support/upstream.rs"]
mod upstream;

mod catalog;
mod cut_off;
mod decoding;
mod durability;
mod elicitation;
mod failover;
mod history;
mod identity;
mod keys;
mod large_entries;
mod leader_loss;
mod membership;
mod mrtr;
mod notifications;
mod partition;
mod partition_follower;
mod revocation;
mod rolling;
mod round_robin;
mod secrets;
mod security;
mod session_cap;
mod sessions;
mod split_votes;
mod stalled_writes;
mod standing;
mod streams;
mod tasks;
mod tenant_api;
mod tool_state;
mod upstream_calls;
