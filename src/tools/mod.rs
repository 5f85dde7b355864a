//! The API for writing tools, resources and prompts, their registry, and the built-ins.
//!
//! A tool is a type implementing [`Tool`]: it declares typed arguments (their JSON Schema
//! is generated), receives a [`Context`] with the caller's principal, and can report
//! progress, log, ask the client for input, and notice cancellation.

pub mod builtin;
mod context;
mod header_param;
mod prompt;
mod registry;
mod resource;
mod secrets;
mod state;
mod storage;
mod tool;
mod updates;
mod upstream;

pub use context::{Context, InputRequest, LogLevel, Peer};
pub use header_param::HeaderParam;
pub use prompt::{Prompt, PromptArgument};
pub use registry::{Config, Duplicate, Limits, Registry, RegistryError};
pub use resource::{Resource, ResourceTemplate};
pub use secrets::{Listed, Secret, SecretError, Secrets, SecretsConfig};
pub use state::{State, StateConfig, StateStore};
pub use storage::Storage;
pub use tool::{Content, Error, FnTool, NoArgs, Output, TaskSupport, Tool, ToolInfo};
pub use updates::Updates;
pub use upstream::{AccessToken, Http, HttpConfig, HttpRequest, HttpResponse, MAX_RESPONSE_BYTES};

pub(crate) use context::Scope;
#[cfg(test)]
pub(crate) use context::Silent;
pub(crate) use secrets::fresh;
pub(crate) use tool::DynTool;
pub(crate) use upstream::{Bearer, Caller, Tokens, Upstream};

/// Completion values offered for an argument: a function of the argument's name, its
/// current value, and the other arguments already given.
pub type CompleteFn = std::sync::Arc<
    dyn Fn(&str, &str, &serde_json::Map<String, serde_json::Value>) -> Vec<String> + Send + Sync,
>;
