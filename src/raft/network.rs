//! Traffic between nodes: one pooled HTTP client for Raft messages, forwarded writes and
//! leader reads, postcard bodies, and the cluster secret on every request.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig};

/// Paths of the internal listener.
pub(crate) mod path {
    /// Raft append-entries (and heartbeats).
    pub const APPEND: &str = "/raft/append";
    /// Raft vote.
    pub const VOTE: &str = "/raft/vote";
    /// Raft snapshot chunks.
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// A write forwarded by a follower to the leader.
    pub const WRITE: &str = "/fleet/write";
    /// A follower asking the leader for the index a linearizable read must wait for.
    pub const READ_INDEX: &str = "/fleet/read-index";
    /// A member asking another to wait until it has applied a removal.
    pub const APPLIED: &str = "/fleet/applied";
    /// A leader about to stop asking a follower to stand for election.
    pub const ELECT: &str = "/raft/elect";
}

/// When the sender sent a message, in milliseconds since the epoch: a message that sat
/// in a queue (its receiver was paused) must not count as recent news from the leader.
pub(crate) const SENT_AT: &str = "x-fleet-sent-ms";

/// Content type of postcard bodies.
pub(crate) const POSTCARD: &str = "application/x-postcard";

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node could not be reached (connection refused, timed out).
    #[error("node unreachable: {0}")]
    Unreachable(String),
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
}

impl Client {
    /// A client presenting `secret` to every node.
    pub fn new(secret: &str) -> Self {
        crate::actors::install_tls_provider();
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self {
            http,
            secret: Arc::from(secret),
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
        let response = self
            .http
            .post(format!("http://{addr}{path}"))
            .bearer_auth(&*self.secret)
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .header(SENT_AT, super::now_ms())
            .timeout(timeout)
            .body(bytes)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    CallError::Unreachable(causes(&e))
                } else {
                    CallError::Transport(causes(&e))
                }
            })?;
        if !response.status().is_success() {
            return Err(CallError::Status {
                status: response.status().as_u16(),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        super::wire::decode(&bytes).map_err(|e| CallError::Transport(e.to_string()))
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

/// Makes a connection to each peer for openraft.
pub struct Network {
    client: Client,
}

impl Network {
    /// A network over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// One peer, as openraft sees it.
pub struct Peer {
    client: Client,
    target: NodeId,
    addr: String,
}

/// How a node answers a Raft message: openraft's own result, so remote errors keep their
/// meaning (a higher vote, a missing log) across the wire.
#[derive(Serialize, Deserialize)]
pub(crate) struct Reply<T, E>(pub Result<T, E>);

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
                CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply
            .0
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(path::APPEND, &rpc, &option).await
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
        self.send(path::VOTE, &rpc, &option).await
    }
}
