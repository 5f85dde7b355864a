//! Actors and the typed handles everyone else uses to reach them.
//!
//! - [`SessionHandle`] fronts legacy sessions: reads come from a bounded memory tier
//!   shared by all HTTP workers (no mailbox on the hot path), writes go through the fleet
//!   store, and a hook inside the log's apply drops what the log changed.
//! - `JwksHandle` fronts the JWKS actor: key lookups read a shared cache; only a miss
//!   reaches the actor, which fetches each issuer's key set (rate-limited, shared).
//! - [`ToolHandle`] runs one tool's calls on the calling request's task (no mailbox, no
//!   thread hop): per-tool concurrency limit, timeout, cooperative cancellation, and
//!   panic containment.

pub(crate) mod jwks;
mod session;
mod tool;

pub use jwks::install_tls_provider;
pub(crate) use jwks::JwksHandle;
pub use session::{Config as SessionConfig, Created, Session, SessionHandle, MAX_PER_PRINCIPAL};
pub(crate) use session::{UpdateError, Updated, MAX_CLIENT_BYTES, MAX_SUBSCRIPTIONS};
pub use tool::{ToolHandle, ToolPool};
