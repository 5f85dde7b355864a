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
    let data = out.message.to_string();
    let mut frame = String::with_capacity(data.len() + 48);
    frame.push_str("event: message\n");
    if let Some(id) = &out.id {
        frame.push_str("id: ");
        frame.push_str(id);
        frame.push('\n');
    }
    frame.push_str("data: ");
    frame.push_str(&data);
    frame.push_str("\n\n");
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
