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

use prometheus_client::metrics::gauge::Gauge;

use super::keys::{
    MAX_PENDING_REQUESTS, MAX_RESUMABLE_STREAMS, MAX_STREAMS, MAX_STREAM_BYTES, MAX_STREAM_EVENTS,
};
use super::sse::{Outgoing, Rx, Tx};
use crate::limits::{Held, Limits};
use crate::mcp::{Inflight, Outbound, RpcError};

/// Stream id of a session's standalone GET stream.
pub(crate) const STANDALONE: u64 = 0;

/// How long a session's live state stays after its last use with nothing open.
const IDLE_RETENTION: Duration = Duration::from_secs(600);

/// What a node keeps for each legacy session, and the caps on it (see [`super::Config`]).
#[derive(Clone)]
pub(crate) struct Caps {
    /// Notifications and requests kept per stream for resumption.
    pub max_events: usize,
    /// Bytes of notifications and requests kept per stream for resumption.
    pub max_bytes: usize,
    /// How long a finished stream stays resumable.
    pub retention: Duration,
    /// Unfinished streams per session.
    pub max_streams: usize,
    /// Finished streams kept per session for resumption.
    pub max_resumable: usize,
    /// Requests to the client awaiting answers, per session.
    pub max_pending: usize,
    /// Where refusals and what is held are counted.
    pub limits: Limits,
    /// This node's kept events, as `limit_in_use` shows them (looked up once, not per
    /// stream).
    pub kept_events: Gauge,
    /// This node's kept bytes of notifications and requests, likewise.
    pub kept_bytes: Gauge,
}

impl Caps {
    /// The caps of `config`, counted in `limits`.
    pub fn new(config: &super::Config, limits: Limits) -> Self {
        for key in [
            MAX_STREAMS,
            MAX_RESUMABLE_STREAMS,
            MAX_PENDING_REQUESTS,
            MAX_STREAM_EVENTS,
            MAX_STREAM_BYTES,
        ] {
            limits.declare(key);
        }
        Self {
            max_events: config.max_stream_events.max(1),
            max_bytes: config.max_stream_bytes,
            retention: config.stream_retention,
            max_streams: config.max_streams_per_session,
            max_resumable: config.max_resumable_streams_per_session,
            max_pending: config.max_pending_requests_per_session,
            kept_events: limits.gauge(MAX_STREAM_EVENTS),
            kept_bytes: limits.gauge(MAX_STREAM_BYTES),
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
            .or_insert_with(|| Arc::new(LiveSession::new(self.caps.clone(), self.node)))
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
    /// Bytes of the kept notifications and requests (not the final response).
    bytes: usize,
    /// Whether a message was not kept for being over a cap (reported once per stream).
    overflowed: bool,
    next_seq: u64,
    subscriber: Option<Tx>,
    /// Whether a reader was handed anything of this stream (a message, or the marker that
    /// ends its connection), so the client may hold one of its event ids.
    delivered: bool,
    finished_at: Option<Instant>,
    /// A request stream's place under `http.max_streams_per_session`, given back when
    /// its final message is sent.
    held: Option<Held>,
    /// This node's kept events and bytes, as `limit_in_use` shows them.
    events_gauge: Gauge,
    bytes_gauge: Gauge,
}

impl Stream {
    fn new(subscriber: Option<Tx>, held: Option<Held>, caps: &Caps) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            overflowed: false,
            next_seq: 0,
            subscriber,
            delivered: false,
            finished_at: None,
            held,
            events_gauge: caps.kept_events.clone(),
            bytes_gauge: caps.kept_bytes.clone(),
        }
    }

    /// Whether a connection reads it now.
    fn is_read(&self) -> bool {
        self.subscriber.as_ref().is_some_and(|t| !t.is_closed())
    }

    /// Finished, and nobody reads it: kept only for a resuming GET.
    fn is_resumable(&self) -> bool {
        self.finished_at.is_some() && !self.is_read()
    }

