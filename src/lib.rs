//! mcp-fleet: host MCP tools for many users on a fleet of instances.
//!
//! A team's MCP server is a binary that hands its tools, resources and prompts to an
//! [`App`], which runs the whole mcp-fleet command line (`dev`, `serve`, `stdio`,
//! `cluster …`, `keys …`) with them:
//!
//! ```no_run
//! use mcp_fleet::tools::builtin::{Echo, WhoAmI};
//!
//! fn main() -> std::process::ExitCode {
//!     mcp_fleet::App::new("acme-mcp", env!("CARGO_PKG_VERSION"))
//!         .tool(WhoAmI)
//!         .tool(Echo)
//!         .run()
//! }
//! ```
//!
//! What a user of the crate reaches:
//! - [`App`] runs the command line; [`Node::builder`] starts one node from a [`Config`] on
//!   given listeners and returns a [`NodeHandle`] that stops it (for tests and for
//!   embedding in a program of one's own).
//! - [`tools`] is the API for writing tools, resources and prompts, and the built-ins.
//! - [`Principal`] is the authenticated caller a tool sees; [`config`] is the settings.
//!
//! Inside, by responsibility (not public): `mcp` is the protocol engine, `http` the
//! Streamable HTTP transport and operational endpoints, `stdio` the same engine over
//! standard input and output, `actors` the session, key-set and tool handles, `raft` the
//! fleet store (sealed records replicated by openraft over sled), `crypto` sealing, `keys`
//! the `keys` command, `identity` which member a data directory belongs to, `limits` the
//! caps, `metrics` what Prometheus scrapes, `telemetry` the logs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod actors;
mod app;
pub(crate) mod auth;
pub(crate) mod cli;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod crypto;
mod durable;
// For the fuzz targets in `fuzz/` (a crate of its own) and the test replaying their corpus.
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
mod identity;
pub(crate) mod keys;
pub(crate) mod limits;
pub(crate) mod mcp;
pub(crate) mod metrics;
mod node;
pub(crate) mod raft;
pub(crate) mod secrets;
pub(crate) mod stdio;
pub(crate) mod telemetry;
pub mod tools;

pub use app::App;
pub use auth::Principal;
pub use config::Config;
pub use node::{Node, NodeBuilder, NodeHandle, Role, StartError, Stopper};

/// What this crate's benchmarks (`benches/`) and integration tests reach below the public
/// API: not part of it, and free to change with any release.
#[doc(hidden)]
pub mod internals {
    /// The session, key-set and tool handles (tool calls run on the calling request's task).
    pub mod actors {
        pub use crate::actors::install_tls_provider;
    }
    /// Token validation.
    pub mod auth {
        pub use crate::auth::jwt_crypto;
        pub use crate::auth::{
            AuthError, Authenticator, CaFileError, Config, Introspection, IssuerCas, IssuerConfig,
            Principal,
        };
    }
    /// Sealing keys.
    pub mod crypto {
        pub use crate::crypto::{Key, Ring};
    }
    /// Caps.
    pub mod limits {
        pub use crate::limits::Limits;
    }
    /// The replicated store.
    pub mod raft {
        pub use crate::raft::{
            Changes, Command, Config, LogStore, NodeId, StateMachine, Store, Table, TypeConfig,
        };
        /// Commands and their storage keys.
        pub mod command {
            pub use crate::raft::command::storage_key;
        }
    }
}
