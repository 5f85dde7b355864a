//! Task records in the replicated `tasks` table: what any node reads to answer
//! `tasks/get`, and what the node running a task writes as it goes.
//!
//! A task is three kinds of record, each sealed and keyed under the principal's binding
//! (so another principal's lookup finds nothing, never someone else's task):
//! - the task itself (status, questions asked, error, the running node and its lease),
//!   written only by the node running it, and counted against the principal's cap;
//! - its control record (cancel requested, answers given), written by whichever node
//!   receives `tasks/cancel` or `tasks/update`;
//! - its result, in chunks below `raft.max_entry_bytes`, written before the status that
//!   says it is complete, so a node that reads `completed` has the whole result.
//!
//! One writer per record kind means no two nodes overwrite each other's changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::RpcError;
use crate::limits::Limits;
use crate::raft::{self, Change, Store, Table};

/// The extension's identifier, under `capabilities.extensions`.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// The cap on a task's result, as refusals name it.
pub const MAX_RESULT_BYTES: &str = "tasks.max_result_bytes";
/// The cap on the tasks one principal holds, as refusals name it.
pub const MAX_TASKS_PER_PRINCIPAL: &str = "tasks.max_tasks_per_principal";
/// The cap on the answers a task holds, as refusals name it.
pub const MAX_INPUT_BYTES: &str = "tasks.max_input_bytes";

/// Tasks (`[tasks]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a task stays readable after it was created (its `ttlMs`). Default 1 hour:
    /// long enough for a client to come back for a result, short enough that finished
    /// tasks do not pile up in every replica.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The `pollIntervalMs` suggested to clients. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Largest result a task may end with (its JSON text), in bytes; a larger one ends the
    /// task as failed, saying so. Default 1 MiB: documents and tables of a few hundred
    /// KB fit, and a result is kept on every replica for the task's TTL.
    pub max_result_bytes: usize,
    /// Most tasks one principal holds fleet-wide, finished ones included until their TTL
    /// ends; a call that would create one more is refused with 429. Default 100.
    pub max_tasks_per_principal: usize,
    /// Most bytes of answers (their JSON text, all `tasks/update`s together) one task
    /// holds; a `tasks/update` that would take it over is refused with `-32602` naming
    /// `params.inputResponses`. Default 256 KiB, as `mcp.max_request_state_bytes`: room
    /// for several elicitation answers and model completions, well inside a Raft entry.
    pub max_input_bytes: usize,
    /// How long after its running node stops renewing it a task is reported failed (or,
    /// for a tool declared rerunnable, run again on the node that notices). The running
    /// node renews its lease in the store every third of this. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub owner_lost_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(1),
            max_result_bytes: 1024 * 1024,
            max_tasks_per_principal: 100,
            max_input_bytes: 256 * 1024,
            owner_lost_after: Duration::from_secs(5),
        }
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Status {
    Working,
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::InputRequired => "input_required",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub(super) fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// The task record, written by the node running the task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    /// The tool called.
    pub tool: String,
    /// The call's arguments (JSON text), to run it again after its node is lost.
    pub args: String,
    pub status: Status,
    pub message: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When the record ends (created + TTL).
    pub deadline_ms: u64,
    /// The node running the task, and until when it has promised to renew this record.
    pub node: u64,
    pub lease_ms: u64,
    /// Questions waiting for answers: key, method, params (JSON text).
    pub asked: Vec<(String, String, String)>,
    /// How many result chunks were written (completed tasks).
    pub chunks: u32,
    /// A protocol-level failure: code and message.
    pub error: Option<(i64, String)>,
}

/// What other nodes ask of a running task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Control {
    pub cancel: bool,
    /// Answers given with `tasks/update`: key, answer (JSON text).
    pub answers: Vec<(String, String)>,
}

impl Control {
    pub(super) fn answer(&self, key: &str) -> Option<Value> {
        self.answers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| serde_json::from_str(v).ok())
    }
}

/// The record kinds of one task.
#[derive(Clone, Copy)]
enum Part {
    Task,
    Control,
    Chunk(u32),
    /// The claim to act on a lost node's task, one per lapsed lease.
    Claim(u64),
}

/// The tasks of this node's store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Tasks {
    pub(super) store: Store,
    pub(super) config: Config,
    pub(super) limits: Limits,
    /// Largest result chunk: half a Raft entry, leaving room for sealing and the envelope.
    chunk_bytes: usize,
    /// Bumped whenever a task record is applied on this node, so waiting runners re-read.
    changed: Arc<watch::Sender<u64>>,
    /// Stored keys of the records watched here (the control records of tasks running
    /// here, the task records listen streams follow), each with its number of watchers.
    watched: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
}

