//! mcp-fleet: host MCP tools for many users on a fleet of instances.
//!
//! The crate is laid out by responsibility:
//! - [`mcp`] is the protocol engine: JSON-RPC, versions, dispatch, Multi Round-Trip Requests.
//! - [`http`] is the Streamable HTTP transport and the operational endpoints.
//! - [`stdio`] serves the same engine over standard input and output.
//! - [`actors`] holds the session and tool actors behind typed handles.
//! - [`tools`] is the API for writing tools, resources and prompts, and the built-ins.
//! - [`raft`] is the fleet store: sealed records replicated by openraft over sled.
//! - [`crypto`] seals records and hashes the keys they are stored under; [`keys`] is the
//!   `keys` command over it.
//! - `identity` records which member a data directory belongs to.
//! - [`limits`] caps what a caller can make a node hold, and says how refusals look.
//! - [`metrics`] is what Prometheus scrapes from a node; [`telemetry`] sets up its logs.
#![forbid(unsafe_code)]

pub mod actors;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crypto;
// For the fuzz targets in `fuzz/` (a crate of its own) and the test replaying their corpus.
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod identity;
pub mod keys;
pub mod limits;
pub mod mcp;
pub mod metrics;
mod node;
pub mod raft;
pub mod secrets;
pub mod stdio;
pub mod telemetry;
pub mod tools;

pub use config::Config;
pub use node::{Node, NodeHandle, Role, StartError, Stopper};
