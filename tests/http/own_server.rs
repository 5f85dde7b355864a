//! README's "Your own server", run as written: its code blocks are read from README.md,
//! so the section cannot drift from what this test runs. Files are written as shown,
//! commands run through `bash` as shown, servers run until the next one starts, and the
//! Python SDK calls the new tool, anonymously under `dev` and with a bearer token from the
//! local issuer under `serve`, printing what the README says it prints.
//!
//! Only what must differ is substituted: the checkout's path, the issuer's URL, the
//! token, the ports (0: the OS picks), the Python interpreter (the project's `.venv`).
//! Builds run offline in this checkout's target directory, with its `[profile.dev]`
//! settings, so the dependencies this checkout built already are reused: mcp-fleet itself
//! (a path dependency, built apart from this checkout's own) and the new crate compile.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::harness::{command_for, eventually, wait_exit};
use crate::issuer::{Issuer, Key};

/// The README section this test runs.
const SECTION: &str = "## Your own server";
/// Where the README's crate finds its mcp-fleet checkout.
const CHECKOUT: &str = "../mcp-fleet";
/// The README's placeholder issuer.
const ISSUER: &str = "https://login.acme.com/";
/// The README's placeholder token.
const TOKEN: &str = "'eyJ…'";
/// The README's public URL: a client's URL while a server runs.
const URL: &str = "http://127.0.0.1:8080/mcp";
/// The README's listen addresses: port 0 here.
const ADDRESSES: [&str; 2] = ["127.0.0.1:8080", "127.0.0.1:7000"];
/// The subject of the token the test issues; the README says who the token belongs to.
const SUBJECT: &str = "alice";
/// How long one command may run: the first build of a crate may compile mcp-fleet and
/// more on a busy machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(1200);
/// How long a server may take to listen and report ready.
const SERVER_DEADLINE: Duration = Duration::from_secs(180);

/// One step of the section: a file to write, or shell commands to run.
#[derive(Debug)]
enum Step {
    File { name: String, text: String },
    Commands(String),
}

/// The text of section `heading` of `readme`, up to the next `## ` heading.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let rest = &readme[start + 1 + heading.len()..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// The section's code blocks in order. An `sh` block is commands; any other block is a
/// file, named by the last `` `name` `` of the prose line just before it, which must end
/// with a colon.
fn steps(section: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut block: Option<(String, String)> = None;
    let mut prose = "";
    for line in section.lines() {
        match &mut block {
            None => {
                if let Some(lang) = line.strip_prefix("```") {
                    block = Some((lang.trim().to_owned(), String::new()));
                } else if !line.trim().is_empty() {
                    prose = line.trim();
                }
            }
            Some((lang, text)) if line.trim_end() == "```" => {
                let lang = lang.split(',').next().unwrap_or_default();
                if lang == "sh" {
                    steps.push(Step::Commands(std::mem::take(text)));
                } else {
                    let name = prose
                        .strip_suffix(':')
                        .and_then(|p| p.rsplit('`').nth(1))
                        .unwrap_or_else(|| {
                            panic!("a {lang} block follows {prose:?}, which names no file")
                        });
                    steps.push(Step::File {
                        name: name.to_owned(),
                        text: std::mem::take(text),
                    });
                }
                block = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(block.is_none(), "an unclosed code block in {SECTION}");
    steps
}

/// The commands of an `sh` block, continuation lines joined, each with its trailing
/// comment (if any) apart.
fn commands(block: &str) -> Vec<(String, Option<String>)> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| match comment_start(line) {
            Some(i) => (
                line[..i].trim().to_owned(),
                Some(line[i + 1..].trim().to_owned()),
            ),
            None => (line.to_owned(), None),
        })
        .collect()
}

/// Where the comment of a shell line starts: a `#` after a blank, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut previous) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return Some(i),
            _ => {}
        }
        previous = c;
    }
    None
}

/// A server started by the section, with its standard output collected.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The section being run: where it is, its environment, its server.
struct Run {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    issuer: Issuer,
    python: PathBuf,
    /// The running server and its MCP URL.
    server: Option<(Running, String)>,
    /// Files shown so far, rewritten before each command when their text (which may name
    /// the running server) changed.
    files: Vec<(PathBuf, String)>,
    logs: PathBuf,
}

