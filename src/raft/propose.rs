//! How a node's writes reach the log: on the leader, the writes waiting together are
//! proposed as one entry ([`Command::Group`]); on a follower, the writes waiting together
//! for the same leader go to it in one request. Each write keeps its own answer.
//!
//! # Hand-offs per write
//! A write proposed alone crosses threads six times inside the leader (caller → Raft core
//! → log flusher → core → state machine → core → caller) plus one when the caller sits on
//! another runtime than Raft's, and each of the core's steps costs a sled read or write.
//! A group pays those once: per write, what is left is the hop into the batching task and
//! the answer back.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::batch::{Batcher, Shape};
use super::network::{path, Client};
use super::store::Refusal;
use super::{Command, Config, FlushMetrics, Outcome, TypeConfig};

/// What one write gets back: its outcome and the index of the entry that carried it.
pub(crate) type Answer = Result<(Outcome, u64), Refusal>;

/// What a group adds to the writes it carries: its variant and the list's length.
pub(super) const GROUP_OVERHEAD: usize = 16;

/// What one write adds inside a group or a forwarded request: its length prefix.
pub(super) const PER_WRITE_OVERHEAD: usize = 5;

/// What this node measures of the way its writes reach the log.
#[derive(Clone)]
pub(crate) struct WriteMetrics {
    /// Writes carried by each entry this node proposed as leader.
    entry_writes: Histogram,
    /// The log store's fsyncs.
    flush: FlushMetrics,
    /// Writes dropped before they were proposed or forwarded: their caller had stopped
    /// waiting.
    abandoned: Counter,
}

impl WriteMetrics {
    pub(super) fn new(flush: FlushMetrics) -> Self {
        Self {
            entry_writes: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            flush,
            abandoned: Counter::default(),
        }
    }

    /// Adds these metrics to `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "raft_entry_writes",
            "Writes carried by each log entry this node proposed as leader: more than one \
             when writes waiting at the same moment shared an entry",
            self.entry_writes.clone(),
        );
        registry.register(
            "raft_log_flush_seconds",
            "Time of one fsync of the Raft log, which makes every append queued before it \
             durable",
            self.flush.seconds.clone(),
        );
        registry.register(
            "raft_writes_abandoned",
            "Writes dropped before this node proposed them (or forwarded them to the leader) \
             because their caller had stopped waiting: raft.write_timeout passed while they \
             queued (the caller was answered 503), or the client went away",
            self.abandoned.clone(),
        );
        registry.register(
            "raft_log_flush_appends",
            "Appends of log entries that one fsync of the Raft log made durable",
            self.flush.appends.clone(),
        );
    }
}

/// The batching stages of one node: the proposer (used while it leads) and the forwarder
/// (while it follows).
pub(super) struct Writers {
    /// Writes this node proposes as leader, gathered into entries.
    pub(super) proposer: Batcher<(), Command, Answer>,
    /// Writes this node sends to the leader at the given address, gathered into requests.
    pub(super) forwarder: Batcher<String, Command, Answer>,
}

impl Writers {
    /// Starts both stages on `runtime`, shaped by `config`.
    pub(super) fn start(
        runtime: &tokio::runtime::Handle,
        config: &Config,
        raft: Raft<TypeConfig>,
        client: Client,
        metrics: WriteMetrics,
    ) -> Self {
        let shape = Shape {
            max_bytes: config.max_entry_bytes.saturating_sub(GROUP_OVERHEAD),
            max_items: config.max_entry_writes.max(1),
            in_flight: config.max_proposed_entries.max(1),
        };
        let timeout = config.write_timeout;
        let abandoned = metrics.abandoned.clone();
        let proposer = Batcher::start(runtime, shape, abandoned.clone(), move |(), commands| {
            propose_all(raft.clone(), timeout, commands, metrics.clone())
        });
        let forwarder = Batcher::start(runtime, shape, abandoned, move |addr, commands| {
            forward_all(client.clone(), addr, commands, timeout)
        });
        Self {
            proposer,
            forwarder,
        }
    }
}

/// Proposes `commands` as one entry (the command itself when there is one, else a group)
/// and answers each with its own outcome.
async fn propose_all(
    raft: Raft<TypeConfig>,
    timeout: Duration,
    mut commands: Vec<Command>,
    metrics: WriteMetrics,
) -> Vec<Answer> {
    let count = commands.len();
    let entry = match count {
        1 => commands.pop(),
        _ => group(&commands),
    };
    let Some(entry) = entry else {
        return vec![Err(Refusal::Failed("a write did not encode".into())); count];
    };
    metrics.entry_writes.observe(count as f64);
    let refusal = match tokio::time::timeout(timeout, raft.client_write(entry)).await {
        Ok(Ok(response)) if response.data.len() == count => {
            let index = response.log_id.index;
            return response
                .data
                .into_iter()
                .map(|outcome| Ok((outcome, index)))
                .collect();
        }
        Ok(Ok(response)) => Refusal::Failed(format!(
            "an entry of {count} writes applied with {} outcomes",
            response.data.len()
        )),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Refusal::NotLeader,
        Ok(Err(e)) => Refusal::Failed(e.to_string()),
        Err(_) => Refusal::Failed("the write was not committed in time".into()),
    };
    vec![Err(refusal); count]
}

/// `commands` as one group entry; `None` when one does not encode (none can: every
/// command was measured by encoding it before it was queued).
fn group(commands: &[Command]) -> Option<Command> {
    commands
        .iter()
        .map(|command| postcard::to_stdvec(command).ok())
        .collect::<Option<Vec<_>>>()
        .map(Command::Group)
}

/// Sends `commands` to the leader at `addr` in one request and answers each with what the
/// leader answered for it.
async fn forward_all(
    client: Client,
    addr: String,
    commands: Vec<Command>,
    timeout: Duration,
) -> Vec<Answer> {
    let count = commands.len();
    if let [command] = commands.as_slice() {
        // A lone write goes by the one-write route every build serves: with
        // `raft.max_entry_writes = 1` a node forwards only lone writes, so it can forward
        // to a leader of an older build during a rolling upgrade.
        let answer = client
            .call::<_, Answer>(&addr, path::WRITE, command, timeout)
            .await
            .unwrap_or_else(|e| Err(Refusal::Failed(e.to_string())));
        return vec![answer];
    }
    let refusal = match client
        .call::<_, Vec<Answer>>(&addr, path::WRITES, &commands, timeout)
        .await
    {
        Ok(answers) if answers.len() == count => return answers,
        Ok(answers) => Refusal::Failed(format!(
            "the leader answered {} of {count} writes",
            answers.len()
        )),
        Err(e) => Refusal::Failed(e.to_string()),
    };
    vec![Err(refusal); count]
}
