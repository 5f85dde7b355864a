//! Bookkeeping every transport shares: requests this server sent to a client and awaits
//! answers to, and client requests in flight that a client may cancel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::RpcError;
use crate::limits::{Held, Limits};
use crate::tools;

/// The cap on requests to a client awaiting answers, as refusals name it.
pub const MAX_PENDING_REQUESTS: &str = "http.max_pending_requests_per_session";

/// The key of a JSON-RPC id: strings as they are, numbers as their text.
fn key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        // A number's own text, without `Value`'s serialiser around it: this runs twice for
        // every legacy request (tracked, then untracked).
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

type Waiting = HashMap<String, (oneshot::Sender<Result<Value, RpcError>>, Option<Held>)>;

/// Requests sent to a client whose answers have not arrived.
#[derive(Default)]
pub struct Outbound {
    waiting: Mutex<Waiting>,
    next: AtomicU64,
    /// The node these requests come from, named in their ids so an answer that reaches
    /// another node can be sent on to this one.
    origin: Option<u64>,
    /// At most this many wait at once, counted against [`MAX_PENDING_REQUESTS`].
    cap: Option<(usize, Limits)>,
    count: Arc<AtomicUsize>,
}

/// The answer to one outbound request, once it arrives.
pub struct Answer(oneshot::Receiver<Result<Value, RpcError>>);

impl Answer {
    /// Waits for the client's answer; its error, or its going away, fails the tool call.
    pub async fn wait(self) -> Result<Value, tools::Error> {
        match self.0.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(tools::Error::Client(e.message)),
            Err(_) => Err(tools::Error::Client("the client went away".into())),
        }
    }
}

impl Outbound {
    /// Requests whose ids name node `origin` (`n{origin}.s{n}`).
    pub fn with_origin(origin: u64) -> Self {
        Self {
            origin: Some(origin),
            ..Self::default()
        }
    }

    /// The node that sent the request `id`, when the id names one.
    pub fn origin_of(id: &Value) -> Option<u64> {
        let rest = id.as_str()?.strip_prefix('n')?;
        let (node, seq) = rest.split_once('.')?;
        seq.starts_with('s').then(|| node.parse().ok()).flatten()
    }

    /// At most `cap` requests wait for answers at once; the in-use gauge and refusals are
    /// counted in `limits` under [`MAX_PENDING_REQUESTS`].
    pub fn capped(mut self, cap: usize, limits: Limits) -> Self {
        self.cap = Some((cap, limits));
        self
    }

    /// A fresh id for a request to the client, and where its answer will arrive. Refused
    /// when the cap of waiting requests is reached: the tool that asked gets the error.
    pub fn register(&self) -> Result<(String, Answer), tools::Error> {
        self.forget_abandoned();
        let held = match &self.cap {
            Some((cap, limits)) => Some(
                limits
                    .hold(
                        MAX_PENDING_REQUESTS,
                        &self.count,
                        *cap,
                        "requests to the client awaiting answers on this session",
                    )
                    .map_err(|e| {
                        tools::Error::Failed(format!("could not ask the client: {}", e.message))
                    })?,
            ),
            None => None,
        };
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let id = match self.origin {
            Some(node) => format!("n{node}.s{seq}"),
            None => format!("s{seq}"),
        };
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.clone(), (tx, held));
        Ok((id, Answer(rx)))
    }

    /// Delivers the client's answer; false when nobody here waits for `id`.
    pub fn answer(&self, id: &Value, outcome: Result<Value, RpcError>) -> bool {
        match self.lock().remove(&key(id)) {
            Some((tx, _held)) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Waits for the answer to `id`, or stops waiting when the call is cancelled.
    pub async fn wait(
        &self,
        id: &str,
        answer: Answer,
        cancel: &CancellationToken,
    ) -> Result<Value, tools::Error> {
        tokio::select! {
            result = answer.wait() => result,
            () = cancel.cancelled() => {
                self.lock().remove(id);
                Err(tools::Error::Cancelled)
            }
        }
    }

    /// Whether no answer is awaited.
    pub fn is_empty(&self) -> bool {
        self.forget_abandoned();
        self.lock().is_empty()
    }

    /// Forgets requests nobody waits for any more (their call timed out or was dropped
    /// without cancelling): they would otherwise hold their place under the cap, and keep
    /// the session's live state from being pruned, for ever.
    fn forget_abandoned(&self) {
        self.lock().retain(|_, (tx, _)| !tx.is_closed());
    }

    /// Fails every waiting request (their waiters see the client gone).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().expect("outbound requests lock")
    }
}

