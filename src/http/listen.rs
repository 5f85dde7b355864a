//! `subscriptions/listen` (2026-07-28): a long-lived stream of the notifications a client
//! asked for, and the caps on what such streams make a node hold.
//!
//! Everything here is per node and in memory: a stream lives on one connection to one
//! node, so counting it needs no fleet write. A principal holds at most
//! `http.max_listen_streams_per_principal` streams on a node, each asking for at most
//! `http.max_listen_uris` URIs of at most `mcp.max_uri_bytes`, kept as a set.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::keys::{MAX_LISTEN_STREAMS, MAX_LISTEN_URIS};
use super::mcp::{rpc_error, sse_response, status_for};
use super::sse::{self, Outgoing};
use super::{live, State};
use crate::auth::Principal;
use crate::limits::{Held, Limits};
use crate::mcp::jsonrpc::{notification, response};
use crate::mcp::{declares_tasks, tasks_needed, Call, RpcError};

/// `_meta` key naming the subscription a notification belongs to.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The field of the request that lists the URIs, as refusals name it.
const URIS_FIELD: &str = "notifications.resourceSubscriptions";

/// The field of the request that lists the tasks to follow (the tasks extension).
const TASKS_FIELD: &str = "notifications.taskIds";

/// The longest task id a listen request may name: ours are far shorter.
const MAX_TASK_ID_BYTES: usize = 256;

/// The open listen streams of this node, counted per principal.
pub(crate) struct Listeners {
    open: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    cap: usize,
    limits: Limits,
}

/// One open listen stream's place under its principal's cap, given back when dropped.
pub(crate) struct Slot {
    owner: Arc<Listeners>,
    binding: String,
    held: Option<Held>,
}

impl Listeners {
    /// At most `cap` streams per principal, counted in `limits`.
    pub fn new(cap: usize, limits: Limits) -> Arc<Self> {
        limits.declare(MAX_LISTEN_STREAMS);
        limits.declare(MAX_LISTEN_URIS);
        Arc::new(Self {
            open: Mutex::default(),
            cap,
            limits,
        })
    }

    /// A place for one more stream of `principal`, or the refusal (429) naming the cap.
    fn take(self: &Arc<Self>, principal: &Principal) -> Result<Slot, RpcError> {
        let binding = principal.binding();
        // Taken under the map's lock, so a slot given back at the same moment cannot drop
        // the counter this one is counted in.
        let mut open = self.lock();
        let count = open.entry(binding.clone()).or_default().clone();
        let held = self.limits.hold(
            MAX_LISTEN_STREAMS,
            &count,
            self.cap,
            "open subscriptions/listen streams for this principal on this node",
        )?;
        Ok(Slot {
            owner: self.clone(),
            binding,
            held: Some(held),
        })
    }

    /// Streams `principal` has open on this node.
    #[cfg(test)]
    fn open_for(&self, principal: &Principal) -> usize {
        self.lock()
            .get(&principal.binding())
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicUsize>>> {
        self.open.lock().expect("listeners lock")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        drop(self.held.take());
        // Principals with nothing open leave no entry behind.
        if open
            .get(&self.binding)
            .is_some_and(|c| c.load(Ordering::Acquire) == 0)
        {
            open.remove(&self.binding);
        }
    }
}

/// Reads `notifications.resourceSubscriptions`: the URIs once each, in the order given,
/// refused (`-32602`) when not a list of strings, too many, or one too long.
fn requested_uris(
    params: &Map<String, Value>,
    max_uris: usize,
    max_uri_bytes: usize,
    limits: &Limits,
) -> Result<Vec<String>, RpcError> {
    let invalid = || RpcError::invalid_params(format!("{URIS_FIELD} must be a list of URIs"));
    let items = match params
        .get("notifications")
        .and_then(|f| f.get("resourceSubscriptions"))
    {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid()),
    };
    if items.len() > max_uris {
        limits.refused(MAX_LISTEN_URIS);
        return Err(RpcError::invalid_params(format!(
            "{URIS_FIELD} lists {} URIs; the limit is {max_uris} ({MAX_LISTEN_URIS})",
            items.len()
        ))
        .with_data(json!({
            "limit": MAX_LISTEN_URIS, "field": URIS_FIELD, "size": items.len(), "max": max_uris,
        })));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut uris = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let uri = item.as_str().ok_or_else(invalid)?;
        if uri.len() > max_uri_bytes {
            let field = format!("{URIS_FIELD}[{i}]");
            let key = crate::mcp::MAX_URI_BYTES;
            return Err(limits.too_large(key, &field, uri.len(), max_uri_bytes));
        }
        if seen.insert(uri) {
            uris.push(uri.to_owned());
        }
    }
    Ok(uris)
}

