//! Traffic between nodes: one pooled HTTP client for Raft messages, forwarded writes and
//! leader reads, postcard bodies, and the cluster secret on every request.
//!
//! # AppendEntries under a byte budget
//!
//! openraft 0.9 gives each AppendEntries RPC `heartbeat_interval` to complete: its
//! replication task wraps our call in a timeout of exactly that (the *hard* TTL of
//! [`RPCOption`]) and drops the call when it fires. A timed-out batch is then reported as a
//! plain `RPCError::Timeout` and the same range is sent again, up to
//! `max_payload_entries` (300) entries at a time, whatever their size. A batch too large to
//! send, decode, append and fsync within the TTL (or refused by the follower's body limit
//! with 413) was therefore resent unchanged forever, and the follower never caught up.
//!
//! The one lever openraft offers is `RPCError::PayloadTooLarge` with an entries hint: it
//! retries at once with at most that many entries. [`Peer`] uses it three ways:
//! - before sending, it measures the encoded entries against `raft.max_append_bytes` and
//!   answers a batch over that budget (more than one entry) with the number that fits;
//! - it gives the exchange what is left of the *soft* TTL (3/4 of the hard one) after
//!   measuring and encoding, so that a multi-entry append that times out (or fails
//!   otherwise: a 413, a connection reset) is answered by us, not dropped by openraft's
//!   timeout, with PayloadTooLarge and half as many entries;
//! - it remembers that halved count per peer (the [`Window`]) and holds later batches to
//!   it, doubling it back after a run of successes at that size.
//!
//! The window exists because openraft's hint is short-lived: `ReplicationCore::update_hint`
//! keeps it for 10 uses (`DEFAULT_ENTRIES_HINT_TTL`), and every AppendEntries sent to that
//! peer uses one, heartbeats included; then it jumps straight back to the full range, with
//! no gradual growth. The hint lives in the replication task, so a new term (a new task)
//! starts without one. Without the window, every eleventh RPC would be the full batch
//! again and time out again. The byte budget needs no memory: an oversized batch is
//! refused before any byte goes out, at the cost of the leader reading the whole range
//! (up to 300 entries) from its log first, as openraft does before calling us.
//!
//! A single entry cannot be split; its failures stay ordinary network errors (timeouts
//! are reported as openraft's own `Timeout`, connection failures as `Unreachable`, which
//! makes openraft back off). `raft.max_entry_bytes` keeps every entry within the budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::budget::{entries_within, Budget, Split, Window};
use super::election::Ballots;
use super::{NodeId, TypeConfig};

/// Paths of the internal listener.
pub(crate) mod path {
    /// Raft append-entries (and heartbeats).
    pub const APPEND: &str = "/raft/append";
    /// Raft vote.
    pub const VOTE: &str = "/raft/vote";
    /// Raft snapshot chunks.
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// A write forwarded by a follower to the leader (as followers forwarded them before
    /// they went together; still served).
    pub const WRITE: &str = "/fleet/write";
    /// Writes a follower forwards to the leader together, answered one by one.
    pub const WRITES: &str = "/fleet/writes";
    /// A follower asking the leader for the index a linearizable read must wait for.
    pub const READ_INDEX: &str = "/fleet/read-index";
    /// A member asking another to wait until it has applied a write (a removal, a
    /// revocation).
    pub const APPLIED: &str = "/fleet/applied";
    /// A leader about to stop asking a follower to stand for election.
    pub const ELECT: &str = "/raft/elect";
    /// The leader telling a node that `cluster leave` removed it.
    pub const REMOVED: &str = "/cluster/removed";
    /// Every member's own report, gathered by the node asked (`cluster status`).
    pub const MEMBERS: &str = "/cluster/members";
}

/// When the sender sent a message, in milliseconds since the epoch: a message that sat
/// in a queue (its receiver was paused) must not count as recent news from the leader.
pub(crate) const SENT_AT: &str = "x-fleet-sent-ms";

/// Content type of postcard bodies.
pub(crate) const POSTCARD: &str = "application/x-postcard";

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node could not be reached (connection refused, no route).
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The node did not answer in time.
    #[error("node did not answer in time: {0}")]
    TimedOut(String),
    /// The node answered with something other than a postcard body.
    #[error("node answered HTTP {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The exchange failed part-way, or its body could not be read.
    #[error("exchange failed: {0}")]
    Transport(String),
}

/// A pooled HTTP client that speaks postcard to other nodes' internal listeners.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    secret: Arc<str>,
    /// `Authorization: Bearer <secret>`, made once; `None` if the secret cannot be a
    /// header value (each request then fails as it would have).
    authorization: Option<reqwest::header::HeaderValue>,
}

