//! Per-instance state of legacy sessions: their SSE streams (with the event buffers that
//! make `Last-Event-ID` resumption work), pending server-to-client requests, and the
//! requests in flight that `notifications/cancelled` may stop.
//!
//! Only what cannot outlive a connection lives here; the session itself is in the store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::sse::{Outgoing, Rx, Tx};
use crate::mcp::{Inflight, Outbound};

/// Stream id of a session's standalone GET stream.
pub(crate) const STANDALONE: u64 = 0;

/// How long a finished stream's events stay available for resumption.
const FINISHED_RETENTION: Duration = Duration::from_secs(300);

/// How long a session's live state stays after its last use with nothing open.
const IDLE_RETENTION: Duration = Duration::from_secs(600);

/// Live state of every legacy session this instance has served.
#[derive(Default)]
pub(crate) struct Live {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
    /// This node's id, named in the ids of requests it sends to clients.
    node: Option<u64>,
}

impl Live {
    /// Live state for node `node`.
    pub fn for_node(node: u64) -> Self {
        Self {
            node: Some(node),
            ..Self::default()
        }
    }

    /// The live state of session `id`, if this instance holds any.
    pub fn existing(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.sessions
            .lock()
            .expect("live sessions lock")
            .get(id)
            .cloned()
    }

    /// The live state of session `id`, created on first use.
    pub fn session(&self, id: &str, buffer: usize) -> Arc<LiveSession> {
        let mut map = self.sessions.lock().expect("live sessions lock");
        let node = self.node;
        let session = map
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(LiveSession::new(buffer, node)))
            .clone();
        *session.last_used.lock().expect("last used lock") = Instant::now();
        session
    }

    /// Forgets the live state of sessions idle for a while with nothing open or pending,
    /// so sessions that expired or were abandoned do not hold memory here.
    pub fn prune(&self) {
        let mut map = self.sessions.lock().expect("live sessions lock");
        map.retain(|_, s| !s.is_idle());
    }

    /// Drops a session's live state: its streams end and its pending requests fail.
    pub fn remove(&self, id: &str) {
        let removed = self.sessions.lock().expect("live sessions lock").remove(id);
        if let Some(session) = removed {
            session.close();
        }
    }
}

struct Stream {
    events: VecDeque<(u64, Outgoing)>,
    next_seq: u64,
    subscriber: Option<Tx>,
    finished_at: Option<Instant>,
}

/// One legacy session's live state on this instance.
pub(crate) struct LiveSession {
    streams: Mutex<HashMap<u64, Stream>>,
    /// Requests to the client awaiting answers.
    pub outbound: Outbound,
    /// Client requests that `notifications/cancelled` may stop.
    pub inflight: Inflight,
    next_stream: AtomicU64,
    buffer: usize,
    last_used: Mutex<Instant>,
}

/// Why a stream could not be attached.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// No such stream (or it was already fully delivered and forgotten).
    Unknown,
    /// Another connection is reading it.
    Busy,
}

impl LiveSession {
    fn new(buffer: usize, node: Option<u64>) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            outbound: node.map_or_else(Outbound::default, Outbound::with_origin),
            inflight: Inflight::default(),
            next_stream: AtomicU64::new(STANDALONE + 1),
            buffer: buffer.max(1),
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn is_idle(&self) -> bool {
        if self.last_used.lock().expect("last used lock").elapsed() < IDLE_RETENTION {
            return false;
        }
        let streams = self.streams.lock().expect("streams lock");
        let reading = streams
            .values()
            .any(|s| s.subscriber.as_ref().is_some_and(|t| !t.is_closed()));
        !reading && self.outbound.is_empty() && self.inflight.is_empty()
    }

