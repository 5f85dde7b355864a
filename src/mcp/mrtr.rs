//! Multi Round-Trip Requests: the sealed `requestState` that carries a call's earlier
//! answers from one round to the next, so any instance can serve the retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::engine::MAX_REQUEST_STATE_BYTES;
use super::RpcError;
use crate::crypto::Sealer;
use crate::limits::Limits;
use crate::tools::{Error, InputRequest, Peer};

/// What a `requestState` holds, sealed and bound to the principal.
#[derive(Serialize, Deserialize)]
struct State {
    /// The method and name of the request it belongs to (`tools/call` + tool name).
    target: String,
    /// SHA-256 of the request's canonical arguments.
    args_digest: [u8; 32],
    /// When it stops being accepted, in milliseconds since the epoch.
    expires_at_ms: u64,
    /// Answers gathered in earlier rounds, as `(key, JSON text)`.
    answers: Vec<(String, String)>,
}

/// The associated data of a `requestState`: the format and the principal's binding.
///
/// v1 bound the ambiguous `iss|tenant|sub` string, under which two principals could share
/// state (tenant `x|y` + subject `z` and tenant `x` + subject `y|z`). v2 binds the
/// length-prefixed [`crate::auth::Principal::binding`]; a v1 state no longer opens, and its
/// holder gets the same refusal as for any other invalid state (and can start over).
const AAD_PREFIX: &[u8] = b"mcp-fleet/requestState/v2\0";

fn aad(principal_binding: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(principal_binding.as_bytes());
    aad
}

