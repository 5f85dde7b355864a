//! Fleet-wide resource updates: what a tool announces on one node reaches the
//! subscribers (legacy GET streams, `subscriptions/listen` streams) of every node.
//!
//! A node relays its own announcements straight to its peers over the internal listener,
//! not through the replicated log: a notification is a hint that something changed, not
//! state to keep, so it needs neither a majority's fsync nor a place in snapshots, and a
//! node that is down when it is sent has no stream to deliver it to anyway. A `tools/call`
//! that announces nothing costs nothing here; one that does costs one message per peer,
//! sent after the call by a task of its own (what is queued meanwhile goes in one message).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::internal::{decode, postcard_body, Internal};
use crate::raft::Store;

/// Where a node delivers the updates another node relays.
pub(super) const UPDATED: &str = "/fleet/updated";

/// Updates relayed in one message at most.
const BATCH: usize = 256;

/// How long a peer may take to take a batch; a slower one misses it.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Resource updates announced on another node, for this node's subscribers.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Relayed {
    /// The updated resources' URIs, in the order announced.
    pub uris: Vec<String>,
}

/// Relays what `queue` receives (this node's own announcements) to every other member of
/// the fleet, in batches, until the queue closes.
pub(crate) fn relay(store: Store, mut queue: mpsc::Receiver<Arc<str>>) {
    actix_web::rt::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while queue.recv_many(&mut batch, BATCH).await > 0 {
            let relayed = Relayed {
                uris: batch.drain(..).map(|uri| uri.to_string()).collect(),
            };
            send(&store, &relayed).await;
        }
    });
}

/// Sends `relayed` to every peer at once, and waits for each to take it or fail.
async fn send(store: &Store, relayed: &Relayed) {
    let client = store.client();
    let calls = store.peers().into_iter().map(|(node, addr)| async move {
        let sent: Result<(), _> = client.call(&addr, UPDATED, relayed, TIMEOUT).await;
        if let Err(e) = sent {
            // A peer that is down has no stream to deliver to; one that is slow misses
            // these updates, as a lagging stream on this node would.
            tracing::debug!(node, error = %e, "could not relay resource updates");
        }
    });
    futures_util::future::join_all(calls).await;
}

/// Delivers updates another node relayed to this node's subscribers (never further).
pub(super) async fn updated(state: web::Data<Internal>, body: web::Bytes) -> HttpResponse {
    let relayed: Relayed = match decode(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let updates = state.public.engine.updates();
    for uri in relayed.uris {
        updates.announce_here(Arc::from(uri));
    }
    postcard_body(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_the_same_after_the_wire() {
        let relayed = Relayed {
            uris: vec!["test://a".into(), "test://b".into()],
        };
        let bytes = postcard::to_stdvec(&relayed).unwrap();
        let back: Relayed = crate::raft::wire::decode(&bytes).unwrap();
        assert_eq!(back, relayed);
    }
}