    /// Keeps `out` for resumption, unless a notification or request is over the caps: the
    /// final response is always kept.
    fn keep(&mut self, seq: u64, out: Outgoing, caps: &Caps) {
        if !out.is_final {
            let size = json_size(&out.message);
            let over = if self.events.len() >= caps.max_events {
                Some(MAX_STREAM_EVENTS)
            } else if self.bytes.saturating_add(size) > caps.max_bytes {
                Some(MAX_STREAM_BYTES)
            } else {
                None
            };
            if let Some(key) = over {
                caps.limits.refused(key);
                if !std::mem::replace(&mut self.overflowed, true) {
                    tracing::info!(
                        limit = key,
                        "a legacy stream is over its cap: its further messages are sent \
                         to a connected reader but not kept for resumption"
                    );
                }
                return;
            }
            self.bytes += size;
            self.bytes_gauge.inc_by(size as i64);
        }
        self.events_gauge.inc();
        self.events.push_back((seq, out));
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.events_gauge.dec_by(self.events.len() as i64);
        self.bytes_gauge.dec_by(self.bytes as i64);
    }
}

/// The length of `value` as JSON text, without building the text.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// One legacy session's live state on this instance.
pub(crate) struct LiveSession {
    streams: Mutex<HashMap<u64, Stream>>,
    /// Requests to the client awaiting answers.
    pub outbound: Outbound,
    /// Client requests that `notifications/cancelled` may stop.
    pub inflight: Inflight,
    next_stream: AtomicU64,
    /// This node's id, the first part of every event id, so any node can tell which node
    /// holds a stream.
    node: u64,
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
    /// The stream is held by node `0`.
    Elsewhere(u64),
}

impl LiveSession {
    fn new(caps: Caps, node: u64) -> Self {
        let outbound = Outbound::with_origin(node);
        Self {
            streams: Mutex::new(HashMap::new()),
            outbound: outbound.capped(caps.max_pending, caps.limits.clone()),
            inflight: Inflight::default(),
            next_stream: AtomicU64::new(STANDALONE + 1),
            node,
            caps,
            open: Arc::default(),
            last_used: Mutex::new(Instant::now()),
        }
    }

    /// Forgets finished streams past their retention, and the oldest finished ones beyond
    /// `max_resumable`.
    fn trim(&self, streams: &mut HashMap<u64, Stream>) {
        let retention = self.caps.retention;
        streams.retain(|_, s| s.finished_at.is_none_or(|t| t.elapsed() < retention));
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
        let reading = streams.values().any(Stream::is_read);
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
        streams.insert(id, Stream::new(Some(tx), Some(held), &self.caps));
        Ok(id)
    }

    /// The id of an event: the node holding its stream, the stream, and its place in that
    /// stream. Unique across the session, whichever nodes its requests reach.
    fn event_id(&self, stream: u64, seq: u64) -> String {
        format!("{}-{stream}-{seq}", self.node)
    }

