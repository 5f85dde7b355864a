//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) of 2026-07-28: a
//! `tools/call` of a tool that supports tasks answers at once with a task, which runs on
//! the node that accepted it while the client polls `tasks/get`, answers its questions
//! with `tasks/update` and may stop it with `tasks/cancel`, each at any node.
//!
//! The record lives in the replicated `tasks` table (see `task_store`), so any node
//! answers; a cancel or an answer written by another node reaches the running node when
//! its replica applies it. The running node renews a lease in the record; a task whose
//! lease has lapsed is reported failed by whichever node reads it (or run again there,
//! for a tool declared rerunnable), since its node has stopped or lost the fleet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::call::tool_error;
use super::engine::{object_param, str_param};
use super::jsonrpc::{INTERNAL_ERROR, MISSING_REQUIRED_CLIENT_CAPABILITY};
use super::task_store::{
    Control, Record, Status, Tasks, EXTENSION, MAX_INPUT_BYTES, MAX_RESULT_BYTES,
};
use super::{Call, Engine, Era, RpcError};
use crate::actors::ToolHandle;
use crate::raft::now_ms;
use crate::tools::{self, Peer, TaskSupport};

/// Whether the request declared the tasks extension in its client capabilities.
pub(crate) fn declared(call: &Call) -> bool {
    match &call.era {
        Era::Modern(meta) => meta
            .client_capabilities
            .get("extensions")
            .and_then(|e| e.get(EXTENSION))
            .is_some(),
        Era::Legacy(_) => false,
    }
}

/// The refusal of a request that needs the tasks extension the client did not declare.
pub(crate) fn missing_extension(what: &str) -> RpcError {
    RpcError::new(
        MISSING_REQUIRED_CLIENT_CAPABILITY,
        format!("{what} needs the {EXTENSION} extension, which the request did not declare"),
    )
    .with_data(json!({ "requiredCapabilities": { "extensions": { EXTENSION: {} } } }))
}

