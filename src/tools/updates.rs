//! Resource update announcements: whoever changes a resource says so here, and every
//! stream subscribed to that URI gets `notifications/resources/updated`, on this node
//! and, in a fleet, on every other node (through a relay, see `http::fanout`).

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::limits::Limits;

/// Updates kept for a slow listener before it starts missing some.
const BACKLOG: usize = 1024;

/// The channel of updated resource URIs on one node, and the relay to the other nodes.
///
/// Every call's context holds a clone: one reference count, whatever is inside.
#[derive(Clone)]
pub struct Updates(Arc<Inner>);

struct Inner {
    local: broadcast::Sender<Arc<str>>,
    relay: Option<Relay>,
}

/// Where a node's own announcements queue for the other nodes.
struct Relay {
    queue: mpsc::Sender<Arc<str>>,
    /// Counts announcements dropped because the queue is full, under `key`.
    limits: Limits,
    key: &'static str,
}

impl Default for Updates {
    /// Announcements that stay on this node (stdio, a fleet of one, tests).
    fn default() -> Self {
        Self(Arc::new(Inner {
            local: broadcast::channel(BACKLOG).0,
            relay: None,
        }))
    }
}

impl Updates {
    /// Announcements that also queue, up to `capacity`, for the other nodes of a fleet;
    /// the receiver is the relay's end. An announcement that finds the queue full reaches
    /// this node's streams only, and counts as a refusal by cap `key` in `limits`.
    pub(crate) fn relayed(
        capacity: usize,
        limits: Limits,
        key: &'static str,
    ) -> (Self, mpsc::Receiver<Arc<str>>) {
        limits.declare(key);
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let updates = Self(Arc::new(Inner {
            local: broadcast::channel(BACKLOG).0,
            relay: Some(Relay { queue, limits, key }),
        }));
        (updates, rx)
    }

    /// Announces that the resource at `uri` changed, to every node's subscribers.
    pub fn resource_updated(&self, uri: &str) {
        let uri: Arc<str> = Arc::from(uri);
        if let Some(relay) = &self.0.relay {
            if relay.queue.try_send(uri.clone()).is_err() {
                // Full (a burst, or peers that answer slowly) or closed (shutting down):
                // notifications are hints, so a dropped one is counted, not waited for.
                relay.limits.refused(relay.key);
            }
        }
        self.announce_here(uri);
    }

    /// Delivers an announcement to this node's subscribers only: for one another node
    /// relayed, which must not travel on.
    pub(crate) fn announce_here(&self, uri: Arc<str>) {
        // No listener is not an error: nobody subscribed.
        let _ = self.0.local.send(uri);
    }

    /// Listens to announcements made from now on.
    pub fn listen(&self) -> broadcast::Receiver<Arc<str>> {
        self.0.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_relayed_announcement_reaches_this_node_and_the_queue_once() {
        let limits = Limits::default();
        let (updates, mut queue) = Updates::relayed(1, limits.clone(), "test.max_queue");
        let mut here = updates.listen();
        updates.resource_updated("a://1");
        // The queue holds one: the second is dropped for the other nodes, not for this one.
        updates.resource_updated("a://2");
        assert_eq!(&*here.recv().await.unwrap(), "a://1");
        assert_eq!(&*here.recv().await.unwrap(), "a://2");
        assert_eq!(&*queue.recv().await.unwrap(), "a://1");
        assert!(queue.try_recv().is_err());
        assert_eq!(limits.refusals("test.max_queue"), 1);
        // What another node relayed goes to this node's streams and never back out.
        updates.announce_here(Arc::from("a://3"));
        assert_eq!(&*here.recv().await.unwrap(), "a://3");
        assert!(queue.try_recv().is_err());
    }
}
