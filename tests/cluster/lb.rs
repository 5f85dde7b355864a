//! A real HAProxy in front of a fleet's public listeners, as an operator runs it: round
//! robin, no stickiness, `option redispatch`, short health checks on `/ready`. Its
//! configuration is generated into a temporary directory; its per-server counters and
//! health are read from its stats socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::poll;

/// How long HAProxy may take to start answering on its stats socket.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How many ports to try when the one chosen was taken before HAProxy could bind it.
const BIND_ATTEMPTS: usize = 5;
/// How long a stats request may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// The configuration file's name in the balancer's directory.
const CONFIG: &str = "haproxy.cfg";
/// The stats socket's name in the balancer's directory.
const SOCKET: &str = "stats.sock";
/// The name of the file that gets HAProxy's output.
const LOG: &str = "haproxy.log";

/// The HAProxy binary: on `PATH`, or in the `sbin` directories Debian installs it to,
/// which are not on every user's `PATH`.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

/// A loopback port held open until the load balancer starts, so the public URL can be
/// known (and given to the nodes) before HAProxy binds it.
pub struct Reservation {
    listener: TcpListener,
}

impl Reservation {
    /// Binds `127.0.0.1:0` and keeps the port the OS chose.
    pub fn new() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"),
        }
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("a bound address").port()
    }

    /// Lets the port go and returns it.
    fn release(self) -> u16 {
        self.port()
    }
}

/// One backend server's line of `show stat`.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// `UP`, `DOWN`, `UP 1/2`, `MAINT`, …
    pub status: String,
    /// Times the server was chosen for a request (`lbtot`), redispatches included.
    pub selected: u64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx (`hrsp_*`).
    pub responses: [u64; 5],
    /// Connection attempts that failed (`econ`).
    pub connect_errors: u64,
    /// Responses that failed or were cut (`eresp`).
    pub response_errors: u64,
}

impl ServerStats {
    /// Whether health checks currently say the server may take requests.
    pub fn is_up(&self) -> bool {
        self.status == "UP" || self.status.starts_with("UP ")
    }

    /// Responses of class `class` (2 for 2xx, …).
    pub fn class(&self, class: usize) -> u64 {
        self.responses[class - 1]
    }
}

/// A running HAProxy; killed when dropped.
pub struct Lb {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
}

impl Lb {
    /// Starts HAProxy (`binary`) on the reserved port in front of `backends` (node id,
    /// public address), and waits until it answers on its stats socket. If the port is
    /// taken between its release and HAProxy's bind, tries fresh ports: the nodes' public
    /// URL then no longer names the balancer's port, which only matters as a string (the
    /// token audience), never for routing.
    pub fn start(binary: &Path, reserved: Reservation, backends: &[(u64, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut reserved = Some(reserved);
        for attempt in 1..=BIND_ATTEMPTS {
            let port = reserved.take().unwrap_or_else(Reservation::new).release();
            let config = config(dir.path(), port, backends);
            std::fs::write(dir.path().join(CONFIG), config).expect("write haproxy.cfg");
            match spawn(binary, dir.path()) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        dir,
                        port,
                    }
                }
                Err(e) if e.contains("cannot bind") && attempt < BIND_ATTEMPTS => {
                    eprintln!("haproxy could not bind port {port} (attempt {attempt}): {e}");
                }
                Err(e) => panic!("haproxy did not start: {e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// What HAProxy wrote to its standard error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }

    /// The MCP endpoint through the balancer.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Every backend server's counters and health, by node id.
    pub fn stats(&self) -> Result<BTreeMap<u64, ServerStats>, String> {
        let csv = command(self.dir.path(), "show stat").map_err(|e| format!("show stat: {e}"))?;
        let mut lines = csv.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .ok_or_else(|| format!("show stat without a header: {csv:?}"))?;
        let columns: Vec<&str> = header.split(',').collect();
        let column = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| format!("show stat has no column {name}"))
        };
        let (px, sv, status) = (column("pxname")?, column("svname")?, column("status")?);
        let (lbtot, econ, eresp) = (column("lbtot")?, column("econ")?, column("eresp")?);
        let classes = ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"]
            .map(column)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let mut servers = BTreeMap::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            let field = |i: usize| fields.get(i).copied().unwrap_or("");
            let number = |i: usize| field(i).parse::<u64>().unwrap_or(0);
            let Some(id) = field(sv).strip_prefix("node").and_then(|n| n.parse().ok()) else {
                continue;
            };
            if field(px) != "nodes" {
                continue;
            }
            let mut responses = [0; 5];
            for (slot, &i) in responses.iter_mut().zip(&classes) {
                *slot = number(i);
            }
            servers.insert(
                id,
                ServerStats {
                    status: field(status).to_owned(),
                    selected: number(lbtot),
                    responses,
                    connect_errors: number(econ),
                    response_errors: number(eresp),
                },
            );
        }
        Ok(servers)
    }

    /// Whether health checks say node `id` is up (`false` when the stats are unreadable).
    pub fn is_up(&self, id: u64) -> bool {
        self.stats()
            .ok()
            .and_then(|s| s.get(&id).map(ServerStats::is_up))
            .unwrap_or(false)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration: one frontend on `port`, one backend with a server per node.
fn config(dir: &Path, port: u16, backends: &[(u64, SocketAddr)]) -> String {
    let servers: String = backends
        .iter()
        .map(|(id, addr)| format!("    server node{id} {addr} check\n"))
        .collect();
    format!(
        "\
global
    nbthread 1
    stats socket {socket} mode 600 level admin
    log stderr format raw local0

defaults
    mode http
    # Only requests that ended abnormally (errors, cut connections), with the server and
    # termination state: what a failing test needs to say where a request was lost.
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 500ms
    # A refused connection (a dead node) is retried on another server.
    retries 3
    option redispatch 1

frontend fleet
    bind 127.0.0.1:{port}
    default_backend nodes

# Round robin per request, no cookie, no stick table: any node serves any request.
backend nodes
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 200ms fastinter 100ms downinter 200ms rise 2 fall 2
{servers}",
        socket = dir.join(SOCKET).display(),
    )
}

/// Runs HAProxy in the foreground on the configuration in `dir` and waits until its
/// stats socket answers: it accepts there only once every listener is bound.
fn spawn(binary: &Path, dir: &Path) -> Result<Child, String> {
    let log_path = dir.join(LOG);
    let log = std::fs::File::create(&log_path).expect("create haproxy.log");
    let mut child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(dir.join(CONFIG))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = poll(START_DEADLINE, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(format!("exited with {status}: {}", log())));
        }
        command(dir, "show info").ok().map(|_| Ok(()))
    });
    match started {
        Some(Ok(())) => Ok(child),
        Some(Err(e)) => Err(e),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "no answer on the stats socket within {START_DEADLINE:?}: {}",
                log()
            ))
        }
    }
}

/// Sends one command to the stats socket in `dir` and returns the answer.
fn command(dir: &Path, command: &str) -> std::io::Result<String> {
    let mut socket = UnixStream::connect(dir.join(SOCKET))?;
    socket.set_read_timeout(Some(STATS_TIMEOUT))?;
    socket.set_write_timeout(Some(STATS_TIMEOUT))?;
    socket.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    Ok(answer)
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.kill();
    }
}