fn iso(ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

fn unknown_task() -> RpcError {
    RpcError::invalid_params("Unknown task: no task with this taskId exists for this caller")
}

impl Engine {
    fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// The `[tasks]` settings.
    pub(crate) fn tasks_config(&self) -> &super::TasksConfig {
        &self.tasks().config
    }

    /// Runs `tool` as a task when it supports tasks and the request declared the
    /// extension: returns the `CreateTaskResult`, or `None` to answer in the response.
    pub(super) async fn maybe_task(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        tool: &ToolHandle,
        args: &Map<String, Value>,
    ) -> Result<Option<Value>, RpcError> {
        let support = tool.info().task_support;
        if support == TaskSupport::Forbidden {
            return Ok(None);
        }
        if !declared(call) {
            return match support {
                TaskSupport::Required => Err(missing_extension(&format!(
                    "The tool {} runs only as a task: it",
                    tool.name()
                ))),
                _ => Ok(None),
            };
        }
        if tool.info().asks_before_task {
            // It asks first, and becomes a task when it says so (`Context::run_as_task`).
            return Ok(None);
        }
        self.create_task(call, params, tool, args, HashMap::new())
            .await
            .map(Some)
    }

    /// Creates a task of `tool` and starts running it here; `answers` are the answers
    /// gathered in `input_required` rounds before it became a task. Returns the
    /// `CreateTaskResult`.
    pub(super) async fn create_task(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        tool: &ToolHandle,
        args: &Map<String, Value>,
        answers: HashMap<String, Value>,
    ) -> Result<Value, RpcError> {
        let binding = call.principal.binding();
        let id = crate::crypto::random_hex(16);
        let config = &self.tasks().config;
        let now = now_ms();
        let record = Record {
            tool: tool.name().to_owned(),
            args: Value::Object(args.clone()).to_string(),
            status: Status::Working,
            message: None,
            created_ms: now,
            updated_ms: now,
            deadline_ms: now.saturating_add(config.ttl.as_millis() as u64),
            node: self.tasks().node(),
            lease_ms: now.saturating_add(config.owner_lost_after.as_millis() as u64),
            asked: Vec::new(),
            chunks: 0,
            error: None,
        };
        self.tasks().create(&binding, &id, &record).await?;
        let created = self.task_view(&id, &record, false);
        let run_args = Value::Object(args.clone());
        let names = (binding, id);
        let start = Start {
            tool: tool.clone(),
            args: run_args,
            names,
            record,
            answers,
        };
        self.spawn_task(call, params, start);
        Ok(created)
    }

    /// Starts running a task on this node, in the background.
    fn spawn_task(&self, call: &Call, params: &Map<String, Value>, start: Start) {
        let Start {
            tool,
            args,
            names: (binding, id),
            record,
            answers,
        } = start;
        let cancel = CancellationToken::new();
        let running = Running {
            engine: self.clone(),
            binding,
            id,
            record: Arc::new(tokio::sync::Mutex::new(record)),
            cancel: cancel.clone(),
        };
        let watch = running.engine.tasks().watch(&running.binding, &running.id);
        let peer = Arc::new(TaskPeer {
            running: running.clone(),
            changes: watch.changes(),
            next: AtomicUsize::new(0),
            answers: Arc::new(answers),
        });
        // The task outlives the request: its own cancellation, its own peer.
        let task_call = Call {
            principal: call.principal.clone(),
            era: call.era.clone(),
            peer: peer.clone(),
            cancel: cancel.clone(),
            caller: call.caller.clone(),
        };
        let ctx = self.context(&task_call, params, peer);
        actix_web::rt::spawn(async move {
            let outcome = {
                let run = tool.call(ctx, args);
                tokio::pin!(run);
                tokio::select! {
                    outcome = &mut run => outcome,
                    () = running.supervise(watch) => {
                        cancel.cancel();
                        run.await
                    }
                }
            };
            running.finish(tool.name(), outcome).await;
        });
    }

    /// `tasks/get`: the task as it stands, with its result or error once it has ended.
    pub(super) async fn tasks_get(
        &self,
        call: &Call,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        if !declared(call) {
            return Err(missing_extension("tasks/get"));
        }
        let id = str_param(params, "taskId")?;
        let (binding, record) = self.task_of(call, id).await?;
        let record = self.settled(call, params, &binding, id, record).await?;
        self.detailed_view(&binding, id, &record)
    }

    /// The caller's task `id`, with the caller's binding; another principal's task is
    /// unknown (`-32602`).
    async fn task_of(&self, call: &Call, id: &str) -> Result<(String, Record), RpcError> {
        let binding = call.principal.binding();
        let record = self
            .tasks()
            .get(&binding, id)
            .await?
            .ok_or_else(unknown_task)?;
        Ok((binding, record))
    }

    /// `record` as it stands once a lapsed lease has been acted on: a task whose node is
    /// lost is failed, or run again here (see [`Engine::owner_lost`]).
    async fn settled(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        binding: &str,
        id: &str,
        record: Record,
    ) -> Result<Record, RpcError> {
        // A lapsed lease of a task still running here is this node's own trouble writing
        // (its runner stops at its next write if another node takes over); it is not lost.
        let lapsed = !record.status.is_terminal() && record.lease_ms < now_ms();
        if lapsed && !self.tasks().runs_here(binding, id) {
            return self.owner_lost(call, params, binding, id, record).await;
        }
        Ok(record)
    }

    /// The task as `tasks/get` shows it: its fields, with its result or error once it has
    /// ended, or the questions still unanswered while it waits for input.
    fn detailed_view(&self, binding: &str, id: &str, record: &Record) -> Result<Value, RpcError> {
        let control = self.tasks().control(binding, id)?;
        let mut view = self.task_view(id, record, true);
        let obj = view.as_object_mut().expect("a task view is an object");
        match record.status {
            Status::Completed => {
                let result = self.tasks().result(binding, id, record.chunks)?;
                obj.insert("result".into(), result);
            }
            Status::Failed => {
                let (code, message) = record
                    .error
                    .clone()
                    .unwrap_or((INTERNAL_ERROR, "the task failed".to_owned()));
                obj.insert("error".into(), json!({ "code": code, "message": message }));
            }
            Status::InputRequired => {
                // Answers already given but not yet taken up by the running node are no
                // longer asked.
                let pending: Map<String, Value> = record
                    .asked
                    .iter()
                    .filter(|(key, _, _)| control.answer(key).is_none())
                    .map(|(key, method, params)| {
                        let params: Value = serde_json::from_str(params).unwrap_or_default();
                        (key.clone(), json!({ "method": method, "params": params }))
                    })
                    .collect();
                if pending.is_empty() {
                    obj.insert("status".into(), json!(Status::Working.as_str()));
                } else {
                    obj.insert("inputRequests".into(), Value::Object(pending));
                }
            }
            Status::Working | Status::Cancelled => {}
        }
        Ok(view)
    }

    /// Whether `binding`'s principal has a task `id` (a listen stream follows only its
    /// caller's own tasks).
    pub(crate) async fn owns_task(&self, binding: &str, id: &str) -> bool {
        matches!(self.tasks().get(binding, id).await, Ok(Some(_)))
    }

    /// Follows task `id` of `call`'s principal for a `subscriptions/listen` stream: hands
    /// `send` the task as `tasks/get` would show it each time its status, status message
    /// or questions change on this node's replica (whichever node runs it), the terminal
    /// state included, and returns then, when the task is gone, or when `send` says the
    /// stream is closed. A task whose lease lapses while followed is acted on as
    /// `tasks/get` would (failed, or run again here when its tool is rerunnable), so a
    /// stream hears of a lost node without anyone polling.
    pub(crate) async fn follow_task(&self, call: &Call, id: &str, send: impl Fn(Value) -> bool) {
        let binding = call.principal.binding();
        let watch = self.tasks().watch_record(&binding, id);
        let mut changes = watch.changes();
        let mut last: Option<(Status, Option<String>, usize)> = None;
        loop {
            changes.borrow_and_update();
            let record = match self.tasks().get(&binding, id).await {
                Ok(Some(record)) => record,
                _ => return,
            };
            let Ok(record) = self.settled(call, &Map::new(), &binding, id, record).await else {
                return;
            };
            let seen = (record.status, record.message.clone(), record.asked.len());
            if last.as_ref() != Some(&seen) {
                let Ok(view) = self.detailed_view(&binding, id, &record) else {
                    return;
                };
                if !send(view) {
                    return;
                }
                last = Some(seen);
            }
            if record.status.is_terminal() {
                return;
            }
            // Woken by the record's next change, or when its lease would lapse.
            let lease_left = record.lease_ms.saturating_sub(now_ms()) + 100;
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_millis(lease_left)) => {}
            }
        }
    }

    /// `tasks/update`: answers some of the task's questions. Answers to questions it did
    /// not ask are ignored; the ack is empty either way.
    pub(super) async fn tasks_update(
        &self,
        call: &Call,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        if !declared(call) {
            return Err(missing_extension("tasks/update"));
        }
        let id = str_param(params, "taskId")?;
        let responses = object_param(params, "inputResponses")?;
        let (binding, record) = self.task_of(call, id).await?;
        if record.status.is_terminal() {
            return Ok(json!({}));
        }
        let mut control = self.tasks().control(&binding, id)?;
        let mut changed = false;
        for (key, answer) in responses {
            // Only questions asked are kept: what a client can make the store hold stays
            // bounded by what the tool asked.
            let asked = record.asked.iter().any(|(k, _, _)| *k == key);
            if asked && control.answer(&key).is_none() {
                control.answers.push((key, answer.to_string()));
                changed = true;
            }
        }
        let held: usize = control.answers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let cap = self.tasks().config.max_input_bytes;
        if held > cap {
            return Err(self.tasks().limits.too_large(
                MAX_INPUT_BYTES,
                "params.inputResponses (with the answers this task already holds)",
                held,
                cap,
            ));
        }
        if changed {
            self.tasks()
                .set_control(&binding, id, &control, record.deadline_ms)
                .await?;
        }
        Ok(json!({}))
    }

    /// `tasks/cancel`: asks the running node to stop the task; the ack is empty, and a
    /// task that has already ended stays as it ended.
    pub(super) async fn tasks_cancel(
        &self,
        call: &Call,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        if !declared(call) {
            return Err(missing_extension("tasks/cancel"));
        }
        let id = str_param(params, "taskId")?;
        let (binding, record) = self.task_of(call, id).await?;
        if record.status.is_terminal() {
            return Ok(json!({}));
        }
        let mut control = self.tasks().control(&binding, id)?;
        if !control.cancel {
            control.cancel = true;
            self.tasks()
                .set_control(&binding, id, &control, record.deadline_ms)
                .await?;
        }
        Ok(json!({}))
    }

    /// A task whose running node stopped renewing its lease: run it again here when its
    /// tool says that is safe, otherwise record it as failed, saying why.
    async fn owner_lost(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        binding: &str,
        id: &str,
        mut record: Record,
    ) -> Result<Record, RpcError> {
        let lost = record.node;
        let claimed = self
            .tasks()
            .claim(binding, id, record.lease_ms, record.deadline_ms)
            .await?;
        if !claimed {
            // Another node is acting on it: answer with what the store says once it has.
            return self
                .tasks()
                .get(binding, id)
                .await?
                .ok_or_else(unknown_task);
        }
        let now = now_ms();
        let tool = self.inner.tools.get(&record.tool).cloned();
        match tool {
            Some(tool) if tool.info().rerunnable => {
                tracing::warn!(task = %id, node = lost, "task's node lost; running it again here");
                record.node = self.tasks().node();
                record.lease_ms =
                    now.saturating_add(self.tasks().config.owner_lost_after.as_millis() as u64);
                record.status = Status::Working;
                record.asked.clear();
                record.updated_ms = now;
                record.message = Some(format!(
                    "node {lost}, which ran this task, was lost; running it again on node {}",
                    record.node
                ));
                self.tasks().save(binding, id, &record).await?;
                let args = serde_json::from_str(&record.args).unwrap_or_else(|_| json!({}));
                let names = (binding.to_owned(), id.to_owned());
                // Answers given in rounds before it became a task are not kept: a tool run
                // again asks them again, as the task's inputRequests.
                let seed = HashMap::new();
                let start = Start {
                    tool,
                    args,
                    names,
                    record: record.clone(),
                    answers: seed,
                };
                self.spawn_task(call, params, start);
            }
            _ => {
                tracing::warn!(task = %id, node = lost, "task's node lost; task failed");
                let message = format!(
                    "the node running this task (node {lost}) stopped or lost the fleet before \
                     it finished, and the tool {} is not declared safe to run again",
                    record.tool
                );
                record.status = Status::Failed;
                record.error = Some((INTERNAL_ERROR, message.clone()));
                record.message = Some(message);
                record.asked.clear();
                record.updated_ms = now;
                self.tasks().save(binding, id, &record).await?;
            }
        }
        Ok(record)
    }

    /// The task fields every answer about a task carries; `resultType` is `task` on the
    /// result that creates it.
    fn task_view(&self, id: &str, record: &Record, detailed: bool) -> Value {
        let config = &self.tasks().config;
        let mut view = json!({
            "taskId": id,
            "status": record.status.as_str(),
            "createdAt": iso(record.created_ms),
            "lastUpdatedAt": iso(record.updated_ms),
            "ttlMs": config.ttl.as_millis() as u64,
            "pollIntervalMs": (config.poll_interval.as_millis() as u64).max(1),
        });
        if let Some(message) = &record.message {
            view["statusMessage"] = json!(message);
        }
        if !detailed {
            view["resultType"] = json!("task");
        }
        view
    }
}

