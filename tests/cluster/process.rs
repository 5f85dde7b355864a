//! One `mcp-fleet serve` process ([`NodeProc`]) and the process plumbing the harness
//! needs: a clean environment for the binary, bounded runs of short commands, signals.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::poll;

/// How long a process may take to print its two listening lines.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);
/// How many log lines of a node a failure to start prints.
const LOG_TAIL_LINES: usize = 40;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-fleet")
}

/// A command for the binary with no `MCP_FLEET_*` setting inherited from the caller's
/// environment, so every node sees exactly the configuration the harness gives.
pub(crate) fn command() -> Command {
    command_for(Path::new(binary()))
}

/// [`command`] for another program with mcp-fleet's command line (an example).
pub(crate) fn command_for(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MCP_FLEET_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// One `mcp-fleet serve` process and the directory that outlives it across restarts.
pub struct NodeProc {
    pub(crate) id: u64,
    /// The program run: `mcp-fleet` or an example with its command line.
    pub(crate) program: PathBuf,
    pub(crate) dir: TempDir,
    /// The public listener; port 0 until the first start reports the real one.
    pub(crate) public: SocketAddr,
    /// The internal (Raft) listener; port 0 until the first start reports the real one.
    pub(crate) internal: SocketAddr,
    pub(crate) child: Option<Child>,
    /// Whether the harness made it a member (`init` or `join`) and has not removed it.
    pub(crate) member: bool,
    /// Whether the process is stopped by SIGSTOP (see [`Cluster::pause`]).
    pub(crate) paused: bool,
}

impl NodeProc {
    pub(crate) fn new(id: u64, program: PathBuf) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        Self {
            id,
            program,
            dir: tempfile::tempdir().expect("a temporary directory"),
            public: any,
            internal: any,
            child: None,
            member: false,
            paused: false,
        }
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.public)
    }

    /// The public listener's origin, for `/ready`, `/health` and other paths.
    pub fn base(&self) -> String {
        format!("http://{}", self.public)
    }

    /// The public listener's address, as a load balancer's backend.
    pub fn public(&self) -> SocketAddr {
        self.public
    }

    /// The internal listener's address, as given to `--peers`, `--via` and `--raft-addr`.
    pub fn internal(&self) -> SocketAddr {
        self.internal
    }

    /// The internal listener's origin.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the process is running (started and not killed by the harness).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The operating system's id of the running process.
    pub(crate) fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.id))
            .id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The last `lines` lines the node wrote to its standard error, over all its runs.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `mcp-fleet serve` on the node's current addresses and data directory, with
    /// `--node-id` when `node_id` is given, then `args`, with `env`.
    pub(crate) fn serve_command(
        &self,
        node_id: Option<u64>,
        env: &[(String, String)],
        args: &[String],
    ) -> Command {
        let mut cmd = command_for(&self.program);
        cmd.arg("serve");
        if let Some(node_id) = node_id {
            cmd.args(["--node-id", &node_id.to_string()]);
        }
        cmd.args(["--listen", &self.public.to_string()])
            .args(["--raft-listen", &self.internal.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the process on the node's current addresses (port 0 the first time) and waits
    /// until it prints both listeners; records the ports it reports.
    pub(crate) fn spawn(
        &mut self,
        env: &[(String, String)],
        args: &[String],
    ) -> Result<(), String> {
        self.spawn_as(Some(self.id), env, args)
    }

    /// Like [`NodeProc::spawn`], with `--node-id` only when `node_id` is given.
    pub(crate) fn spawn_as(
        &mut self,
        node_id: Option<u64>,
        env: &[(String, String)],
        args: &[String],
    ) -> Result<(), String> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the node log");
        let mut child = self
            .serve_command(node_id, env, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn mcp-fleet serve");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..2 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || tx.send(line).is_err() {
                    return;
                }
            }
            // Keep draining so the node never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let parsed = read_addresses(&rx, self.id);
        match parsed {
            Ok((public, internal)) => {
                self.public = public;
                self.internal = internal;
                Ok(())
            }
            Err(e) => {
                self.kill();
                Err(format!(
                    "{e}; node {} log:\n{}",
                    self.id,
                    self.log_tail(LOG_TAIL_LINES)
                ))
            }
        }
    }

    /// Kills the process (SIGKILL: no graceful shutdown) and reaps it.
    pub(crate) fn kill(&mut self) {
        // SIGKILL ends a stopped process too.
        self.paused = false;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (graceful shutdown: drain, step down) and waits, up to `deadline`,
    /// for the process to exit; SIGKILLs it after that. Returns whether it exited in time.
    pub(crate) fn stop(&mut self, deadline: Duration) -> bool {
        assert!(!self.paused, "node {} is paused; resume it first", self.id);
        let Some(mut child) = self.child.take() else {
            return true;
        };
        send_signal(child.id(), "TERM");
        let exited = poll(deadline, || child.try_wait().ok().flatten()).is_some();
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
        exited
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // Before the temporary directory goes, so no process writes into a removed tree.
        self.kill();
    }
}

/// Reads the two listening lines a node prints first, within [`LISTEN_DEADLINE`], and
/// returns the public and internal addresses they name.
fn read_addresses(
    lines: &mpsc::Receiver<String>,
    id: u64,
) -> Result<(SocketAddr, SocketAddr), String> {
    let until = Instant::now() + LISTEN_DEADLINE;
    let next = |which: &str| {
        let left = until.saturating_duration_since(Instant::now());
        lines
            .recv_timeout(left)
            .map_err(|_| format!("node {id} printed no {which} line within {LISTEN_DEADLINE:?}"))
    };
    let public = next("public listener")?;
    let internal = next("internal listener")?;
    Ok((
        parse_line(&public, "mcp-fleet listening on http://", "/mcp")?,
        parse_line(&internal, "mcp-fleet internal listener on http://", "")?,
    ))
}

/// Reads `pipe` to its end on another thread.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `cmd` with no standard input and its output captured; kills it and fails if it
/// runs past `deadline`.
pub fn run_bounded(mut cmd: Command, deadline: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status: Option<ExitStatus> = poll(deadline, || child.try_wait().expect("try_wait"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = stderr.join().unwrap_or_default();
        return Err(format!(
            "ran past {deadline:?}; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        ));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Sends signal `name` (`STOP`, `CONT`, `TERM`) to process `pid` with kill(1), which
/// keeps the harness free of `unsafe` and of a libc dependency.
pub(crate) fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run kill -{name} {pid}: {e}"));
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// The address in `line`, which must read `{prefix}ADDR{suffix}`.
fn parse_line(line: &str, prefix: &str, suffix: &str) -> Result<SocketAddr, String> {
    line.trim()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| format!("unexpected line {line:?}, expected {prefix}ADDR{suffix}"))
}
