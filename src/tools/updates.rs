//! Resource update announcements: whoever changes a resource says so here, and every
//! stream subscribed to that URI on this node gets `notifications/resources/updated`.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Updates kept for a slow listener before it starts missing some.
const BACKLOG: usize = 1024;

/// The channel of updated resource URIs on one node.
#[derive(Clone)]
pub struct Updates(broadcast::Sender<Arc<str>>);

impl Default for Updates {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Updates {
    /// Announces that the resource at `uri` changed.
    pub fn resource_updated(&self, uri: &str) {
        // No listener is not an error: nobody subscribed.
        let _ = self.0.send(Arc::from(uri));
    }

    /// Listens to announcements made from now on.
    pub fn listen(&self) -> broadcast::Receiver<Arc<str>> {
        self.0.subscribe()
    }
}