/// What starting a task's run needs besides the request.
struct Start {
    tool: ToolHandle,
    /// The call's arguments.
    args: Value,
    /// The principal's binding and the task id.
    names: (String, String),
    /// The record as created (or as taken over).
    record: Record,
    /// Answers gathered before the call became a task.
    answers: HashMap<String, Value>,
}

/// A task running on this node.
#[derive(Clone)]
struct Running {
    engine: Engine,
    binding: String,
    id: String,
    /// The record as this node last wrote it; only this node writes it while it runs.
    record: Arc<tokio::sync::Mutex<Record>>,
    cancel: CancellationToken,
}

impl Running {
    fn tasks(&self) -> &Tasks {
        self.engine.tasks()
    }

    async fn update(&self, change: impl FnOnce(&mut Record)) -> Result<(), RpcError> {
        let mut record = self.record.lock().await;
        // A node that was cut off past its lease may find its task failed or taken over
        // by another node: it stops, and never writes over what the other node wrote.
        if let Some(stored) = self.tasks().get(&self.binding, &self.id).await? {
            if stored.node != record.node || stored.status.is_terminal() {
                self.cancel.cancel();
                return Err(RpcError::internal(format!(
                    "task {} is no longer this node's: another node took it over after its \
                     lease lapsed",
                    self.id
                )));
            }
        }
        change(&mut record);
        self.tasks().save(&self.binding, &self.id, &record).await
    }