    /// Opens a new request stream and attaches `tx` to it; returns its id.
    pub fn open_stream(&self, tx: Tx) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut streams = self.streams.lock().expect("streams lock");
        streams.retain(|_, s| {
            s.finished_at
                .is_none_or(|t| t.elapsed() < FINISHED_RETENTION)
        });
        streams.insert(
            id,
            Stream {
                events: VecDeque::new(),
                next_seq: 0,
                subscriber: Some(tx),
                finished_at: None,
            },
        );
        id
    }

    /// The id of an event: the stream it belongs to and its place in that stream.
    pub fn event_id(stream: u64, seq: u64) -> String {
        format!("{stream}-{seq}")
    }

    /// Parses an event id made by [`LiveSession::event_id`].
    pub fn parse_event_id(id: &str) -> Option<(u64, u64)> {
        let (stream, seq) = id.split_once('-')?;
        Some((stream.parse().ok()?, seq.parse().ok()?))
    }

    /// Reserves the next event id of `stream` without sending anything (for priming).
    pub fn reserve_id(&self, stream: u64) -> Option<String> {
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams.get_mut(&stream)?;
        let seq = s.next_seq;
        s.next_seq += 1;
        Some(Self::event_id(stream, seq))
    }

    /// Sends a message on `stream`: to its reader if one is attached, and into its buffer
    /// for resumption. Returns false when the stream no longer exists.
    pub fn push(&self, stream: u64, message: Value, is_final: bool) -> bool {
        let mut streams = self.streams.lock().expect("streams lock");
        let Some(s) = streams.get_mut(&stream) else {
            return false;
        };
        let seq = s.next_seq;
        s.next_seq += 1;
        let out = Outgoing {
            id: Some(Self::event_id(stream, seq)),
            message,
            is_final,
        };
        if let Some(tx) = &s.subscriber {
            if tx.send(out.clone()).is_err() {
                s.subscriber = None;
            }
        }
        if s.events.len() == self.buffer {
            s.events.pop_front();
        }
        s.events.push_back((seq, out));
        if is_final {
            s.finished_at = Some(Instant::now());
        }
        true
    }

    /// Ends the connection reading `stream` without ending the stream: later messages are
    /// buffered until the client resumes.
    pub fn detach(&self, stream: u64) {
        let mut streams = self.streams.lock().expect("streams lock");
        if let Some(s) = streams.get_mut(&stream) {
            if let Some(tx) = s.subscriber.take() {
                let _ = tx.send(Outgoing::detach());
            }
        }
    }

    /// Opens the standalone GET stream, unless another connection holds it.
    pub fn open_standalone(&self, tx: Tx) -> Result<(), AttachError> {
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams.entry(STANDALONE).or_insert_with(|| Stream {
            events: VecDeque::new(),
            next_seq: 0,
            subscriber: None,
            finished_at: None,
        });
        if s.subscriber.as_ref().is_some_and(|t| !t.is_closed()) {
            return Err(AttachError::Busy);
        }
        s.subscriber = Some(tx);
        Ok(())
    }

    /// Reattaches a reader to the stream an event id belongs to, replaying what came after it.
    pub fn resume(&self, last_event_id: &str, tx: Tx) -> Result<u64, AttachError> {
        let (stream, seq) = Self::parse_event_id(last_event_id).ok_or(AttachError::Unknown)?;
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams.get_mut(&stream).ok_or(AttachError::Unknown)?;
        if s.subscriber.as_ref().is_some_and(|t| !t.is_closed()) {
            return Err(AttachError::Busy);
        }
        for (_, out) in s.events.iter().filter(|(n, _)| *n > seq) {
            let _ = tx.send(out.clone());
        }
        if s.finished_at.is_none() {
            s.subscriber = Some(tx);
        }
        Ok(stream)
    }

    /// Forgets a stream whose final message reached its reader.
    pub fn close_stream(&self, stream: u64) {
        self.streams.lock().expect("streams lock").remove(&stream);
    }

    fn close(&self) {
        self.inflight.cancel_all();
        self.outbound.clear();
        self.streams.lock().expect("streams lock").clear();
    }
}

/// A channel for one reader of a stream.
pub(crate) fn channel() -> (Tx, Rx) {
    mpsc::unbounded_channel()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resumes_after_the_last_event_seen() {
        let live = LiveSession::new(16, None);
        let (tx, mut rx) = channel();
        let stream = live.open_stream(tx);
        live.push(stream, json!(1), false);
        let first = rx.try_recv().unwrap();
        drop(rx);
        live.push(stream, json!(2), false);
        live.push(stream, json!(3), true);
        let (tx2, mut rx2) = channel();
        live.resume(first.id.as_deref().unwrap(), tx2).unwrap();
        assert_eq!(rx2.try_recv().unwrap().message, json!(2));
        let last = rx2.try_recv().unwrap();
        assert_eq!(last.message, json!(3));
        assert!(last.is_final);
        assert!(rx2.try_recv().is_err());
        assert_eq!(live.resume("99-0", channel().0), Err(AttachError::Unknown));
        assert_eq!(
            live.resume("garbage", channel().0),
            Err(AttachError::Unknown)
        );
    }
}
