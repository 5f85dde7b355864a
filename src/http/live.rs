//! Per-instance state of legacy sessions: their SSE streams (with the event buffers that
//! make `Last-Event-ID` resumption work), pending server-to-client requests, and the
//! requests in flight that `notifications/cancelled` may stop.
//!
//! Only what cannot outlive a connection lives here; the session itself is in the store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::keys::{MAX_PENDING_REQUESTS, MAX_RESUMABLE_STREAMS, MAX_STREAMS};
use super::sse::{Outgoing, Rx, Tx};
use crate::limits::{Held, Limits};
use crate::mcp::{Inflight, Outbound, RpcError};

/// Stream id of a session's standalone GET stream.
pub(crate) const STANDALONE: u64 = 0;

/// How long a finished stream's events stay available for resumption.
const FINISHED_RETENTION: Duration = Duration::from_secs(300);

/// How long a session's live state stays after its last use with nothing open.
const IDLE_RETENTION: Duration = Duration::from_secs(600);

/// What a node keeps for each legacy session, and the caps on it (see [`super::Config`]).
#[derive(Clone)]
pub(crate) struct Caps {
    /// Messages kept per stream for resumption.
    pub event_buffer: usize,
    /// Unfinished streams per session.
    pub max_streams: usize,
    /// Finished streams kept per session for resumption.
    pub max_resumable: usize,
    /// Requests to the client awaiting answers, per session.
    pub max_pending: usize,
    /// Where refusals and what is held are counted.
    pub limits: Limits,
}

impl Caps {
    /// The caps of `config`, counted in `limits`.
    pub fn new(config: &super::Config, limits: Limits) -> Self {
        for key in [MAX_STREAMS, MAX_RESUMABLE_STREAMS, MAX_PENDING_REQUESTS] {
            limits.declare(key);
        }
        Self {
            event_buffer: config.event_buffer.max(1),
            max_streams: config.max_streams_per_session,
            max_resumable: config.max_resumable_streams_per_session,
            max_pending: config.max_pending_requests_per_session,
            limits,
        }
    }
}

/// Live state of every legacy session this instance has served.
pub(crate) struct Live {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
    /// This node's id, named in the ids of requests it sends to clients.
    node: u64,
    caps: Caps,
}