    /// Parses an event id made by [`LiveSession::event_id`]: node, stream, place.
    pub fn parse_event_id(id: &str) -> Option<(u64, u64, u64)> {
        let mut parts = id.splitn(3, '-').map(str::parse);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(node)), Some(Ok(stream)), Some(Ok(seq))) => Some((node, stream, seq)),
            _ => None,
        }
    }

    /// Reserves the next event id of `stream` without sending anything (for priming).
    pub fn reserve_id(&self, stream: u64) -> Option<String> {
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams.get_mut(&stream)?;
        let seq = s.next_seq;
        s.next_seq += 1;
        Some(self.event_id(stream, seq))
    }

    /// Sends a message on `stream`: to its reader if one is attached, and into its buffer
    /// for resumption. Returns false when the stream no longer exists.
    pub fn push(&self, stream: u64, mut message: Value, is_final: bool) -> bool {
        let mut streams = self.streams.lock().expect("streams lock");
        let Some(s) = streams.get_mut(&stream) else {
            return false;
        };
        if is_final && !s.delivered {
            // The reader gets the final message first, so it answers with it as a plain
            // JSON body (see `mcp::respond`), which has no event id: nothing of this
            // stream can be resumed, so it needs neither an id nor a copy kept, and ends
            // here. A reader already gone falls through: its messages wait as before.
            if let Some(tx) = s.subscriber.take() {
                match tx.send(Outgoing::plain(message, true)) {
                    Ok(()) => {
                        streams.remove(&stream);
                        return true;
                    }
                    Err(mpsc::error::SendError(out)) => message = out.message,
                }
            }
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let out = Outgoing {
            id: Some(self.event_id(stream, seq)),
            message,
            is_final,
        };
        if let Some(tx) = &s.subscriber {
            if tx.send(out.clone()).is_err() {
                s.subscriber = None;
            } else {
                s.delivered = true;
            }
        }
        // Kept even when a reader took it: the reader's connection may be dead without
        // anyone knowing yet, and its client will resume from the last event it saw.
        s.keep(seq, out, &self.caps);
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
                s.delivered = true;
                let _ = tx.send(Outgoing::detach());
            }
        }
    }

    /// Opens the standalone GET stream, unless another connection holds it.
    pub fn open_standalone(&self, tx: Tx) -> Result<(), AttachError> {
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams
            .entry(STANDALONE)
            .or_insert_with(|| Stream::new(None, None, &self.caps));
        if s.is_read() {
            return Err(AttachError::Busy);
        }
        s.subscriber = Some(tx);
        Ok(())
    }

    /// Reattaches a reader to the stream an event id belongs to, replaying what came after
    /// it. A connection still attached is told to end: a client resumes because its
    /// connection broke, which the server may not have noticed yet (no FIN arrives when a
    /// network blip or a balancer drops it), and the caller proved the session is theirs.
    pub fn resume(&self, last_event_id: &str, tx: Tx) -> Result<u64, AttachError> {
        let (node, stream, seq) =
            Self::parse_event_id(last_event_id).ok_or(AttachError::Unknown)?;
        if node != self.node {
            return Err(AttachError::Elsewhere(node));
        }
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams.get_mut(&stream).ok_or(AttachError::Unknown)?;
        if let Some(old) = s.subscriber.take() {
            let _ = old.send(Outgoing::detach());
        }
        for (_, out) in s.events.iter().filter(|(n, _)| *n > seq) {
            let _ = tx.send(out.clone());
        }
        s.delivered = true;
        if s.finished_at.is_none() {
            s.subscriber = Some(tx);
        }
        Ok(stream)
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
        let limits = Limits::default();
        Caps {
            kept_events: limits.gauge(MAX_STREAM_EVENTS),
            kept_bytes: limits.gauge(MAX_STREAM_BYTES),
            max_events: 16,
            max_bytes: 1024,
            retention: Duration::from_secs(60),
            max_streams,
            max_resumable,
            max_pending: 4,
            limits,
        }
    }

    #[test]
    fn resumes_after_the_last_event_seen() {
        let live = LiveSession::new(caps(4, 4), 1);
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
        assert_eq!(
            live.resume("1-99-0", channel().0),
            Err(AttachError::Unknown)
        );
        assert_eq!(
            live.resume("2-1-0", channel().0),
            Err(AttachError::Elsewhere(2))
        );
        assert_eq!(
            live.resume("garbage", channel().0),
            Err(AttachError::Unknown)
        );
    }

    #[test]
    fn a_final_answer_sent_first_to_its_reader_ends_the_stream_without_an_event_id() {
        let caps = caps(4, 4);
        let limits = caps.limits.clone();
        let live = LiveSession::new(caps, 1);
        let (tx, mut rx) = channel();
        let stream = live.open_stream(tx).unwrap();
        assert_eq!(limits.gauge(MAX_STREAMS).get(), 1);
        assert!(live.push(stream, json!("done"), true));
        let answer = rx.try_recv().unwrap();
        assert_eq!(answer.message, json!("done"));
        assert!(answer.is_final);
        assert_eq!(answer.id, None, "a plain JSON answer has no event id");
        // Nothing kept, the stream's place given back, and nothing to resume.
        assert_eq!(limits.gauge(MAX_STREAMS).get(), 0);
        assert_eq!(limits.gauge(MAX_STREAM_EVENTS).get(), 0);
        assert!(!live.push(stream, json!("late"), false));
        assert_eq!(
            live.resume(&live.event_id(stream, 0), channel().0),
            Err(AttachError::Unknown)
        );
    }

    #[test]
    fn a_final_answer_after_a_message_keeps_its_event_id_for_resumption() {
        let live = LiveSession::new(caps(4, 4), 1);
        let (tx, mut rx) = channel();
        let stream = live.open_stream(tx).unwrap();
        live.push(stream, json!("progress"), false);
        live.push(stream, json!("done"), true);
        let first = rx.try_recv().unwrap();
        let last = rx.try_recv().unwrap();
        assert!(first.id.is_some() && last.id.is_some());
        assert!(last.is_final);
        drop(rx);
        let (tx, mut resumed) = channel();
        live.resume(first.id.as_deref().unwrap(), tx).unwrap();
        let replayed = resumed.try_recv().unwrap();
        assert_eq!((replayed.message, replayed.id), (json!("done"), last.id));
    }

    #[test]
    fn a_final_answer_after_a_detach_is_kept_for_the_resuming_client() {
        let live = LiveSession::new(caps(4, 4), 1);
        let (tx, mut rx) = channel();
        let stream = live.open_stream(tx).unwrap();
        let priming = live.reserve_id(stream).unwrap();
        live.detach(stream);
        assert!(rx.try_recv().unwrap().is_detach());
        live.push(stream, json!("done"), true);
        let (tx, mut resumed) = channel();
        live.resume(&priming, tx).unwrap();
        let replayed = resumed.try_recv().unwrap();
        assert_eq!(replayed.message, json!("done"));
        assert!(replayed.id.is_some());
    }

    #[test]
    fn unfinished_streams_are_capped_per_session() {
        let caps = caps(2, 4);
        let limits = caps.limits.clone();
        let live = LiveSession::new(caps, 1);
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
        let live = LiveSession::new(caps(8, 2), 1);
        let mut ids = Vec::new();
        for n in 0..3 {
            // Nobody reads these streams: their ends wait for a resuming GET.
            let stream = live.open_stream(channel().0).unwrap();
            live.push(stream, json!(n), true);
            ids.push(stream);
        }
        // The oldest is forgotten; the two newest can still be resumed.
        let from = |stream: u64| live.event_id(stream, 0);
        assert_eq!(
            live.resume(&from(ids[0]), channel().0),
            Err(AttachError::Unknown)
        );
        for stream in &ids[1..] {
            assert_eq!(live.resume(&from(*stream), channel().0), Ok(*stream));
        }
    }

    #[test]
    fn a_stream_over_its_caps_still_keeps_its_final_response() {
        let caps = caps(4, 4);
        let limits = caps.limits.clone();
        let live = LiveSession::new(caps, 1);
        let stream = live.open_stream(channel().0).unwrap();
        let start = live.reserve_id(stream).unwrap();
        for n in 0..20 {
            live.push(stream, json!(n), false);
        }
        // Over max_bytes: kept would be more than 1024 bytes.
        live.push(stream, json!("x".repeat(2000)), false);
        live.push(stream, json!("done"), true);
        let (tx, mut rx) = channel();
        live.resume(&start, tx).unwrap();
        let replayed: Vec<Value> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|out| out.message)
            .collect();
        let mut expected: Vec<Value> = (0..16).map(|n| json!(n)).collect();
        expected.push(json!("done"));
        assert_eq!(replayed, expected);
        assert_eq!(limits.refusals(MAX_STREAM_EVENTS), 5);
        assert_eq!(limits.gauge(MAX_STREAM_EVENTS).get(), 17);
        live.close();
        assert_eq!(limits.gauge(MAX_STREAM_EVENTS).get(), 0);
        assert_eq!(limits.gauge(MAX_STREAM_BYTES).get(), 0);
    }

    #[test]
    fn a_resume_takes_a_stream_from_a_connection_gone_silent() {
        let live = LiveSession::new(caps(4, 4), 1);
        let (tx, mut silent) = channel();
        let stream = live.open_stream(tx).unwrap();
        live.push(stream, json!(1), false);
        let seen = silent.try_recv().unwrap().id.unwrap();
        let (tx, mut resumed) = channel();
        assert_eq!(live.resume(&seen, tx), Ok(stream));
        // The old connection is told to end; what follows goes to the new one only.
        assert!(silent.try_recv().unwrap().is_detach());
        live.push(stream, json!(2), true);
        assert!(silent.try_recv().is_err());
        assert_eq!(resumed.try_recv().unwrap().message, json!(2));
    }
}
