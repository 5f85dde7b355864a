//! Snapshot figures: peak memory and time while a node builds a snapshot of a store of
//! sealed legacy sessions, sends it to a new member in chunks, and the member installs it;
//! and the snapshot's size.
//!
//! Two real openraft members run in this process on the fleet's own log store and state
//! machine (sled on disk, 64 MiB page cache each, as a fleet node sets it). Their messages
//! go through postcard both ways, as on the wire between nodes, but not over HTTP. The
//! store is filled through Raft with `PutOwned` sessions of many principals, each within
//! the default cap. Peak memory is the process's VmHWM (`/proc/self/status`), reset before
//! each phase by writing 5 to `/proc/self/clear_refs`, so each figure is that phase's own
//! peak; "before" is VmRSS when the phase starts. Linux only. Prints figures; asserts
//! nothing about speed or size.
//!
//! `cargo bench --bench snapshot` runs 1,000 principals × 100 sessions (100,000 sessions).
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke pass.
//! `SNAPSHOT_BENCH_CLIENT_BYTES=N` pads each session's `clientInfo` to about N bytes
//! (default: a real client's, about 60); `SNAPSHOT_BENCH_PRINCIPALS=N` changes how many
//! principals hold sessions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mcp_fleet::internals::auth::Principal;
use mcp_fleet::internals::crypto::{Key, Ring};
use mcp_fleet::internals::raft::command::storage_key;
use mcp_fleet::internals::raft::{
    Changes, Command, LogStore, NodeId, StateMachine, Table, TypeConfig,
};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How big a store to snapshot.
struct Plan {
    principals: usize,
    sessions_each: usize,
}

const FULL: Plan = Plan {
    principals: 1000,
    sessions_each: 100,
};

const SMOKE: Plan = Plan {
    principals: 20,
    sessions_each: 10,
};

/// The cap every create is proposed under: the default of `sessions.max_per_principal`.
const CAP: u64 = 1000;
/// Creates in flight at once while filling the store.
const IN_FLIGHT: usize = 256;
/// The page cache of each member's sled, as a fleet node sets it.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// How long adding the new member (sending and installing the snapshot) may take.
const JOIN_DEADLINE: Duration = Duration::from_secs(600);
/// How long building the snapshot may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let mut plan = if full { FULL } else { SMOKE };
    if let Some(n) = std::env::var("SNAPSHOT_BENCH_PRINCIPALS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        plan.principals = n;
    }
    if !full {
        println!("snapshot: smoke run (pass --bench, as `cargo bench` does, for the full run)");
    }
    let client_bytes = std::env::var("SNAPSHOT_BENCH_CLIENT_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(&plan, client_bytes));
}