/// Client requests in flight, by id, so `notifications/cancelled` can stop them.
#[derive(Default)]
pub struct Inflight(Mutex<HashMap<String, CancellationToken>>);

impl Inflight {
    /// Records a request in flight.
    pub fn track(&self, id: &Value, token: CancellationToken) {
        self.lock().insert(key(id), token);
    }

    /// Forgets a finished request.
    pub fn untrack(&self, id: &Value) {
        self.lock().remove(&key(id));
    }

    /// Cancels a request in flight; false when it is not running here.
    pub fn cancel(&self, id: &Value) -> bool {
        match self.lock().get(&key(id)) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Acts on a client notification: `notifications/cancelled` stops the request it names.
    /// Other notifications need nothing from this server.
    pub fn notified(&self, method: &str, params: &serde_json::Map<String, Value>) {
        if method == "notifications/cancelled" {
            if let Some(id) = params.get("requestId") {
                self.cancel(id);
            }
        }
    }

    /// Cancels everything in flight.
    pub fn cancel_all(&self) {
        for (_, token) in self.lock().drain() {
            token.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.0.lock().expect("inflight requests lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_id_keys_as_its_json_text() {
        for id in [
            json!(7),
            json!(-3),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
        ] {
            assert_eq!(key(&id), id.to_string());
        }
        assert_eq!(key(&json!("a\"b")), "a\"b");
    }

    #[tokio::test]
    async fn answers_reach_the_waiting_request_once() {
        let outbound = Outbound::default();
        let (id, answer) = outbound.register().unwrap();
        assert!(outbound.answer(&json!(id), Ok(json!({"ok": true}))));
        assert_eq!(answer.wait().await.unwrap(), json!({"ok": true}));
        assert!(!outbound.answer(&json!(id), Ok(json!({}))));
        assert_eq!(Outbound::origin_of(&json!(id)), None);
        let (remote, _) = Outbound::with_origin(7).register().unwrap();
        assert_eq!(Outbound::origin_of(&json!(remote)), Some(7));
        assert_eq!(Outbound::origin_of(&json!("n7.x1")), None);
        assert_eq!(Outbound::origin_of(&json!(3)), None);
        let (_, answer) = outbound.register().unwrap();
        outbound.clear();
        assert!(matches!(answer.wait().await, Err(tools::Error::Client(_))));
    }

    #[tokio::test]
    async fn requests_beyond_the_cap_are_refused_until_one_is_answered() {
        let limits = Limits::default();
        let outbound = Outbound::with_origin(1).capped(2, limits.clone());
        let (first, _a) = outbound.register().unwrap();
        let (_second, _b) = outbound.register().unwrap();
        let Err(tools::Error::Failed(message)) = outbound.register() else {
            panic!("a third request was not refused")
        };
        assert!(message.contains(MAX_PENDING_REQUESTS), "{message}");
        assert_eq!(limits.refusals(MAX_PENDING_REQUESTS), 1);
        assert_eq!(limits.gauge(MAX_PENDING_REQUESTS).get(), 2);
        assert!(outbound.answer(&json!(first), Ok(json!({}))));
        assert_eq!(limits.gauge(MAX_PENDING_REQUESTS).get(), 1);
        let (_, abandoned) = outbound.register().unwrap();
        // A waiter that goes away without an answer (its call timed out) frees its place.
        drop(abandoned);
        outbound.register().unwrap();
        outbound.clear();
        assert_eq!(limits.gauge(MAX_PENDING_REQUESTS).get(), 0);
    }

    #[test]
    fn numeric_and_string_ids_are_told_apart_only_by_value() {
        let inflight = Inflight::default();
        let token = CancellationToken::new();
        inflight.track(&json!(7), token.clone());
        assert!(!inflight.cancel(&json!(8)));
        assert!(inflight.cancel(&json!(7)));
        assert!(token.is_cancelled());
        inflight.untrack(&json!(7));
        assert!(inflight.is_empty());
    }
}