    /// Renews the lease while the task runs; returns when a cancel was asked.
    async fn supervise(&self, watch: super::task_store::Watch) {
        let mut changes = watch.changes();
        let lost_after = self.tasks().config.owner_lost_after;
        let renew = lost_after / 3;
        let mut next_renewal = tokio::time::Instant::now() + renew;
        loop {
            match self.tasks().control(&self.binding, &self.id) {
                Ok(control) if control.cancel => return,
                _ => {}
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(next_renewal) => {
                    next_renewal = tokio::time::Instant::now() + renew;
                    let lease = now_ms().saturating_add(lost_after.as_millis() as u64);
                    if let Err(e) = self.update(|r| r.lease_ms = lease).await {
                        tracing::warn!(task = %self.id, error = %e.message, "could not renew a task's lease");
                    }
                }
            }
        }
    }

    /// Records how the task ended.
    async fn finish(&self, tool: &str, outcome: Result<tools::Output, tools::Error>) {
        let tasks = self.tasks().clone();
        let deadline = self.record.lock().await.deadline_ms;
        let (status, result, error) = match outcome {
            Err(tools::Error::Cancelled) => (Status::Cancelled, None, None),
            Ok(output) => (Status::Completed, Some(output.into_value()), None),
            Err(e) => match tool_error(tool, e) {
                Ok(result) => (Status::Completed, Some(result), None),
                Err(e) => (Status::Failed, None, Some((e.code, e.message))),
            },
        };
        let (status, chunks, error) = match result.map(|r| r.to_string()) {
            Some(text) if text.len() > tasks.config.max_result_bytes => {
                tasks.limits.refused(MAX_RESULT_BYTES);
                let message = format!(
                    "the tool's result is {} bytes; the limit is {} bytes ({MAX_RESULT_BYTES})",
                    text.len(),
                    tasks.config.max_result_bytes
                );
                (Status::Failed, 0, Some((INTERNAL_ERROR, message)))
            }
            Some(text) => match tasks
                .put_result(&self.binding, &self.id, &text, deadline)
                .await
            {
                Ok(chunks) => (status, chunks, error),
                Err(e) => (Status::Failed, 0, Some((e.code, e.message))),
            },
            None => (status, 0, error),
        };
        let now = now_ms();
        let saved = self
            .update(|r| {
                r.status = status;
                r.chunks = chunks;
                // A note such as "run again after node 2 was lost" stays; an error says more.
                if let Some((_, message)) = &error {
                    r.message = Some(message.clone());
                }
                r.error = error;
                r.asked.clear();
                r.updated_ms = now;
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(task = %self.id, error = %e.message, "could not record how a task ended");
        }
    }
}

/// How a task's tool reaches its client: questions become the task's `inputRequests`,
/// answered by `tasks/update` at any node; notifications have no stream to go to.
struct TaskPeer {
    running: Running,
    changes: tokio::sync::watch::Receiver<u64>,
    next: AtomicUsize,
    /// Answers gathered in `input_required` rounds before the call became a task.
    answers: Arc<HashMap<String, Value>>,
}

impl TaskPeer {
    async fn ask(
        running: Running,
        mut changes: tokio::sync::watch::Receiver<u64>,
        key: String,
        method: String,
        params: Value,
    ) -> Result<Value, tools::Error> {
        let tasks = running.tasks().clone();
        let failed = |e: RpcError| tools::Error::Failed(e.message);
        let answered = |control: &Control| control.answer(&key);
        if let Some(answer) = answered(
            &tasks
                .control(&running.binding, &running.id)
                .map_err(failed)?,
        ) {
            return Ok(answer);
        }
        let params = params.to_string();
        running
            .update(|r| {
                r.asked.push((key.clone(), method, params));
                r.status = Status::InputRequired;
                r.updated_ms = now_ms();
            })
            .await
            .map_err(failed)?;
        loop {
            let control = tasks
                .control(&running.binding, &running.id)
                .map_err(failed)?;
            if let Some(answer) = answered(&control) {
                running
                    .update(|r| {
                        r.asked.retain(|(k, _, _)| *k != key);
                        if r.asked.is_empty() {
                            r.status = Status::Working;
                        }
                        r.updated_ms = now_ms();
                    })
                    .await
                    .map_err(failed)?;
                return Ok(answer);
            }
            if control.cancel || running.cancel.is_cancelled() {
                return Err(tools::Error::Cancelled);
            }
            // A missed wake-up costs at most a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
    }
}

impl Peer for TaskPeer {
    fn notify(&self, _method: &str, _params: Value) {}

    fn request(
        &self,
        method: &str,
        params: Value,
    ) -> BoxFuture<'static, Result<Value, tools::Error>> {
        let key = format!("input-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.request_as(&key, method, params)
    }

    fn request_as(
        &self,
        key: &str,
        method: &str,
        params: Value,
    ) -> BoxFuture<'static, Result<Value, tools::Error>> {
        if let Some(answer) = self.answers.get(key) {
            let answer = answer.clone();
            return Box::pin(async move { Ok(answer) });
        }
        Box::pin(Self::ask(
            self.running.clone(),
            self.changes.clone(),
            key.to_owned(),
            method.to_owned(),
            params,
        ))
    }
}
