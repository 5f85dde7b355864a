//! Server-Sent Events framing and the message channel a running request writes to.

use actix_web::web::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// One message on its way to the client.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// Event id, for resumable (legacy) streams.
    pub id: Option<String>,
    /// The JSON-RPC message.
    pub message: Value,
    /// Whether this is the response that ends the request's stream.
    pub is_final: bool,
}

impl Outgoing {
    /// A message without an event id.
    pub fn plain(message: Value, is_final: bool) -> Self {
        Self {
            id: None,
            message,
            is_final,
        }
    }

    /// Not a message: tells the reader to end the connection; the stream lives on for resumption.
    pub fn detach() -> Self {
        Self::plain(Value::Null, false)
    }

    /// Whether this is the end-the-connection marker.
    pub fn is_detach(&self) -> bool {
        self.message.is_null()
    }
}

pub(crate) type Tx = mpsc::UnboundedSender<Outgoing>;
pub(crate) type Rx = mpsc::UnboundedReceiver<Outgoing>;

/// Frames one message as an SSE event.
pub(crate) fn event(out: &Outgoing) -> Bytes {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(b"event: message\n");
    if let Some(id) = &out.id {
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id.as_bytes());
        frame.push(b'\n');
    }
    frame.extend_from_slice(b"data: ");
    // Compact JSON has no raw newline to break the `data:` line; serialising a `Value`
    // into memory cannot fail.
    let _ = serde_json::to_writer(&mut frame, &out.message);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// The priming event of a 2025-11-25 stream: an id the client can resume from, the
/// reconnection delay, and empty data.
pub(crate) fn priming(id: &str, retry_ms: u128) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {retry_ms}\ndata: \n\n"))
}

/// A comment line that keeps idle connections open through intermediaries.
pub(crate) fn keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_carries_the_message_as_its_compact_json_text() {
        let message = json!({ "jsonrpc": "2.0", "id": 7, "result": {
            "text": "line\nbreak \"quoted\" é \u{1}", "n": 1.5, "list": [null, true, -3] } });
        let mut out = Outgoing::plain(message.clone(), true);
        assert_eq!(
            event(&out),
            format!("event: message\ndata: {message}\n\n").as_bytes()
        );
        out.id = Some("s1.4".into());
        assert_eq!(
            event(&out),
            format!("event: message\nid: s1.4\ndata: {message}\n\n").as_bytes()
        );
        assert_eq!(
            super::super::mcp::json_bytes(&message),
            message.to_string().as_bytes()
        );
    }
}
