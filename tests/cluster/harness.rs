//! Real `mcp-fleet serve` processes forming one Raft group: each on OS-chosen ports with
//! its own data directory, started, killed and restarted by a [`Cluster`].
//!
//! Every wait polls observable state (`/ready`, `/cluster`, process output) against a
//! deadline; a wait that times out panics with the tail of every node's log.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client;
use process::{command, send_signal};
pub use process::{run_bounded, NodeProc};

// A child module by path, so that a bench that includes this file by `#[path]` gets it too.
#[path = "process.rs"]
mod process;

/// How long a node may take to become ready, or the cluster to agree on a leader. Generous:
/// several clusters may share two cores while tests run in parallel.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a `cluster` subcommand may run (`join` waits for the learner to catch up).
const CLI_DEADLINE: Duration = Duration::from_secs(120);
/// How often a wait probes.
const POLL: Duration = Duration::from_millis(20);
/// How many log lines of each node a timeout prints.
const LOG_TAIL_LINES: usize = 40;

/// `bytes` random bytes from the operating system, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `series` (a metric name, with its labels if it has any) in Prometheus
/// text, as [`Cluster::try_metrics`] returns it.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls `probe` until it yields a value or `deadline` passes.
pub fn poll<T>(deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// How to start a cluster.
#[derive(Default)]
pub struct Builder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    program: Option<PathBuf>,
}

impl Builder {
    /// Sets environment variable `key` (e.g. `MCP_FLEET_RAFT__SNAPSHOT_AFTER`) on every node,
    /// including nodes added or restarted later.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds `args` (e.g. `["--auth", "jwt"]`) to every node's `serve` command line,
    /// including nodes added or restarted later.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs `program` (an example with mcp-fleet's command line) on every node instead of
    /// `mcp-fleet`.
    pub fn program(mut self, program: PathBuf) -> Self {
        self.program = Some(program);
        self
    }

    /// Starts nodes `1..=n`, initialises them as one group and waits until every node is
    /// ready and all agree on a leader.
    pub fn start(self, n: u64) -> Cluster {
        assert!(n >= 1, "a cluster has at least one node");
        let secret = random_hex(24);
        let mut env = vec![
            ("MCP_FLEET_ENCRYPTION_KEY".to_owned(), random_hex(32)),
            ("MCP_FLEET_CLUSTER_SECRET".to_owned(), secret.clone()),
            // Two workers are plenty for a test and keep several nodes light on two cores.
            ("MCP_FLEET_HTTP__WORKERS".to_owned(), "2".to_owned()),
        ];
        env.extend(self.env);
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            secret,
            env,
            args: self.args,
            program: self
                .program
                .unwrap_or_else(|| PathBuf::from(process::binary())),
        };
        for id in 1..=n {
            cluster.spawn_new(id);
        }
        let peers = cluster
            .nodes
            .values()
            .map(|node| format!("{}={}", node.id, node.internal))
            .collect::<Vec<_>>()
            .join(",");
        // The same membership on every node is safe, and is what a deployment script does.
        for id in 1..=n {
            let via = cluster.node(id).internal().to_string();
            let out = cluster.cli(&["init", "--via", &via, "--peers", &peers]);
            cluster.assert_success(&out, &format!("cluster init via node {id}"));
        }
        for node in cluster.nodes.values_mut() {
            node.member = true;
        }
        for id in 1..=n {
            cluster.wait_ready(id);
        }
        cluster.leader();
        cluster
    }
}

/// Running nodes of one Raft group sharing an encryption key and a cluster secret; every
/// process is killed when this is dropped.
pub struct Cluster {
    nodes: BTreeMap<u64, NodeProc>,
    secret: String,
    /// What every node gets in its environment: the secrets, then the builder's settings.
    env: Vec<(String, String)>,
    /// What every node gets on its command line after the harness's own flags.
    args: Vec<String>,
    /// The program every node runs: `mcp-fleet` or an example.
    program: PathBuf,
}

impl Cluster {
    /// Starts a cluster of `n` nodes with default settings; see [`Builder::start`].
    pub fn start(n: u64) -> Self {
        Builder::default().start(n)
    }

