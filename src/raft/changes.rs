//! Where the state machine announces what it applied: synchronous hooks for memory tiers
//! that must never lag the replica, and a broadcast for everything else.

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::Change;

/// A synchronous listener; it runs inside `apply`, so it must be quick and never block.
type Hook = Box<dyn Fn(&Change) + Send + Sync>;

/// The announcer of applied changes; cheap to clone.
#[derive(Clone)]
pub struct Changes {
    sender: broadcast::Sender<Change>,
    hooks: Arc<RwLock<Vec<Hook>>>,
}

impl Changes {
    /// An announcer whose broadcast keeps up to `capacity` changes for slow receivers.
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
            hooks: Arc::default(),
        }
    }

    /// Changes from now on, delivered asynchronously (a slow receiver may lag).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// Runs `hook` for every change before `apply` returns, so nothing can read the applied
    /// state while a memory tier still holds what it replaced.
    pub fn hook(&self, hook: impl Fn(&Change) + Send + Sync + 'static) {
        self.hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    /// Announces `change`: hooks first, then the broadcast (no receivers is fine).
    pub fn send(&self, change: Change) {
        for hook in self.hooks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            hook(&change);
        }
        let _ = self.sender.send(change);
    }
}
