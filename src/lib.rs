//! mcp-fleet: host MCP tools for many users on a fleet of instances.
//!
//! The crate is laid out by responsibility:
//! - [`mcp`] is the protocol engine: JSON-RPC, versions, dispatch, Multi Round-Trip Requests.
//! - [`http`] is the Streamable HTTP transport and the operational endpoints.
//! - [`stdio`] serves the same engine over standard input and output.
//! - [`actors`] holds the session and tool actors behind typed handles.
//! - [`tools`] is the API for writing tools, resources and prompts, and the built-ins.
//! - [`store`] is the local durable store behind the session actor.
//! - [`raft`] will replicate that store across the fleet.
#![forbid(unsafe_code)]

pub mod actors;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod http;
pub mod mcp;
mod node;
pub mod raft;
pub mod stdio;
pub mod store;
pub mod telemetry;
pub mod tools;

pub use config::Config;
pub use node::{Node, NodeHandle, Stopper};