    /// A cluster to configure before starting.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The cluster secret, for the internal listener's `Authorization: Bearer`.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Node `id`; panics if the cluster never had it.
    #[track_caller]
    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The ids of every node, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of the running members (nodes not yet joined, already removed or paused
    /// are not).
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|node| node.is_running() && node.member && !node.paused)
            .map(|node| node.id)
            .collect()
    }

    /// The ids of the running members other than `id` (the survivors of a leader, say).
    pub fn live_except(&self, id: u64) -> Vec<u64> {
        self.live()
            .into_iter()
            .filter(|&other| other != id)
            .collect()
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .kill();
    }

    /// SIGKILLs every node.
    pub fn kill_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill();
        }
    }

    /// Stops node `id` with SIGSTOP: its sockets stay open but it answers nothing, as if
    /// cut off by a partition. [`Cluster::live`] leaves it out until [`Cluster::resume`].
    pub fn pause(&mut self, id: u64) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        assert!(!node.paused, "node {id} is already paused");
        send_signal(node.pid(), "STOP");
        node.paused = true;
    }

    /// Lets a node stopped by [`Cluster::pause`] run again (SIGCONT).
    pub fn resume(&mut self, id: u64) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        assert!(node.paused, "node {id} is not paused");
        send_signal(node.pid(), "CONT");
        node.paused = false;
    }

    /// Sends signal `name` (`TERM`, `STOP`, …) to node `id` without waiting for anything.
    pub fn signal(&self, id: u64, name: &str) {
        send_signal(self.node(id).pid(), name);
    }

    /// Shuts node `id` down gracefully (SIGTERM) and waits for it to exit; panics, with
    /// the logs, if it takes longer than [`READY_DEADLINE`] (it is SIGKILLed then).
    pub fn stop(&mut self, id: u64) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        if !node.stop(READY_DEADLINE) {
            panic!(
                "node {id} did not exit within {READY_DEADLINE:?} of SIGTERM\n{}",
                self.logs()
            );
        }
    }

    /// Starts node `id` again on the same data directory and the same ports, without
    /// `--peers`: it rejoins from what it stored. Waits only until it listens; see
    /// [`Cluster::wait_ready`].
    pub fn restart(&mut self, id: u64) {
        self.restart_as(id, Some(id));
    }

    /// Like [`Cluster::restart`], running `program` from now on (a build with another
    /// catalog or version): one step of a rolling upgrade.
    pub fn restart_program(&mut self, id: u64, program: PathBuf) {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .program = program;
        self.restart_as(id, Some(id));
    }

    /// Like [`Cluster::restart`], but with only its listeners and data directory: no
    /// `--node-id`, as a README reader restarts a node.
    pub fn restart_without_id(&mut self, id: u64) {
        self.restart_as(id, None);
    }

    fn restart_as(&mut self, id: u64, node_id: Option<u64>) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        node.kill();
        let (public, internal) = (node.public, node.internal);
        if let Err(e) = node.spawn_as(node_id, &self.env, &self.args) {
            panic!("restarting node {id}: {e}");
        }
        assert_eq!(
            (node.public, node.internal),
            (public, internal),
            "node {id} came back on other ports"
        );
    }

    /// Runs `serve` for node `id` (stopped) on its data directory and addresses, with
    /// `--node-id` when `node_id` is given, expecting it to refuse: returns what it did once
    /// it exits; panics if it is still running after [`READY_DEADLINE`].
    pub fn serve_refused(&self, id: u64, node_id: Option<u64>) -> Output {
        let node = self.node(id);
        assert!(!node.is_running(), "node {id} is running");
        let cmd = node.serve_command(node_id, &self.env, &self.args);
        run_bounded(cmd, READY_DEADLINE).unwrap_or_else(|e| {
            panic!("`serve` for node {id} as {node_id:?}: {e}\n{}", self.logs())
        })
    }

    /// Like [`Cluster::restart`], with `env` added to (or replacing entries of) what
    /// every node gets, for this start only: a node restarted with other keys.
    pub fn restart_with(&mut self, id: u64, env: &[(&str, &str)]) {
        let mut own = self.env.clone();
        own.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        node.kill();
        if let Err(e) = node.spawn(&own, &self.args) {
            panic!("restarting node {id}: {e}");
        }
    }

    /// Sets environment variable `key` for every node started or restarted from now on
    /// (a rolling restart onto a new key ring).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The value of `key` in what every node gets, e.g. `MCP_FLEET_ENCRYPTION_KEY`.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Runs `mcp-fleet keys ARGS…` with `env` and nothing else configured; panics if it
    /// runs past a deadline.
    pub fn keys(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = command();
        cmd.arg("keys").args(args).envs(env.iter().copied());
        run_bounded(cmd, CLI_DEADLINE)
            .unwrap_or_else(|e| panic!("`mcp-fleet keys {}`: {e}", args.join(" ")))
    }

    /// `/ready` of node `id`: its status and body, or `None` when it does not answer.
    pub fn readiness(&self, id: u64) -> Option<(u16, String)> {
        let url = format!("{}/ready", self.node(id).base());
        client::get(&url, &[]).ok().map(|r| (r.status, r.body))
    }

    /// Starts a fresh, uninitialised node `id` and adds it with `cluster join` through the
    /// leader; returns once the command reports it a voter.
    pub fn add_node(&mut self, id: u64) {
        self.start_unjoined(id);
        let out = self.join(id);
        self.assert_success(&out, &format!("cluster join of node {id}"));
    }

    /// Starts a fresh node `id` that belongs to no group: it waits to be added.
    pub fn start_unjoined(&mut self, id: u64) {
        assert!(!self.nodes.contains_key(&id), "node {id} already exists");
        self.spawn_new(id);
    }

    /// Runs `cluster join` of the started node `id` through the leader and returns what the
    /// command did; the node counts as a member if it succeeded.
    pub fn join(&mut self, id: u64) -> Output {
        let leader = self.leader();
        let via = self.node(leader).internal().to_string();
        let raft_addr = self.node(id).internal().to_string();
        let id_arg = id.to_string();
        let out = self.cli(&[
            "join",
            "--via",
            &via,
            "--node-id",
            &id_arg,
            "--raft-addr",
            &raft_addr,
        ]);
        if out.status.success() {
            self.nodes.get_mut(&id).expect("started").member = true;
        }
        out
    }

    /// Removes node `id` from the group with `cluster leave` through the leader, then
    /// kills it: a removed node has no part left to play.
    pub fn remove_node(&mut self, id: u64) {
        self.leave(id);
        self.kill(id);
    }

    /// Removes node `id` from the group with `cluster leave` through the leader and leaves
    /// its process running.
    pub fn leave(&mut self, id: u64) {
        let leader = self.leader();
        let via = self.node(leader).internal().to_string();
        let out = self.cli(&["leave", "--via", &via, "--node-id", &id.to_string()]);
        self.assert_success(
            &out,
            &format!("cluster leave of node {id} via node {leader}"),
        );
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .member = false;
    }

    fn spawn_new(&mut self, id: u64) {
        let mut node = NodeProc::new(id, self.program.clone());
        if let Err(e) = node.spawn(&self.env, &self.args) {
            panic!("starting node {id}: {e}");
        }
        self.nodes.insert(id, node);
    }

    /// Runs `mcp-fleet cluster ARGS…` with the cluster secret and returns what it did;
    /// panics if it runs past a deadline.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = command();
        cmd.arg("cluster")
            .args(args)
            .env("MCP_FLEET_CLUSTER_SECRET", &self.secret);
        run_bounded(cmd, CLI_DEADLINE).unwrap_or_else(|e| {
            panic!(
                "`mcp-fleet cluster {}`: {e}\n{}",
                args.join(" "),
                self.logs()
            )
        })
    }

    /// Runs `mcp-fleet secrets ARGS…` with the cluster secret and returns what it did;
    /// panics if it runs past a deadline.
    pub fn secrets(&self, args: &[&str]) -> Output {
        let mut cmd = command();
        cmd.arg("secrets")
            .args(args)
            .env("MCP_FLEET_CLUSTER_SECRET", &self.secret);
        run_bounded(cmd, CLI_DEADLINE).unwrap_or_else(|e| {
            panic!(
                "`mcp-fleet secrets {}`: {e}\n{}",
                args.join(" "),
                self.logs()
            )
        })
    }

    /// [`Cluster::secrets`] with `input` on standard input.
    pub fn secrets_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = command()
            .arg("secrets")
            .args(args)
            .env("MCP_FLEET_CLUSTER_SECRET", &self.secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcp-fleet secrets");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("write standard input");
        drop(stdin);
        let id = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_DEADLINE) {
            Ok(out) => out.expect("mcp-fleet secrets"),
            Err(_) => {
                send_signal(id, "KILL");
                panic!(
                    "`mcp-fleet secrets {}` ran past {CLI_DEADLINE:?}\n{}",
                    args.join(" "),
                    self.logs()
                )
            }
        }
    }

    /// Panics, with the command's output and the nodes' logs, unless `out` is a success.
    #[track_caller]
    pub fn assert_success(&self, out: &Output, what: &str) {
        assert!(
            out.status.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// `/cluster` of node `id`, or `None` if it does not answer 200 with JSON.
    pub fn try_status(&self, id: u64) -> Option<Value> {
        let url = format!("{}/cluster", self.node(id).internal_url());
        let bearer = format!("Bearer {}", self.secret);
        let reply = client::get(&url, &[("Authorization", &bearer)]).ok()?;
        (reply.status == 200)
            .then(|| serde_json::from_str(&reply.body).ok())
            .flatten()
    }

    /// `/metrics` of node `id` (Prometheus text), or `None` if it does not answer 200.
    pub fn try_metrics(&self, id: u64) -> Option<String> {
        let url = format!("{}/metrics", self.node(id).internal_url());
        let bearer = format!("Bearer {}", self.secret);
        let reply = client::get(&url, &[("Authorization", &bearer)]).ok()?;
        (reply.status == 200).then_some(reply.body)
    }

    /// `/cluster` of node `id`; waits (bounded) for it to answer.
    pub fn status(&self, id: u64) -> Value {
        self.eventually(
            &format!("node {id} to answer /cluster"),
            READY_DEADLINE,
            || self.try_status(id),
        )
    }

    /// Whether node `id`'s `/ready` answers 200.
    pub fn is_ready(&self, id: u64) -> bool {
        let url = format!("{}/ready", self.node(id).base());
        client::get(&url, &[]).is_ok_and(|reply| reply.status == 200)
    }

    /// Waits until node `id`'s `/ready` answers 200: it knows a leader and has applied
    /// what it knows to be committed.
    pub fn wait_ready(&self, id: u64) {
        self.eventually(&format!("node {id} to be ready"), READY_DEADLINE, || {
            self.is_ready(id).then_some(())
        });
    }

    /// The leader every running node agrees on, waiting (bounded) until they do and the
    /// leader itself reports being leader.
    pub fn leader(&self) -> u64 {
        self.eventually(
            "the running nodes to agree on a leader",
            READY_DEADLINE,
            || self.agreed_leader(),
        )
    }

    fn agreed_leader(&self) -> Option<u64> {
        let live = self.live();
        let mut leader = None;
        for &id in &live {
            let said = self.try_status(id)?["leader_id"].as_u64()?;
            if *leader.get_or_insert(said) != said {
                return None;
            }
        }
        let leader = leader.filter(|l| live.contains(l))?;
        (self.try_status(leader)?["state"] == "Leader").then_some(leader)
    }

    /// Waits until every running node has applied at least log index `index`.
    pub fn wait_applied(&self, index: u64) {
        for id in self.live() {
            self.eventually(
                &format!("node {id} to apply index {index}"),
                READY_DEADLINE,
                || {
                    let applied = self.try_status(id)?["applied_index"].as_u64()?;
                    (applied >= index).then_some(())
                },
            );
        }
    }

    /// Polls `probe` until it yields a value; after `deadline`, panics naming `what`, with
    /// the tail of every node's log.
    #[track_caller]
    pub fn eventually<T>(
        &self,
        what: &str,
        deadline: Duration,
        probe: impl FnMut() -> Option<T>,
    ) -> T {
        poll(deadline, probe).unwrap_or_else(|| {
            panic!(
                "timed out after {deadline:?} waiting for {what}\n{}",
                self.logs()
            )
        })
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .values()
            .map(|node| {
                let state = match (node.is_running(), node.paused) {
                    (true, true) => "paused",
                    (true, false) => "running",
                    (false, _) => "stopped",
                };
                format!(
                    "--- node {} ({state}) log tail ---\n{}\n",
                    node.id,
                    node.log_tail(LOG_TAIL_LINES)
                )
            })
            .collect()
    }
}