impl Tasks {
    /// Tasks in `store`; `max_entry_bytes` is the store's largest entry.
    pub(crate) fn new(
        store: Store,
        config: Config,
        limits: Limits,
        max_entry_bytes: usize,
    ) -> Self {
        for key in [MAX_RESULT_BYTES, MAX_TASKS_PER_PRINCIPAL, MAX_INPUT_BYTES] {
            limits.declare(key);
        }
        let (changed, _) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let watched: Arc<Mutex<HashMap<Vec<u8>, usize>>> = Arc::default();
        {
            let changed = changed.clone();
            let watched = watched.clone();
            // In use: the tasks this replica counts against their principals (each task
            // record is owned; its control, claims and result pieces are not).
            let gauge = limits.gauge(MAX_TASKS_PER_PRINCIPAL);
            let reader = store.reader();
            let count = move || i64::try_from(reader.owned(Table::Tasks)).unwrap_or(i64::MAX);
            gauge.set(count());
            // Runs inside apply: a map lookup, a count the replica keeps, a counter bump.
            store.on_change(move |change| {
                if matches!(
                    change,
                    Change::Record {
                        table: Table::Tasks,
                        ..
                    } | Change::Reset
                ) {
                    gauge.set(count());
                }
                let wake = match change {
                    Change::Record { table, key } => {
                        *table == Table::Tasks
                            && watched
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .contains_key(key)
                    }
                    Change::Reset => true,
                };
                if wake {
                    changed.send_modify(|n| *n = n.wrapping_add(1));
                }
            });
        }
        Self {
            store,
            config,
            limits,
            chunk_bytes: (max_entry_bytes / 2).max(1024),
            changed,
            watched,
        }
    }

    fn natural(binding: &str, id: &str, part: Part) -> Vec<u8> {
        // The binding's length says where it ends: no binding and id can reach another's.
        let part = match part {
            Part::Task => "t".to_owned(),
            Part::Control => "c".to_owned(),
            Part::Chunk(i) => format!("r{i}"),
            Part::Claim(lease) => format!("k{lease}"),
        };
        format!("{}:{binding}{part}:{id}", binding.len()).into_bytes()
    }

    /// This node's id, recorded as the task's runner.
    pub(super) fn node(&self) -> u64 {
        self.store.id()
    }

    /// Creates `record`, unless the principal already holds the most tasks allowed.
    pub(super) async fn create(
        &self,
        binding: &str,
        id: &str,
        record: &Record,
    ) -> Result<(), RpcError> {
        let cap = self.config.max_tasks_per_principal;
        let stored = self.put_record(binding, id, record, cap as u64).await?;
        if !stored {
            return Err(self.limits.exhausted(
                MAX_TASKS_PER_PRINCIPAL,
                "tasks held by this principal",
                cap,
            ));
        }
        Ok(())
    }

    /// Rewrites the record of a task this node runs.
    pub(super) async fn save(
        &self,
        binding: &str,
        id: &str,
        record: &Record,
    ) -> Result<(), RpcError> {
        // Replacing the principal's own record never counts it twice: no cap is hit.
        self.put_record(binding, id, record, u64::MAX)
            .await
            .map(drop)
    }

    async fn put_record(
        &self,
        binding: &str,
        id: &str,
        record: &Record,
        limit: u64,
    ) -> Result<bool, RpcError> {
        // Every member applies it before this returns, so a `tasks/get` that reaches any
        // node right after the answer finds what it says.
        let (stored, _) = self
            .store
            .put_owned_everywhere(
                Table::Tasks,
                &Self::natural(binding, id, Part::Task),
                record,
                Some(record.deadline_ms),
                self.store.owner(binding.as_bytes()),
                limit,
            )
            .await
            .map_err(store_error)?;
        Ok(stored)
    }

    /// The task `id` of the principal `binding`, read from a current replica.
    pub(super) async fn get(&self, binding: &str, id: &str) -> Result<Option<Record>, RpcError> {
        crate::tools::fresh(&self.store)
            .await
            .map_err(store_error)?;
        self.store
            .get::<Record>(Table::Tasks, &Self::natural(binding, id, Part::Task))
            .map(|found| found.map(|f| f.value))
            .map_err(store_error)
    }

    /// Claims the right to act on a task whose lease ended at `lease_ms`: true for exactly
    /// one caller fleet-wide, so a lost node's task is failed or run again once.
    pub(super) async fn claim(
        &self,
        binding: &str,
        id: &str,
        lease_ms: u64,
        deadline_ms: u64,
    ) -> Result<bool, RpcError> {
        let claimer = self.node();
        self.store
            .create(
                Table::Tasks,
                &Self::natural(binding, id, Part::Claim(lease_ms)),
                &claimer,
                Some(deadline_ms),
            )
            .await
            .map_err(store_error)
    }

    /// The control record of a task (empty when nobody asked anything of it yet).
    pub(super) fn control(&self, binding: &str, id: &str) -> Result<Control, RpcError> {
        Ok(self
            .store
            .get::<Control>(Table::Tasks, &Self::natural(binding, id, Part::Control))
            .map_err(store_error)?
            .map(|f| f.value)
            .unwrap_or_default())
    }

    /// Replaces the control record of a task, on every member before returning.
    pub(super) async fn set_control(
        &self,
        binding: &str,
        id: &str,
        control: &Control,
        deadline_ms: u64,
    ) -> Result<(), RpcError> {
        self.store
            .put_everywhere(
                Table::Tasks,
                &Self::natural(binding, id, Part::Control),
                control,
                Some(deadline_ms),
            )
            .await
            .map(drop)
            .map_err(store_error)
    }

