//! The MCP protocol engine: messages, versions, and dispatch of every method to the
//! registry, independent of the transport that carried the request.

mod call;
mod catalog;
mod engine;
pub mod jsonrpc;
pub(crate) mod mrtr;
mod requests;
mod task_store;
mod tasks;
mod version;

pub(crate) use engine::Services;
pub use engine::{Call, Config, Engine, Era, ModernMeta, ServerInfo, MAX_URI_BYTES};
pub use jsonrpc::{Message, RpcError};
pub use requests::{Inflight, Outbound, MAX_PENDING_REQUESTS};
pub(crate) use task_store::Tasks;
pub use task_store::{Config as TasksConfig, EXTENSION as TASKS_EXTENSION};
pub(crate) use tasks::{declared as declares_tasks, missing_extension as tasks_needed};
pub use version::Version;

/// `_meta` key carrying the protocol version of a 2026-07-28 request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key carrying the client's capabilities on a 2026-07-28 request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key carrying the requested log level on a 2026-07-28 request.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key carrying the server's identity on a 2026-07-28 result.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
