//! Where the state machine announces what it applied: hooks that run inside `apply`, so a
//! memory tier never serves what the replica no longer holds.

use std::sync::{Arc, RwLock};

use super::Change;

/// A listener; it runs inside `apply`, so it must be quick and never block.
type Hook = Box<dyn Fn(&Change) + Send + Sync>;

/// The announcer of applied changes; cheap to clone.
#[derive(Clone, Default)]
pub struct Changes {
    hooks: Arc<RwLock<Vec<Hook>>>,
}

impl Changes {
    /// Runs `hook` for every change before `apply` returns, so nothing can read the applied
    /// state while a memory tier still holds what it replaced.
    pub fn hook(&self, hook: impl Fn(&Change) + Send + Sync + 'static) {
        self.hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    /// Announces `change` to every hook.
    pub fn send(&self, change: Change) {
        for hook in self.hooks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            hook(&change);
        }
    }
}
