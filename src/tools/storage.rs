//! What a tool call reaches beyond its request: its tenant's secrets and its own state.
//! The protocol engine hands one [`Storage`] to every call's [`Context`](super::Context);
//! the fleet and stdio fill it from different places, so a tool never asks which.

use super::secrets::Secrets;
use super::state::StateStore;

/// The secrets and state a node's tools reach; empty parts answer with a tool error.
#[derive(Clone, Default)]
pub struct Storage {
    /// Tenant secrets.
    pub secrets: Option<Secrets>,
    /// Tool state.
    pub state: Option<StateStore>,
}