async fn run(plan: &Plan, client_bytes: Option<usize>) {
    let dirs = [tempfile::tempdir(), tempfile::tempdir()].map(|d| d.expect("a temp dir"));
    let nodes: Nodes = Arc::default();
    let ring = Ring::single(Key::generate());
    let sessions = plan.principals * plan.sessions_each;
    println!(
        "snapshot: {sessions} sealed legacy sessions, {} principals x {} each (cap {CAP})",
        plan.principals, plan.sessions_each
    );

    let leader = start(1, dirs[0].path(), &nodes).await;
    leader
        .initialize(BTreeMap::from([(1, BasicNode::new("1"))]))
        .await
        .expect("initialize");
    leader
        .wait(Some(Duration::from_secs(30)))
        .state(ServerState::Leader, "the first member leads")
        .await
        .expect("a leader");

    let commands = Commands::new(&ring, plan, client_bytes);
    let filled = phase("fill (Raft writes)", || async {
        let mut refused = 0;
        let mut next = 0;
        while next < sessions {
            let batch = (next..(next + IN_FLIGHT).min(sessions)).map(|i| {
                let raft = leader.clone();
                let command = commands.create(i);
                async move { raft.client_write(command).await.expect("a write").data }
            });
            // One outcome per write an entry carries: one here.
            for outcomes in join_all(batch).await {
                refused += outcomes.iter().filter(|o| o.refused).count();
            }
            next += IN_FLIGHT;
        }
        refused
    })
    .await;
    assert_eq!(filled, 0, "every create is within the cap");
    let settled = leader
        .wait(Some(Duration::from_secs(60)))
        .metrics(
            |m| m.last_applied.map(|l| l.index) == m.last_log_index,
            "every write applied",
        )
        .await
        .expect("applied");
    let last = settled.last_applied;
    println!("  store on disk: {}", mib(dir_bytes(dirs[0].path())));

    phase("build", || async {
        leader.trigger().snapshot().await.expect("trigger");
        leader
            .wait(Some(BUILD_DEADLINE))
            .metrics(|m| m.snapshot == last, "the snapshot is built")
            .await
            .expect("built");
    })
    .await;
    let size = snapshot_bytes(dirs[0].path());
    println!(
        "  snapshot: {} ({} bytes per session)",
        mib(size),
        size / sessions as u64
    );
    // No log is kept behind the snapshot: a new member can only catch up from it.
    phase("purge the log (not snapshot work)", || async {
        let upto = last.expect("applied").index;
        leader.trigger().purge_log(upto).await.expect("purge");
        leader
            .wait(Some(Duration::from_secs(600)))
            .purged(last, "the log is purged")
            .await
            .expect("purged");
    })
    .await;

    let follower = start(2, dirs[1].path(), &nodes).await;
    phase("send in chunks, receive, check, install", || async {
        tokio::time::timeout(
            JOIN_DEADLINE,
            leader.add_learner(2, BasicNode::new("2"), true),
        )
        .await
        .expect("the new member caught up in time")
        .expect("add the new member");
        follower
            .wait(Some(JOIN_DEADLINE))
            .metrics(
                |m| m.snapshot == last,
                "the new member installed the snapshot",
            )
            .await
            .expect("installed");
    })
    .await;
    let applied = follower.metrics().borrow().last_applied;
    assert!(applied >= last, "the new member applied the snapshot");
    println!(
        "  new member: snapshot installed at index {}, {} on disk",
        applied.map_or(0, |l| l.index),
        mib(dir_bytes(dirs[1].path()))
    );
    let _ = follower.shutdown().await;
    let _ = leader.shutdown().await;
}

/// Runs one phase, printing its time, the memory the process held when it began, and the
/// peak it reached during it.
async fn phase<T, F: std::future::Future<Output = T>>(name: &str, work: impl FnOnce() -> F) -> T {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS");
    let started = Instant::now();
    let out = work().await;
    let took = started.elapsed();
    let peak = status_kib("VmHWM");
    println!(
        "{name:<42} {took:>10.2?}   peak RSS {:>10}   (RSS before {}, after {}: {} anonymous)",
        mib(peak * 1024),
        mib(before * 1024),
        mib(status_kib("VmRSS") * 1024),
        mib(status_kib("RssAnon") * 1024),
    );
    out
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The size of the snapshot file a member keeps.
fn snapshot_bytes(dir: &Path) -> u64 {
    dir_bytes(&dir.join("sm-snapshots"))
}

/// Makes the sealed session records the bench stores.
struct Commands<'a> {
    ring: &'a Ring,
    sessions_each: usize,
    client_info: String,
}

/// A session as the fleet stores it (the fields of `actors::session`'s stored form, in
/// order), so each record has a real session's size.
#[derive(Serialize)]
struct StoredSession {
    version: &'static str,
    principal: Principal,
    client_info: String,
    client_capabilities: String,
    log_level: Option<u8>,
    subscriptions: Vec<String>,
    expires_at_ms: u64,
}