impl Client {
    /// A client presenting `secret` to every node.
    pub fn new(secret: &str) -> Self {
        crate::actors::install_tls_provider();
        // Peers speak plain http: no roots, so building the client does not load and
        // parse the system's certificate store (milliseconds of every start).
        let no_roots: [reqwest::Certificate; 0] = [];
        let http = reqwest::Client::builder()
            .tls_certs_only(no_roots)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client without TLS always builds");
        let authorization = reqwest::header::HeaderValue::from_str(&format!("Bearer {secret}"))
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Self {
            http,
            secret: Arc::from(secret),
            authorization,
        }
    }

    /// The URL of `path` on the node at `addr`. Parsing it is a noticeable share of an
    /// AppendEntries' cost, so a peer parses its append URL once.
    pub fn url(addr: &str, path: &str) -> Result<reqwest::Url, CallError> {
        reqwest::Url::parse(&format!("http://{addr}{path}"))
            .map_err(|e| CallError::Transport(format!("no URL for node address {addr}: {e}")))
    }

    /// A POST to `url` presenting the cluster secret.
    fn post(&self, url: reqwest::Url) -> reqwest::RequestBuilder {
        let request = self.http.post(url);
        match &self.authorization {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => request.bearer_auth(&*self.secret),
        }
    }

    /// Sends `body` to `path` on the node at `addr` and decodes its answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let bytes = postcard::to_stdvec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        self.call_encoded(Self::url(addr, path)?, bytes, timeout)
            .await
    }

    /// Sends an already encoded body to `url` and decodes its answer.
    async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        url: reqwest::Url,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let response = self
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .header(SENT_AT, super::now_ms())
            .timeout(timeout)
            .body(bytes)
            .send()
            .await
            .map_err(|e| call_error(&e))?;
        if !response.status().is_success() {
            return Err(CallError::Status {
                status: response.status().as_u16(),
            });
        }
        let bytes = response.bytes().await.map_err(|e| call_error(&e))?;
        super::wire::decode(&bytes).map_err(|e| CallError::Transport(e.to_string()))
    }

    /// Sends `body` to `path` on the node at `addr` and returns the response once its
    /// head arrives (within `timeout`), for a caller that reads its body as it comes: no
    /// deadline covers the body.
    pub async fn open<Req: Serialize>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<reqwest::Response, CallError> {
        let bytes = postcard::to_stdvec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        let sent = self
            .post(Self::url(addr, path)?)
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .body(bytes)
            .send();
        match tokio::time::timeout(timeout, sent).await {
            Ok(response) => response.map_err(|e| call_error(&e)),
            Err(_) => Err(CallError::TimedOut(format!("no answer within {timeout:?}"))),
        }
    }

    /// Sends a JSON body to a management path and returns the status and JSON answer.
    pub async fn json(
        &self,
        addr: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, serde_json::Value), CallError> {
        let url = format!("http://{addr}{path}");
        let request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let response = request
            .bearer_auth(&*self.secret)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(causes(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((status, value))
    }
}

fn call_error(e: &reqwest::Error) -> CallError {
    if e.is_timeout() {
        CallError::TimedOut(causes(e))
    } else if e.is_connect() {
        CallError::Unreachable(causes(e))
    } else {
        CallError::Transport(causes(e))
    }
}

/// An error and its causes on one line, each said once: HTTP client errors nest the same
/// message several levels deep, with the useful part ("connection refused") at the bottom.
fn causes(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The status a member answers a vote request with when the candidate is not in the
/// membership it holds, committed after anything the candidate has: the candidate was
/// removed and never heard (see `standing`).
pub(crate) const NOT_A_MEMBER: u16 = 410;

/// Makes a connection to each peer for openraft.
pub struct Network {
    client: Client,
    id: NodeId,
    budget: Budget,
    not_member: Arc<AtomicBool>,
    ballots: Arc<Ballots>,
}

impl Network {
    /// A network for node `id` over `client`, sizing appends by `budget`; a member that
    /// answers [`NOT_A_MEMBER`] sets `not_member`, and what vote requests meet goes to
    /// `ballots`.
    pub(super) fn new(
        client: Client,
        id: NodeId,
        budget: Budget,
        not_member: Arc<AtomicBool>,
        ballots: Arc<Ballots>,
    ) -> Self {
        Self {
            client,
            id,
            budget,
            not_member,
            ballots,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            id: self.id,
            target,
            addr: node.addr.clone(),
            append_url: Client::url(&node.addr, path::APPEND).ok(),
            budget: self.budget.clone(),
            window: Window::default(),
            not_member: self.not_member.clone(),
            ballots: self.ballots.clone(),
        }
    }
}

/// One peer, as openraft sees it.
pub struct Peer {
    client: Client,
    id: NodeId,
    target: NodeId,
    addr: String,
    /// Where AppendEntries go, parsed once (`None` if the address makes no URL: each
    /// append then fails with the parse error).
    append_url: Option<reqwest::Url>,
    budget: Budget,
    window: Window,
    /// Set when this peer says this node is not a member.
    not_member: Arc<AtomicBool>,
    /// Where this peer's answers to vote requests are noted (split votes, reach).
    ballots: Arc<Ballots>,
}

/// How a node answers a Raft message: openraft's own result, so remote errors keep their
/// meaning (a higher vote, a missing log) across the wire.
#[derive(Serialize, Deserialize)]
pub(crate) struct Reply<T, E>(pub Result<T, E>);

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

fn too_large(hint: u64) -> RPCError<NodeId, BasicNode, RaftError<NodeId>> {
    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint))
}