/// Reads `notifications.taskIds`: the ids once each, in the order given, refused
/// (`-32602`) when not a list of strings, more than a principal can hold tasks
/// (`tasks.max_tasks_per_principal`), or one too long; and refused with `-32021` when the
/// request did not declare the tasks extension.
fn requested_task_ids(
    params: &Map<String, Value>,
    call: &Call,
    max_ids: usize,
) -> Result<Vec<String>, RpcError> {
    let invalid = || RpcError::invalid_params(format!("{TASKS_FIELD} must be a list of task ids"));
    let items = match params.get("notifications").and_then(|f| f.get("taskIds")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid()),
    };
    if !declares_tasks(call) {
        return Err(tasks_needed(TASKS_FIELD));
    }
    if items.len() > max_ids {
        return Err(RpcError::invalid_params(format!(
            "{TASKS_FIELD} lists {} tasks; a caller holds at most {max_ids} (tasks.max_tasks_per_principal)",
            items.len()
        )));
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let id = item.as_str().ok_or_else(invalid)?;
        if id.is_empty() || id.len() > MAX_TASK_ID_BYTES {
            return Err(RpcError::invalid_params(format!(
                "{TASKS_FIELD} names a task id that is empty or longer than {MAX_TASK_ID_BYTES} bytes"
            )));
        }
        if !ids.iter().any(|seen| seen == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// Answers `subscriptions/listen`: the acknowledgement, then
/// `notifications/resources/updated` for the URIs asked for, until the client closes the
/// stream or the node shuts down. This server's lists do not change at run time, so of
/// the filter it honours `resourceSubscriptions`, and `taskIds` (the tasks extension):
/// `notifications/tasks` for each of the caller's own tasks named, whenever its status
/// changes, whichever node runs it (every node applies the task's record).
pub(super) async fn listen(
    id: Value,
    params: &Map<String, Value>,
    call: Call,
    state: &State,
) -> HttpResponse {
    let principal = &*call.principal;
    let fail = |e: RpcError| rpc_error(status_for(e.code, true), Some(&id), &e);
    let limits = state.engine.limits();
    let uris = match requested_uris(
        params,
        state.config.max_listen_uris,
        state.engine.config().max_uri_bytes,
        limits,
    ) {
        Ok(uris) => uris,
        Err(e) => return fail(e),
    };
    let max_tasks = state.engine.tasks_config().max_tasks_per_principal;
    let task_ids = match requested_task_ids(params, &call, max_tasks) {
        Ok(ids) => ids,
        Err(e) => return fail(e),
    };
    // Only the caller's own tasks are followed; others are left out of the acknowledgement,
    // as a task of another principal is unknown to this one.
    let binding = principal.binding();
    let mut followed = Vec::with_capacity(task_ids.len());
    for task in task_ids {
        if state.engine.owns_task(&binding, &task).await {
            followed.push(task);
        }
    }
    let slot = match state.listeners.take(principal) {
        Ok(slot) => slot,
        Err(e) => return fail(e),
    };
    let subscription = json!({ SUBSCRIPTION_ID: id });
    let mut granted = Map::new();
    if !uris.is_empty() {
        granted.insert("resourceSubscriptions".into(), json!(uris));
    }
    if !followed.is_empty() {
        granted.insert("taskIds".into(), json!(followed));
    }
    let ack = Outgoing::plain(
        notification(
            "notifications/subscriptions/acknowledged",
            json!({ "_meta": subscription, "notifications": granted }),
        ),
        false,
    );
    // What the stream keeps while it is open: a set, looked up once per update.
    let uris: HashSet<Box<str>> = uris.into_iter().map(String::into_boxed_str).collect();
    let (tx, rx) = live::channel();
    let call = Arc::new(call);
    for task in followed {
        let tx = tx.clone();
        let engine = state.engine.clone();
        let call = call.clone();
        let shutdown = state.shutdown.clone();
        let subscription = subscription.clone();
        actix_web::rt::spawn(async move {
            let send = |mut view: Value| {
                view["_meta"] = subscription.clone();
                let note = notification("notifications/tasks", view);
                tx.send(Outgoing::plain(note, false)).is_ok()
            };
            tokio::select! {
                () = tx.closed() => {}
                () = shutdown.cancelled() => {}
                () = engine.follow_task(&call, &task, send) => {}
            }
        });
    }
    let mut updates = state.engine.updates().listen();
    let shutdown = state.shutdown.clone();
    actix_web::rt::spawn(async move {
        // Held for as long as the stream is served.
        let _slot = slot;
        loop {
            let uri = tokio::select! {
                // The client closed the stream: the subscription ends.
                () = tx.closed() => return,
                () = shutdown.cancelled() => {
                    // Ending on the server's initiative: answer the request, then close.
                    let done = json!({ "resultType": "complete", "_meta": subscription });
                    let _ = tx.send(Outgoing::plain(response(&id, done), true));
                    return;
                }
                update = updates.recv() => match update {
                    Ok(uri) => uri,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a subscription fell behind resource updates");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if uris.contains(&*uri) {
                let params = json!({ "_meta": subscription, "uri": &*uri });
                let note = notification("notifications/resources/updated", params);
                let _ = tx.send(Outgoing::plain(note, false));
            }
        }
    });
    let queue = VecDeque::from([sse::event(&ack)]);
    sse_response(queue, rx, None, Some(state.config.sse_keepalive), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(uris: Value) -> Map<String, Value> {
        json!({ "notifications": { "resourceSubscriptions": uris } })
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_principal_holds_at_most_the_cap_and_closing_frees_a_place() {
        let limits = Limits::default();
        let listeners = Listeners::new(2, limits.clone());
        let alice = Principal {
            subject: "alice".into(),
            ..Principal::anonymous()
        };
        let bob = Principal::anonymous();
        let first = listeners.take(&alice).unwrap();
        let _second = listeners.take(&alice).unwrap();
        let refused = listeners.take(&alice).err().expect("over the cap");
        assert_eq!(refused.code, crate::limits::LIMIT_EXCEEDED);
        assert!(
            refused.message.contains(MAX_LISTEN_STREAMS),
            "{}",
            refused.message
        );
        // Another principal is not affected.
        let _bobs = listeners.take(&bob).unwrap();
        assert_eq!(limits.gauge(MAX_LISTEN_STREAMS).get(), 3);
        drop(first);
        assert_eq!(listeners.open_for(&alice), 1);
        let _third = listeners.take(&alice).unwrap();
        drop(_bobs);
        assert!(!listeners.lock().contains_key(&bob.binding()));
    }

    #[test]
    fn uris_are_capped_in_number_and_length_and_kept_once() {
        let limits = Limits::default();
        let uris = requested_uris(&params(json!(["a://1", "a://2", "a://1"])), 3, 16, &limits);
        assert_eq!(uris.unwrap(), ["a://1", "a://2"]);
        let refused =
            requested_uris(&params(json!(["a", "b", "c", "d"])), 3, 16, &limits).unwrap_err();
        assert_eq!(refused.code, crate::mcp::jsonrpc::INVALID_PARAMS);
        assert!(refused.message.contains(URIS_FIELD), "{}", refused.message);
        assert!(
            refused.message.contains(MAX_LISTEN_URIS),
            "{}",
            refused.message
        );
        let long = "u".repeat(17);
        let refused = requested_uris(&params(json!(["a", long])), 3, 16, &limits).unwrap_err();
        assert!(
            refused.message.contains("resourceSubscriptions[1]"),
            "{}",
            refused.message
        );
        assert!(requested_uris(&params(json!("a")), 3, 16, &limits).is_err());
        assert!(requested_uris(&Map::new(), 3, 16, &limits)
            .unwrap()
            .is_empty());
        assert_eq!(limits.refusals(MAX_LISTEN_URIS), 1);
    }
}
