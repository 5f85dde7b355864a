//! A real `mcp-fleet dev` process on a free port with its own data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to print its address.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-fleet")
}

/// A command for the binary with no `MCP_FLEET_*` settings inherited from the caller's
/// environment, so every test sees exactly the configuration it gives.
pub fn command() -> Command {
    command_for(Path::new(binary()))
}

/// [`command`] for another program with mcp-fleet's command line (an example).
pub fn command_for(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MCP_FLEET_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Polls `probe` until it yields a value or `deadline` passes; panics with `what` then.
pub fn eventually<T>(what: &str, deadline: Duration, probe: impl FnMut() -> Option<T>) -> T {
    eventually_or(deadline, probe)
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Waits for `child` to exit within `deadline`, killing it and panicking otherwise.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> ExitStatus {
    let Some(status) = eventually_or(deadline, || child.try_wait().expect("try_wait")) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the process did not exit within {deadline:?}");
    };
    status
}

/// Polls `probe` until it yields a value or `deadline` passes (then `None`).
pub fn eventually_or<T>(deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How to start a server.
#[derive(Default)]
pub struct Builder {
    listen: Option<String>,
    example: Option<&'static str>,
    config: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
}

impl Builder {
    /// Listens on `addr` (`--listen`) instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_owned());
        self
    }

    /// Runs `examples/conformance` (the built-ins plus the conformance fixtures) instead
    /// of `mcp-fleet`.
    pub fn conformance(self) -> Self {
        self.example("conformance")
    }

    /// Runs the program `examples/<name>` (which has mcp-fleet's command line) instead of
    /// `mcp-fleet`.
    pub fn example(mut self, name: &'static str) -> Self {
        self.example = Some(name);
        self
    }

    /// Passes `toml` as the configuration file (`--config`).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Adds `args` to the command line, after the configuration file.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Sets environment variable `key` for the server (the `MCP_FLEET_*` ones included).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts on the data directory `dir` (kept by the caller) instead of a new one.
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Starts the server and waits until it listens.
    pub fn start(self) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut args: Vec<String> = Vec::new();
        if let Some(toml) = &self.config {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, toml).expect("write the config file");
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        args.extend(self.args);
        let mut server = Server {
            program: match self.example {
                Some(name) => crate::examples::example(name),
                None => PathBuf::from(binary()),
            },
            listen: self.listen.unwrap_or_else(|| "127.0.0.1:0".to_owned()),
            data_dir: self.data_dir.unwrap_or_else(|| dir.path().join("data")),
            dir,
            args,
            env: self.env,
            child: None,
            url: String::new(),
            stdout: Arc::default(),
        };
        server.spawn();
        server
    }
}

/// A running `mcp-fleet dev`; the process is killed when this is dropped.
pub struct Server {
    /// The program run: `mcp-fleet` or an example.
    program: PathBuf,
    listen: String,
    dir: TempDir,
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    url: String,
    /// The lines the current process printed so far.
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// A server with the default configuration.
    pub fn start() -> Self {
        Builder::default().start()
    }

    /// A server to configure before starting.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's origin, `http://127.0.0.1:PORT` (or the address given to
    /// [`Builder::listen`]), for other paths.
    pub fn base(&self) -> &str {
        self.url
            .strip_suffix("/mcp")
            .expect("the endpoint ends in /mcp")
    }

    /// Line `index` (from 0) of the current process's standard output, waiting for it
    /// as long as a start may take. Line 0 is the endpoint, line 1 the internal listener.
    pub fn stdout_line(&self, index: usize) -> String {
        eventually_or(START_DEADLINE, || {
            self.stdout.lock().unwrap().get(index).cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "no stdout line {index} within {START_DEADLINE:?}; log:\n{}",
                self.log()
            )
        })
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// The internal listener's address, `127.0.0.1:PORT`, as `cluster --via` takes it.
    pub fn internal(&self) -> String {
        let line = self.stdout_line(1);
        line.strip_prefix("mcp-fleet internal listener on http://")
            .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
            .to_owned()
    }

    /// Stops the process with SIGTERM (graceful shutdown) and returns its exit status;
    /// panics if it is still running after `deadline`.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed: {sent}");
        wait_exit(&mut child, deadline)
    }

    /// Kills the process (no graceful shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The data directory, kept across restarts (`dev` keeps its key there).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Kills the process and starts a new one on the same data directory and arguments.
    /// The new process listens on a new port; see [`Server::url`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log (its standard error) so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let mut child = command_for(&self.program)
            .arg("dev")
            .args(["--listen", &self.listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args)
            // Two workers are plenty for a test and keep many parallel servers light.
            .env("MCP_FLEET_HTTP__WORKERS", "2")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn mcp-fleet");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        self.stdout = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            lines.lock().unwrap().push(line.trim_end().to_owned());
            let _ = tx.send(line);
            // Keep reading so the server never blocks on a full pipe; the lines are kept
            // for `stdout_line`.
            for line in reader.lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(_) => panic!(
                "the server printed no address within {START_DEADLINE:?}; log:\n{}",
                self.log()
            ),
        };
        let url = line
            .trim()
            .strip_prefix("mcp-fleet listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", self.log()));
        assert!(
            url.starts_with("http://127.") && url.ends_with("/mcp"),
            "{url}"
        );
        self.url = url.to_owned();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