impl Peer {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Reply<Resp, E> = self
            .client
            .call(&self.addr, path, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable(_) | CallError::TimedOut(_) => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                CallError::Status {
                    status: NOT_A_MEMBER,
                } => {
                    if !self.not_member.swap(true, Ordering::AcqRel) {
                        tracing::warn!(peer = self.target, "a member says this node is not one");
                    }
                    RPCError::Network(NetworkError::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply
            .0
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends an AppendEntries carrying entries within the budget and the window; see the
    /// module documentation.
    async fn append(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        let called = Instant::now();
        let entries = rpc.entries.len() as u64;
        let metrics = self.budget.metrics.clone();
        let (dropped, fits) = self.window.begin(entries);
        if let Some(n) = dropped {
            metrics.split(Split::Timeout);
            tracing::info!(
                peer = self.target,
                entries = n,
                "an append was dropped at openraft's timeout; sending fewer entries"
            );
        }
        if let Err(hint) = fits {
            metrics.split(Split::Window);
            return Err(too_large(hint));
        }
        if entries > 1 {
            // Lazily, so that an oversized batch costs about one budget's worth of work.
            let sizes = rpc
                .entries
                .iter()
                .map(|e| postcard::experimental::serialized_size(e).unwrap_or(usize::MAX));
            if let Some(hint) = entries_within(sizes, self.budget.max_append_bytes) {
                self.window.abandon();
                metrics.split(Split::Budget);
                tracing::debug!(
                    peer = self.target,
                    entries,
                    hint,
                    "append over budget; split"
                );
                return Err(too_large(hint));
            }
        }
        let bytes = match postcard::to_stdvec(&rpc) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.window.abandon();
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let size = bytes.len();
        // What is left of the soft TTL after measuring and encoding, so that we answer a
        // slow append before openraft drops it at the hard one.
        let left = option.soft_ttl().saturating_sub(called.elapsed());
        let started = Instant::now();
        let reply = if left.is_zero() {
            Err(CallError::TimedOut(
                "measuring and encoding took the whole time".to_owned(),
            ))
        } else {
            let url = match self.append_url.clone() {
                Some(url) => Ok(url),
                None => Client::url(&self.addr, path::APPEND),
            };
            match url {
                Ok(url) => {
                    self.client
                        .call_encoded::<Reply<_, RaftError<NodeId>>>(url, bytes, left)
                        .await
                }
                Err(e) => Err(e),
            }
        };
        let elapsed = started.elapsed();
        match reply {
            Ok(reply) => {
                self.window.succeeded(entries, self.budget.max_entries);
                if entries > 0 {
                    metrics.sent(size, elapsed);
                    tracing::debug!(
                        peer = self.target,
                        entries,
                        bytes = size,
                        ms = elapsed.as_secs_f64() * 1000.0,
                        "append sent"
                    );
                }
                reply
                    .0
                    .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Err(e) => {
                let timed_out = matches!(e, CallError::TimedOut(_));
                // A peer that refuses connections is down, whatever the batch: back off.
                if matches!(e, CallError::Unreachable(_)) {
                    self.window.abandon();
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
                match self.window.failed(entries) {
                    Some(hint) => {
                        metrics.split(if timed_out {
                            Split::Timeout
                        } else {
                            Split::Failure
                        });
                        tracing::info!(
                            peer = self.target,
                            entries,
                            bytes = size,
                            hint,
                            error = %e,
                            "an append failed; sending fewer entries"
                        );
                        Err(RPCError::PayloadTooLarge(
                            PayloadTooLarge::new_entries_hint(hint).with_source_error(&e),
                        ))
                    }
                    None if timed_out => Err(RPCError::Timeout(Timeout {
                        action: RPCTypes::AppendEntries,
                        id: self.id,
                        target: self.target,
                        timeout: option.soft_ttl(),
                    })),
                    None => Err(RPCError::Network(NetworkError::new(&e))),
                }
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        self.append(rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(path::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Counts as unanswered unless answered below, also when openraft drops this call.
        let sent = self.ballots.vote_sent(self.target);
        let result = self.send(path::VOTE, &rpc, &option).await;
        match &result {
            Ok(answer) => sent.answered(&rpc, Some(answer), self.id),
            Err(RPCError::RemoteError(_)) => sent.answered(&rpc, None, self.id),
            Err(_) => drop(sent),
        }
        result
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
