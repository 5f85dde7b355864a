//! Actors and the typed handles everyone else uses to reach them.
//!
//! - [`SessionHandle`] fronts the session actor: reads come from a bounded memory tier
//!   shared by all HTTP workers (no mailbox on the hot path), writes go through the actor,
//!   which owns the store.
//! - [`ToolHandle`] fronts one tool actor: per-tool concurrency limit, timeout,
//!   cooperative cancellation, and panic containment.

mod session;
mod tool;

pub use session::{Config as SessionConfig, Session, SessionHandle};
pub use tool::{ToolHandle, ToolPool};