impl Run {
    /// `text` with what must differ here substituted.
    fn adapt(&self, text: &str) -> String {
        let checkout = env!("CARGO_MANIFEST_DIR");
        let mut text = text
            .replace(CHECKOUT, checkout)
            .replace(ISSUER, self.issuer.url());
        if let Some((_, url)) = &self.server {
            text = text.replace(URL, url);
            if text.contains(TOKEN) {
                let token = self.issuer.token(Key::Rsa1, url).subject(SUBJECT).sign();
                text = text.replace(TOKEN, &format!("'{token}'"));
            }
        }
        for address in ADDRESSES {
            text = text.replace(address, "127.0.0.1:0");
        }
        match text.strip_prefix("python3 ") {
            Some(rest) => format!("{} {rest}", self.python.display()),
            None => text,
        }
    }

    /// `bash -c command` in the current directory with the section's environment.
    fn bash(&self, command: &str) -> Command {
        // No MCP_FLEET_* from the caller's environment, and none of the variables `cargo
        // test` sets for this crate: the section's cargo builds its own crate.
        let mut cmd = command_for(Path::new("bash"));
        crate::examples::without_crate_env(&mut cmd)
            .arg("-c")
            .arg(command)
            .current_dir(&self.dir)
            .envs(&self.env)
            .stdin(Stdio::null());
        cmd
    }

    /// Writes the files shown so far as they read now (a URL may name the running server).
    fn write_files(&mut self) {
        let files = std::mem::take(&mut self.files);
        for (path, text) in &files {
            let text = self.adapt(text);
            // Unchanged files keep their times, so cargo does not rebuild for nothing.
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(path, text).expect("write a file of the section");
            }
        }
        self.files = files;
    }

    /// Runs one command of the section: `cd` and `export` change what later commands see,
    /// `dev` and `serve` replace the running server, anything else runs to its end; a
    /// call prints what its comment (`expected`) says.
    fn run(&mut self, command: &str, expected: Option<&str>) {
        self.write_files();
        let words: Vec<&str> = command.split_whitespace().collect();
        if let ["cd", dir] = words[..] {
            self.dir = self.dir.join(dir);
            return;
        }
        if let Some(assignment) = command.strip_prefix("export ") {
            let (name, _) = assignment.split_once('=').expect("export NAME=VALUE");
            let print = format!("{}; printf '%s' \"${name}\"", self.adapt(command));
            let value = self.output(&print);
            assert!(!value.is_empty(), "{command} set nothing");
            self.env.insert(name.to_owned(), value);
            return;
        }
        let serves = words
            .iter()
            .skip_while(|w| **w != "--")
            .any(|w| *w == "dev" || *w == "serve");
        if serves {
            self.serve(command);
            return;
        }
        let printed = self.output(&self.adapt(command));
        if command.starts_with("python3 ") {
            let expected = expected.expect("the README says what the call prints");
            assert_eq!(printed.trim(), expected, "what `{command}` printed");
        }
    }

    /// Runs `command` to its end; returns its standard output, panicking on failure.
    fn output(&self, command: &str) -> String {
        let out = self.logs.join("out");
        let err = self.logs.join("err");
        let mut child = self
            .bash(command)
            .stdout(std::fs::File::create(&out).expect("an output file"))
            .stderr(std::fs::File::create(&err).expect("an error file"))
            .spawn()
            .expect("run bash");
        let status = wait_exit(&mut child, COMMAND_DEADLINE);
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        assert!(
            status.success(),
            "`{command}` failed ({status}):\n{stdout}\n{stderr}\n{}",
            self.server_log()
        );
        stdout
    }

    /// Stops the running server, if any, and starts `command` in its place.
    fn serve(&mut self, command: &str) {
        self.server = None;
        let log = std::fs::File::create(self.logs.join("server.log")).expect("a log file");
        let mut child = self
            .bash(&format!("exec {}", self.adapt(command)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("mcp-fleet listening on ") {
                    let _ = tx.send(url.to_owned());
                }
                collected.lock().unwrap().push(line);
            }
        });
        let running = Running { child, lines };
        let url = rx.recv_timeout(SERVER_DEADLINE).unwrap_or_else(|_| {
            panic!(
                "`{command}` printed no endpoint in {SERVER_DEADLINE:?}; stdout: {:?}\n{}",
                running.lines.lock().unwrap(),
                self.server_log()
            )
        });
        let ready = format!("{}/ready", url.trim_end_matches("/mcp"));
        eventually(&format!("{ready} to answer 200"), SERVER_DEADLINE, || {
            (crate::client::get(&ready, &[]).status == 200).then_some(())
        });
        self.server = Some((running, url));
    }

    /// The running server's standard error, for failure messages.
    fn server_log(&self) -> String {
        let log = std::fs::read_to_string(self.logs.join("server.log")).unwrap_or_default();
        format!("server log:\n{log}")
    }
}