impl<'a> Commands<'a> {
    fn new(ring: &'a Ring, plan: &Plan, client_bytes: Option<usize>) -> Self {
        let mut client_info =
            r#"{"name":"claude-code","title":"Claude Code","version":"2.0.14"}"#.to_owned();
        if let Some(n) = client_bytes {
            let pad = n.saturating_sub(client_info.len() + 12);
            client_info = format!(r#"{{"name":"claude-code","pad":"{}"}}"#, "x".repeat(pad));
        }
        Self {
            ring,
            sessions_each: plan.sessions_each,
            client_info,
        }
    }

    /// The create of session `i`, owned by principal `i / sessions_each`.
    fn create(&self, i: usize) -> Command {
        let table = Table::McpSessions;
        let principal = Principal {
            subject: format!("user-{:06}", i / self.sessions_each),
            tenant: Some("acme-corp".to_owned()),
            email: Some(format!("user-{:06}@acme.example", i / self.sessions_each)),
            scopes: vec!["mcp".to_owned(), "mcp:tools".to_owned()],
            issuer: Some("https://login.acme.example/oauth2/default".to_owned()),
        };
        let owner = self
            .ring
            .index
            .hash(&[b"owner", principal.binding().as_bytes()]);
        let id = format!("{i:032x}");
        let key = self
            .ring
            .index
            .hash(&[&[table.byte()], id.as_bytes()])
            .to_vec();
        let value = StoredSession {
            version: "2025-11-25",
            principal,
            client_info: self.client_info.clone(),
            client_capabilities:
                r#"{"roots":{"listChanged":true},"sampling":{},"elicitation":{"form":{},"url":{}}}"#
                    .to_owned(),
            log_level: None,
            subscriptions: Vec::new(),
            expires_at_ms: u64::MAX / 2,
        };
        // The store's value format: a format byte, then postcard.
        let plain = postcard::to_extend(&value, vec![1]).expect("encode");
        let sealed = self.ring.sealer.seal(&storage_key(table, &key), &plain);
        Command::PutOwned {
            table,
            key,
            deadline_ms: Some(u64::MAX / 2),
            sealed,
            owner,
            limit: CAP,
        }
    }
}

/// The members, by id, for the in-process network.
type Nodes = Arc<Mutex<BTreeMap<NodeId, Raft<TypeConfig>>>>;

/// Starts member `id` on a new store in `dir`.
async fn start(id: NodeId, dir: &Path, nodes: &Nodes) -> Raft<TypeConfig> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .open()
        .expect("open sled");
    let log = LogStore::open(dir, &db).expect("log store");
    let machine = StateMachine::open(&db, dir, Changes::default()).expect("state machine");
    // The fleet's Raft settings (raft::Store::open), except that snapshots are built when
    // the bench says so.
    let config = openraft::Config {
        cluster_name: "snapshot-bench".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        snapshot_policy: SnapshotPolicy::Never,
        // The bench purges the log itself, in a phase of its own.
        max_in_snapshot_log_to_keep: u64::MAX / 2,
        install_snapshot_timeout: 60_000,
        snapshot_max_chunk_size: 1024 * 1024,
        ..Default::default()
    }
    .validate()
    .expect("settings");
    let network = Network(nodes.clone());
    let raft = Raft::new(id, Arc::new(config), network, log, machine)
        .await
        .expect("start Raft");
    nodes.lock().expect("nodes").insert(id, raft.clone());
    raft
}

/// Carries messages between members in this process, through postcard as on the wire.
struct Network(Nodes);

struct Peer {
    target: NodeId,
    nodes: Nodes,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Peer {
        Peer {
            target,
            nodes: self.0.clone(),
        }
    }
}

/// `value` encoded and decoded again, as a message between nodes is.
fn wire<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let bytes = postcard::to_stdvec(value).expect("encode");
    postcard::from_bytes(&bytes).expect("decode")
}

// openraft's network trait returns its `RPCError` (over 128 bytes); these helpers return
// the same type so that `?` needs no conversions.
#[allow(clippy::result_large_err)]
impl Peer {
    fn raft<E: std::error::Error>(
        &self,
    ) -> Result<Raft<TypeConfig>, RPCError<NodeId, BasicNode, E>> {
        let nodes = self.nodes.lock().expect("nodes");
        nodes.get(&self.target).cloned().ok_or_else(|| {
            let e = std::io::Error::other("no such member");
            RPCError::Unreachable(Unreachable::new(&e))
        })
    }

    fn remote<T, E: std::error::Error>(
        &self,
        result: Result<T, E>,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.raft()?;
        let reply = raft.append_entries(wire(&rpc)).await;
        self.remote(reply.map(|r| wire(&r)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        let reply = raft.install_snapshot(wire(&rpc)).await;
        self.remote(reply.map(|r| wire(&r)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.raft()?;
        let reply = raft.vote(wire(&rpc)).await;
        self.remote(reply.map(|r| wire(&r)))
    }
}