impl Live {
    /// Live state for node `node`, held to `caps`.
    pub fn new(node: u64, caps: Caps) -> Self {
        Self {
            sessions: Mutex::default(),
            node,
            caps,
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
    pub fn session(&self, id: &str) -> Arc<LiveSession> {
        let mut map = self.sessions.lock().expect("live sessions lock");
        let session = map
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(LiveSession::new(self.caps.clone(), Some(self.node))))
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
    /// A request stream's place under `http.max_streams_per_session`, given back when
    /// its final message is sent.
    held: Option<Held>,
}

impl Stream {
    fn new(subscriber: Option<Tx>, held: Option<Held>) -> Self {
        Self {
            events: VecDeque::new(),
            next_seq: 0,
            subscriber,
            finished_at: None,
            held,
        }
    }

    /// Finished, and nobody reads it: kept only for a resuming GET.
    fn is_resumable(&self) -> bool {
        self.finished_at.is_some() && self.subscriber.is_none()
    }
}

/// One legacy session's live state on this instance.
pub(crate) struct LiveSession {
    streams: Mutex<HashMap<u64, Stream>>,
    /// Requests to the client awaiting answers.
    pub outbound: Outbound,
    /// Client requests that `notifications/cancelled` may stop.
    pub inflight: Inflight,
    next_stream: AtomicU64,
    caps: Caps,
    /// Unfinished request streams, against `caps.max_streams`.
    open: Arc<AtomicUsize>,
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
    fn new(caps: Caps, node: Option<u64>) -> Self {
        let outbound = node.map_or_else(Outbound::default, Outbound::with_origin);
        Self {
            streams: Mutex::new(HashMap::new()),
            outbound: outbound.capped(caps.max_pending, caps.limits.clone()),
            inflight: Inflight::default(),
            next_stream: AtomicU64::new(STANDALONE + 1),
            caps,
            open: Arc::default(),
            last_used: Mutex::new(Instant::now()),
        }
    }

    /// Forgets finished streams past their retention, and the oldest finished ones beyond
    /// `max_resumable`.
    fn trim(&self, streams: &mut HashMap<u64, Stream>) {
        streams.retain(|_, s| {
            s.finished_at
                .is_none_or(|t| t.elapsed() < FINISHED_RETENTION)
        });
        let mut resumable: Vec<(Instant, u64)> = streams
            .iter()
            .filter(|(_, s)| s.is_resumable())
            .filter_map(|(id, s)| Some((s.finished_at?, *id)))
            .collect();
        let excess = resumable.len().saturating_sub(self.caps.max_resumable);
        if excess > 0 {
            resumable.sort_unstable();
            for (_, id) in &resumable[..excess] {
                streams.remove(id);
            }
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

    /// Opens a new request stream and attaches `tx` to it; returns its id. Refused (429)
    /// when the session already has `max_streams` unfinished ones.
    pub fn open_stream(&self, tx: Tx) -> Result<u64, RpcError> {
        let mut streams = self.streams.lock().expect("streams lock");
        self.trim(&mut streams);
        let held = self.caps.limits.hold(
            MAX_STREAMS,
            &self.open,
            self.caps.max_streams,
            "unfinished streams on this session",
        )?;
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        streams.insert(id, Stream::new(Some(tx), Some(held)));
        Ok(id)
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
        if s.events.len() == self.caps.event_buffer {
            s.events.pop_front();
        }
        s.events.push_back((seq, out));
        if is_final {
            s.finished_at = Some(Instant::now());
            s.held = None;
            self.trim(&mut streams);
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
        let s = streams
            .entry(STANDALONE)
            .or_insert_with(|| Stream::new(None, None));
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

    fn caps(max_streams: usize, max_resumable: usize) -> Caps {
        Caps {
            event_buffer: 16,
            max_streams,
            max_resumable,
            max_pending: 4,
            limits: Limits::default(),
        }
    }

    #[test]
    fn resumes_after_the_last_event_seen() {
        let live = LiveSession::new(caps(4, 4), None);
        let (tx, mut rx) = channel();
        let stream = live.open_stream(tx).unwrap();
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

    #[test]
    fn unfinished_streams_are_capped_per_session() {
        let caps = caps(2, 4);
        let limits = caps.limits.clone();
        let live = LiveSession::new(caps, None);
        let first = live.open_stream(channel().0).unwrap();
        live.open_stream(channel().0).unwrap();
        let refused = live.open_stream(channel().0).unwrap_err();
        assert_eq!(refused.code, crate::limits::LIMIT_EXCEEDED);
        assert!(refused.message.contains(MAX_STREAMS), "{}", refused.message);
        assert_eq!(limits.gauge(MAX_STREAMS).get(), 2);
        // A finished stream gives its place back, though it is kept for resumption.
        live.push(first, json!("done"), true);
        assert_eq!(limits.gauge(MAX_STREAMS).get(), 1);
        live.open_stream(channel().0).unwrap();
        live.close();
        assert_eq!(limits.gauge(MAX_STREAMS).get(), 0);
    }

    #[test]
    fn finished_streams_kept_for_resumption_are_capped_oldest_first() {
        let live = LiveSession::new(caps(8, 2), None);
        let mut ids = Vec::new();
        for n in 0..3 {
            // Nobody reads these streams: their ends wait for a resuming GET.
            let stream = live.open_stream(channel().0).unwrap();
            live.push(stream, json!(n), true);
            ids.push(stream);
        }
        // The oldest is forgotten; the two newest can still be resumed.
        let from = |stream: u64| LiveSession::event_id(stream, 0);
        assert_eq!(
            live.resume(&from(ids[0]), channel().0),
            Err(AttachError::Unknown)
        );
        for stream in &ids[1..] {
            assert_eq!(live.resume(&from(*stream), channel().0), Ok(*stream));
        }
    }
}