    /// Stores a result's JSON text in chunks; returns how many.
    pub(super) async fn put_result(
        &self,
        binding: &str,
        id: &str,
        text: &str,
        deadline_ms: u64,
    ) -> Result<u32, RpcError> {
        let bytes = text.as_bytes();
        let mut count = 0u32;
        for piece in bytes.chunks(self.chunk_bytes) {
            let natural = Self::natural(binding, id, Part::Chunk(count));
            self.store
                .put(Table::Tasks, &natural, &piece.to_vec(), Some(deadline_ms))
                .await
                .map_err(store_error)?;
            count += 1;
        }
        Ok(count)
    }

    /// The result of a completed task, reassembled from its chunks.
    pub(super) fn result(&self, binding: &str, id: &str, chunks: u32) -> Result<Value, RpcError> {
        let mut bytes = Vec::new();
        for i in 0..chunks {
            let natural = Self::natural(binding, id, Part::Chunk(i));
            let piece = self
                .store
                .get::<Vec<u8>>(Table::Tasks, &natural)
                .map_err(store_error)?
                .ok_or_else(|| RpcError::internal("part of the task's result is missing"))?;
            bytes.extend(piece.value);
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| RpcError::internal("the task's stored result is not valid JSON"))
    }

    /// Whether this node is running the task now (its runner watches it).
    pub(super) fn runs_here(&self, binding: &str, id: &str) -> bool {
        let key = self
            .store
            .key(Table::Tasks, &Self::natural(binding, id, Part::Control));
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
    }

    /// Starts waking `changes()` receivers whenever the control record of this task is
    /// applied here; stopped by dropping the guard.
    pub(super) fn watch(&self, binding: &str, id: &str) -> Watch {
        self.watch_part(binding, id, Part::Control)
    }

    /// Starts waking `changes()` receivers whenever the task record itself (its status)
    /// is applied here, as a listen stream following the task needs.
    pub(super) fn watch_record(&self, binding: &str, id: &str) -> Watch {
        self.watch_part(binding, id, Part::Task)
    }

    fn watch_part(&self, binding: &str, id: &str, part: Part) -> Watch {
        let key = self
            .store
            .key(Table::Tasks, &Self::natural(binding, id, part));
        *self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert(0) += 1;
        Watch {
            key,
            watched: self.watched.clone(),
            changes: self.changed.subscribe(),
        }
    }
}

/// A subscription to one record of a task (a running task's control record, or the task
/// record a listen stream follows).
pub(super) struct Watch {
    key: Vec<u8>,
    watched: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    changes: watch::Receiver<u64>,
}

impl Watch {
    /// A receiver that changes when the control record may have.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = watched.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                watched.remove(&self.key);
            }
        }
    }
}

fn store_error(error: raft::Error) -> RpcError {
    tracing::error!(error = %error, "task store");
    RpcError::internal("the task could not be read or stored")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Key, Ring};

    async fn tasks() -> (Tasks, tempfile::TempDir, crate::raft::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::single(Key::generate());
        let (store, runtime) = Store::open_single(dir.path(), ring).await.unwrap();
        let tasks = Tasks::new(store, Config::default(), Limits::default(), 256 * 1024);
        (tasks, dir, runtime)
    }

    #[actix_web::test]
    async fn a_lapsed_lease_is_claimed_once_and_each_lapse_has_its_own_claim() {
        let (tasks, _dir, _rt) = tasks().await;
        let far = raft::now_ms() + 60_000;
        assert!(tasks.claim("3:bob", "t1", 1000, far).await.unwrap());
        assert!(!tasks.claim("3:bob", "t1", 1000, far).await.unwrap());
        // The task run again has a new lease; when that one lapses it is claimed anew.
        assert!(tasks.claim("3:bob", "t1", 2000, far).await.unwrap());
        // Another principal's task of the same id is another record.
        assert!(tasks.claim("5:alice", "t1", 1000, far).await.unwrap());
    }

    #[actix_web::test]
    async fn a_task_is_found_only_under_the_principal_that_owns_it() {
        let (tasks, _dir, _rt) = tasks().await;
        let now = raft::now_ms();
        let record = Record {
            tool: "t".into(),
            args: "{}".into(),
            status: Status::Working,
            message: None,
            created_ms: now,
            updated_ms: now,
            deadline_ms: now + 60_000,
            node: 1,
            lease_ms: now + 5_000,
            asked: Vec::new(),
            chunks: 0,
            error: None,
        };
        tasks.create("5:alice", "t1", &record).await.unwrap();
        assert!(tasks.get("5:alice", "t1").await.unwrap().is_some());
        assert!(tasks.get("3:bob", "t1").await.unwrap().is_none());
        // The binding's length prefix keeps `5:alic` + `et1` from reaching it.
        assert!(tasks.get("5:alic", "et1").await.unwrap().is_none());
    }
}