#[test]
fn the_readme_takes_a_new_crate_to_an_authenticated_fleet_node_serving_its_tool() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = section(&readme, SECTION);
    for placeholder in [CHECKOUT, ISSUER, TOKEN, URL] {
        assert!(
            section.contains(placeholder),
            "{SECTION} no longer shows {placeholder:?}: update this test with it"
        );
    }
    let steps = steps(section);
    let python = crate::python::venv_python();

    let root = tempfile::tempdir().expect("a temporary directory");
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).expect("a log directory");
    // This checkout's target directory and dev profile, so what it built is reused (a
    // user's first build compiles everything: README says how long that takes). Cargo
    // reads this file from any directory below `root`.
    let manifest = include_str!("../../Cargo.toml");
    let profile = &manifest[manifest
        .find("[profile.dev]")
        .expect("Cargo.toml has a [profile.dev]")..];
    let own_opt_level = profile
        .lines()
        .take_while(|l| !l.starts_with("[profile.dev.package"))
        .find_map(|l| l.strip_prefix("opt-level = "))
        .unwrap_or("0");
    std::fs::create_dir(root.path().join(".cargo")).expect("a .cargo directory");
    std::fs::write(
        root.path().join(".cargo/config.toml"),
        // mcp-fleet is a workspace member here and a dependency there: keep its level.
        format!("{profile}\n[profile.dev.package.mcp-fleet]\nopt-level = {own_opt_level}\n"),
    )
    .expect("write the cargo configuration");
    let target = Path::new(env!("CARGO_BIN_EXE_mcp-fleet"))
        .ancestors()
        .nth(2)
        .expect("the target directory");
    let env = BTreeMap::from([
        ("CARGO_TARGET_DIR".to_owned(), target.display().to_string()),
        ("CARGO_NET_OFFLINE".to_owned(), "true".to_owned()),
        // `dev` listens on 127.0.0.1:8080 unless told: port 0 here.
        ("MCP_FLEET_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("MCP_FLEET_HTTP__WORKERS".to_owned(), "2".to_owned()),
    ]);
    let mut run = Run {
        dir: root.path().to_owned(),
        env,
        issuer: Issuer::start(),
        python,
        server: None,
        files: Vec::new(),
        logs,
    };
    let mut calls = 0;
    for step in steps {
        match step {
            Step::File { name, text } => {
                run.files.push((run.dir.join(name), text));
                run.write_files();
            }
            Step::Commands(block) => {
                for (command, comment) in commands(&block) {
                    calls += usize::from(command.starts_with("python3 "));
                    run.run(&command, comment.as_deref());
                }
            }
        }
    }
    assert_eq!(calls, 2, "one call under dev, one under serve");
    let (_, url) = run
        .server
        .as_ref()
        .expect("the section ends with a server running");
    // The last server is the authenticated node: without a token it refuses.
    let anonymous =
        crate::client::Modern::call("shout", serde_json::json!({ "text": "x" })).send(url);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
}

#[test]
fn shell_comments_are_found_outside_quotes_only() {
    assert_eq!(
        commands("python3 call.py    # alice: HELLO\nexport A='x # y'\ncd b\n# alone\n"),
        [
            (
                "python3 call.py".to_owned(),
                Some("alice: HELLO".to_owned())
            ),
            ("export A='x # y'".to_owned(), None),
            ("cd b".to_owned(), None),
        ]
    );
    assert_eq!(
        commands("a \\\n  b"),
        [("a    b".to_owned(), None)],
        "continuations are joined"
    );
}