fn digest(args: &Map<String, Value>) -> [u8; 32] {
    // serde_json's map is ordered by key, so equal arguments serialise to equal bytes.
    let bytes = serde_json::to_vec(args).unwrap_or_default();
    Sha256::digest(bytes).into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seals the answers so far into a `requestState`.
pub(super) fn seal(
    sealer: &Sealer,
    principal_binding: &str,
    target: &str,
    args: &Map<String, Value>,
    answers: &HashMap<String, Value>,
    ttl: Duration,
) -> String {
    let mut answers: Vec<(String, String)> = answers
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    answers.sort();
    let state = State {
        target: target.to_owned(),
        args_digest: digest(args),
        expires_at_ms: now_ms().saturating_add(ttl.as_millis() as u64),
        answers,
    };
    let plain = postcard::to_stdvec(&state).expect("request state always encodes");
    URL_SAFE_NO_PAD.encode(sealer.seal(&aad(principal_binding), &plain))
}

/// Opens a `requestState`, checking it was made for this principal, request and arguments,
/// and has not expired; returns the answers it carries.
pub(crate) fn open(
    sealer: &Sealer,
    principal_binding: &str,
    target: &str,
    args: &Map<String, Value>,
    token: &str,
) -> Result<HashMap<String, Value>, RpcError> {
    let invalid = || {
        RpcError::invalid_params(
            "requestState is invalid, expired, or was issued for another request",
        )
    };
    let sealed = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let plain = sealer
        .open(&aad(principal_binding), &sealed)
        .map_err(|_| invalid())?;
    let state: State = postcard::from_bytes(&plain).map_err(|_| invalid())?;
    if state.target != target
        || state.args_digest != digest(args)
        || state.expires_at_ms <= now_ms()
    {
        return Err(invalid());
    }
    state
        .answers
        .into_iter()
        .map(|(k, v)| Ok((k, serde_json::from_str(&v).map_err(|_| invalid())?)))
        .collect()
}

/// Refuses a request whose `requestState` is longer than `cap` bytes, before any work
/// goes into opening it: `-32602` naming `params.requestState` and the cap.
pub(super) fn check_incoming(
    params: &Map<String, Value>,
    cap: usize,
    limits: &Limits,
) -> Result<(), RpcError> {
    match params.get("requestState") {
        Some(Value::String(state)) if state.len() > cap => Err(limits.too_large(
            MAX_REQUEST_STATE_BYTES,
            "params.requestState",
            state.len(),
            cap,
        )),
        _ => Ok(()),
    }
}

/// Refuses to hand out an input-required `result` whose `requestState` is longer than
/// `cap` bytes: the client could not send it back. The answers it would carry came from
/// the client's `inputResponses`, so the refusal is theirs to act on (`-32602`).
pub(super) fn check_outgoing(result: &Value, cap: usize, limits: &Limits) -> Result<(), RpcError> {
    match result.get("requestState").and_then(Value::as_str) {
        Some(state) if state.len() > cap => Err(limits.too_large(
            MAX_REQUEST_STATE_BYTES,
            "the requestState this round would return (sealed from params.inputResponses)",
            state.len(),
            cap,
        )),
        _ => Ok(()),
    }
}

/// One round of a 2026-07-28 request that may ask the client: questions already answered
/// (from the sealed `requestState` and the retry's `inputResponses`) are answered at once;
/// the others are collected, and the round ends with an input-required result asking them
/// all.
pub(super) struct Round {
    inner: Arc<dyn Peer>,
    answers: HashMap<String, Value>,
    /// Keys the handler read an answer for: only those travel on in the next state.
    used: Mutex<Vec<String>>,
    /// Questions without answers yet, in the order asked.
    asked: Mutex<Vec<InputRequest>>,
    next: AtomicUsize,
    /// Whether `Context::run_as_task` ends this round (the request may create a task).
    detaches: bool,
}

impl Round {
    /// Starts a round from a request's `requestState` and `inputResponses`.
    pub fn open(
        sealer: &Sealer,
        principal_binding: &str,
        target: &str,
        args: &Map<String, Value>,
        params: &Map<String, Value>,
        inner: Arc<dyn Peer>,
    ) -> Result<Self, RpcError> {
        let mut answers = match params.get("requestState") {
            None | Some(Value::Null) => HashMap::new(),
            Some(Value::String(token)) => open(sealer, principal_binding, target, args, token)?,
            Some(_) => return Err(RpcError::invalid_params("requestState must be a string")),
        };
        match params.get("inputResponses") {
            None | Some(Value::Null) => {}
            Some(Value::Object(responses)) => {
                answers.extend(responses.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Some(_) => return Err(RpcError::invalid_params("inputResponses must be an object")),
        }
        Ok(Self {
            inner,
            answers,
            used: Mutex::default(),
            asked: Mutex::default(),
            next: AtomicUsize::new(0),
            detaches: false,
        })
    }

    /// Lets `Context::run_as_task` end this round so the call goes on as a task.
    pub fn detaching(mut self) -> Self {
        self.detaches = true;
        self
    }

    /// Every answer this round holds (from the `requestState` and `inputResponses`).
    pub fn answers(&self) -> HashMap<String, Value> {
        self.answers.clone()
    }

    /// The input-required result asking every open question, with the answers used so far
    /// sealed into a new `requestState`.
    pub fn input_required(
        &self,
        sealer: &Sealer,
        principal_binding: &str,
        target: &str,
        args: &Map<String, Value>,
        ttl: Duration,
    ) -> Value {
        let used = self.used.lock().expect("used answers lock");
        let kept: HashMap<String, Value> = self
            .answers
            .iter()
            .filter(|(k, _)| used.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let requests: Map<String, Value> = self
            .asked
            .lock()
            .expect("asked questions lock")
            .iter()
            .map(|q| {
                (
                    q.key.clone(),
                    json!({ "method": q.method, "params": q.params }),
                )
            })
            .collect();
        json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": seal(sealer, principal_binding, target, args, &kept, ttl),
        })
    }
}

impl Peer for Round {
    fn notify(&self, method: &str, params: Value) {
        self.inner.notify(method, params);
    }

    fn detaches(&self) -> bool {
        self.detaches
    }

    fn request(&self, method: &str, params: Value) -> BoxFuture<'static, Result<Value, Error>> {
        // Unnamed questions are numbered in the order the handler asks, so a replayed
        // handler meets its earlier answers under the same keys.
        let key = format!("input-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.request_as(&key, method, params)
    }

    fn request_as(
        &self,
        key: &str,
        method: &str,
        params: Value,
    ) -> BoxFuture<'static, Result<Value, Error>> {
        let outcome = match self.answers.get(key) {
            Some(answer) => {
                self.used
                    .lock()
                    .expect("used answers lock")
                    .push(key.to_owned());
                Ok(answer.clone())
            }
            None => {
                let question = InputRequest {
                    key: key.to_owned(),
                    method: method.to_owned(),
                    params,
                };
                self.asked
                    .lock()
                    .expect("asked questions lock")
                    .push(question.clone());
                Err(Error::InputRequired(question))
            }
        };
        Box::pin(async move { outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::crypto::Key;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn round_trip_and_binding() {
        let sealer = Sealer::single(Key::generate());
        let a = args(json!({"x": 1}));
        let answers = HashMap::from([("input-0".to_owned(), json!({"action": "accept"}))]);
        let token = seal(
            &sealer,
            "alice",
            "tools/call:t",
            &a,
            &answers,
            Duration::from_secs(60),
        );
        assert_eq!(
            open(&sealer, "alice", "tools/call:t", &a, &token).unwrap(),
            answers
        );
        // Another principal, tool, or argument set is refused.
        assert!(open(&sealer, "bob", "tools/call:t", &a, &token).is_err());
        assert!(open(&sealer, "alice", "tools/call:u", &a, &token).is_err());
        assert!(open(
            &sealer,
            "alice",
            "tools/call:t",
            &args(json!({"x": 2})),
            &token
        )
        .is_err());
        // Tampering is refused.
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(open(
            &sealer,
            "alice",
            "tools/call:t",
            &a,
            std::str::from_utf8(&bad).unwrap()
        )
        .is_err());
        assert!(open(&sealer, "alice", "tools/call:t", &a, "not base64!").is_err());
    }

    fn principal(tenant: &str, subject: &str) -> Principal {
        Principal {
            subject: subject.to_owned(),
            tenant: Some(tenant.to_owned()),
            issuer: Some("https://id.example.com".to_owned()),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn state_of_one_principal_is_refused_for_another_whose_old_binding_collided() {
        let sealer = Sealer::single(Key::generate());
        let a = args(json!({}));
        let first = principal("x|y", "z");
        let second = principal("x", "y|z");
        let answers = HashMap::from([("input-0".to_owned(), json!(1))]);
        let ttl = Duration::from_secs(60);
        let token = seal(&sealer, &first.binding(), "t", &a, &answers, ttl);
        assert_eq!(
            open(&sealer, &first.binding(), "t", &a, &token).unwrap(),
            answers
        );
        assert!(open(&sealer, &second.binding(), "t", &a, &token).is_err());
    }

    #[test]
    fn state_sealed_the_old_way_is_refused_as_invalid() {
        let sealer = Sealer::single(Key::generate());
        let a = args(json!({}));
        let alice = principal("acme", "alice");
        // What v1 sealed: its prefix and the `iss|tenant|sub` string.
        let old_binding = "https://id.example.com|acme|alice";
        let mut old_aad = b"mcp-fleet/requestState/v1\0".to_vec();
        old_aad.extend_from_slice(old_binding.as_bytes());
        let state = State {
            target: "t".to_owned(),
            args_digest: digest(&a),
            expires_at_ms: now_ms() + 60_000,
            answers: Vec::new(),
        };
        let plain = postcard::to_stdvec(&state).unwrap();
        let old = URL_SAFE_NO_PAD.encode(sealer.seal(&old_aad, &plain));
        for binding in [alice.binding().as_str(), old_binding] {
            let refused = open(&sealer, binding, "t", &a, &old).unwrap_err();
            assert_eq!(refused.code, crate::mcp::jsonrpc::INVALID_PARAMS);
            assert!(refused.message.contains("requestState"), "{refused:?}");
        }
        // The same state sealed now opens for its principal.
        let new = seal(
            &sealer,
            &alice.binding(),
            "t",
            &a,
            &HashMap::new(),
            Duration::from_secs(60),
        );
        assert!(open(&sealer, &alice.binding(), "t", &a, &new).is_ok());
    }

    #[test]
    fn a_request_state_over_the_cap_is_refused_both_ways() {
        let limits = Limits::default();
        let params = args(json!({ "requestState": "s".repeat(101) }));
        let refused = check_incoming(&params, 100, &limits).unwrap_err();
        assert_eq!(refused.code, crate::mcp::jsonrpc::INVALID_PARAMS);
        assert!(
            refused.message.contains("params.requestState")
                && refused.message.contains(MAX_REQUEST_STATE_BYTES),
            "{}",
            refused.message
        );
        assert!(check_incoming(&params, 101, &limits).is_ok());
        assert!(check_incoming(&args(json!({})), 0, &limits).is_ok());

        // The state of a round that used a large answer seals larger than the cap.
        let sealer = Sealer::single(Key::generate());
        let answer = HashMap::from([("input-0".to_owned(), json!("a".repeat(200)))]);
        let token = seal(
            &sealer,
            "alice",
            "t",
            &args(json!({})),
            &answer,
            Duration::from_secs(60),
        );
        let result = json!({ "resultType": "input_required", "requestState": token });
        let refused = check_outgoing(&result, 100, &limits).unwrap_err();
        assert!(
            refused.message.contains("requestState"),
            "{}",
            refused.message
        );
        assert!(check_outgoing(&result, token.len(), &limits).is_ok());
        assert_eq!(limits.refusals(MAX_REQUEST_STATE_BYTES), 2);
    }

    #[test]
    fn expired_state_is_refused() {
        let sealer = Sealer::single(Key::generate());
        let a = args(json!({}));
        let token = seal(&sealer, "alice", "t", &a, &HashMap::new(), Duration::ZERO);
        assert!(open(&sealer, "alice", "t", &a, &token).is_err());
    }
}
