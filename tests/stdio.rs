//! `mcp-fleet stdio`: one JSON-RPC message per line on standard input and output; bad lines
//! get JSON-RPC errors and the server keeps serving.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

#[path = "support/examples.rs"]
mod examples;
#[path = "support/upstream.rs"]
mod upstream;

/// A running `stdio` of `examples/conformance` (the built-ins plus the fixtures), killed
/// on drop.
struct StdioServer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Holds the server's log (its standard error).
    dir: tempfile::TempDir,
}

impl StdioServer {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with `env` added to its environment.
    fn start_with(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(examples::example("conformance"));
        command
            .arg("stdio")
            .env_remove("MCP_FLEET_BIN")
            .envs(env.iter().copied());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("stderr")).expect("a log file");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start mcp-fleet stdio");
        let stdin = child.stdin.take().expect("stdin");
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            dir,
        }
    }

    /// What the server logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write a line");
        self.stdin.flush().expect("flush");
    }

    /// The next message the server writes, within a deadline.
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(15))
            .expect("a line from the server in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bad_lines_get_errors_and_the_server_goes_on() {
    let mut server = StdioServer::start();
    server.send("{not json");
    let reply = server.next();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], Value::Null);

    server.send(r#"{"jsonrpc":"2.0","id":1,"method":7}"#);
    assert_eq!(server.next()["error"]["code"], -32600);

    // Neither a session nor 2026-07-28 `_meta`: the client must start one way or the other.
    server.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let reply = server.next();
    assert_eq!(reply["id"], 2);
    assert_eq!(reply["error"]["code"], -32600, "{reply}");

    // A 2026-07-28 request with an unsupported version names the supported ones.
    let meta = json!({ "io.modelcontextprotocol/protocolVersion": "1999-01-01",
                       "io.modelcontextprotocol/clientCapabilities": {} });
    let request = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list",
                          "params": { "_meta": meta } });
    server.send(&request.to_string());
    let reply = server.next();
    assert_eq!(reply["error"]["code"], -32022, "{reply}");
    assert!(reply["error"]["data"]["supported"]
        .as_array()
        .is_some_and(|v| v.contains(&json!("2026-07-28"))));
}

#[test]
fn a_legacy_session_answers_and_asks_over_stdio() {
    let mut server = StdioServer::start();
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": { "elicitation": {} },
                    "clientInfo": { "name": "t", "version": "0" } } });
    server.send(&init.to_string());
    assert_eq!(server.next()["result"]["protocolVersion"], "2025-11-25");
    server.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let call = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "test_elicitation", "arguments": { "message": "who?" } } });
    server.send(&call.to_string());
    // The server asks the client, and the client's answer completes the call.
    let ask = server.next();
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    let answer = json!({ "jsonrpc": "2.0", "id": ask["id"],
        "result": { "action": "accept", "content": { "username": "ada", "email": "a@b" } } });
    server.send(&answer.to_string());
    let reply = server.next();
    assert_eq!(reply["id"], 2);
    let text = reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("ada"), "{reply}");
}

#[test]
fn the_end_of_input_ends_the_server_with_status_0() {
    let status = Command::new(env!("CARGO_BIN_EXE_mcp-fleet"))
        .arg("stdio")
        .env_remove("MCP_FLEET_BIN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run mcp-fleet stdio");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_tool_asking_for_an_upstream_token_under_stdio_gets_a_clear_tool_error() {
    let mut server = StdioServer::start();
    let meta = json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                       "io.modelcontextprotocol/clientCapabilities": {} });
    // Nothing listens on port 1: the call must fail before it is sent.
    let call = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "test_upstream_call", "_meta": meta,
                    "arguments": { "url": "http://127.0.0.1:1/", "audience": "https://api.test" } } });
    server.send(&call.to_string());
    let reply = server.next();
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    let text = reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("https://api.test") && text.contains("[stdio.tokens]"),
        "the error names the audience and where to configure it: {reply}"
    );
}

#[test]
fn ctx_token_for_under_stdio_returns_the_local_token_its_configuration_names() {
    let upstream = upstream::Upstream::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("files-token");
    std::fs::write(&token_file, "file-token-1\n").expect("write the token file");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[stdio.tokens]\n\
             \"https://api.test\" = {{ env = \"ACME_API_TOKEN\" }}\n\
             \"https://files.test\" = {{ file = {:?} }}\n\
             \"https://unset.test\" = {{ env = \"ACME_UNSET_TOKEN\" }}\n",
            token_file.display().to_string()
        ),
    )
    .expect("write the config");
    let config = config.display().to_string();
    let mut server = StdioServer::start_with(&[
        ("MCP_FLEET_CONFIG", &config),
        ("ACME_API_TOKEN", "env-token-1"),
        // Whatever logs at debug must still leave the tokens out.
        ("MCP_FLEET_LOG__FILTER", "debug"),
        // The log is read while the server runs: each line written as it is made, none
        // still held in the batch.
        ("MCP_FLEET_LOG__FLUSH_INTERVAL", "0s"),
    ]);
    let url = upstream.url("/echo");
    let mut id = 0;
    let mut call = |server: &mut StdioServer, audience: &str| {
        id += 1;
        let args = json!({ "url": url, "audience": audience });
        modern_call(server, id, "test_upstream_call", args)
    };
    let sent = |upstream: &upstream::Upstream| {
        let received = upstream.received();
        let last = received.last().expect("a request reached the upstream");
        last.bearer().map(str::to_owned)
    };

    let (text, is_error) = call(&mut server, "https://api.test");
    assert!(!is_error && text.starts_with("status 200"), "{text}");
    assert_eq!(sent(&upstream).as_deref(), Some("env-token-1"));

    let (text, is_error) = call(&mut server, "https://files.test");
    assert!(!is_error, "{text}");
    assert_eq!(sent(&upstream).as_deref(), Some("file-token-1"), "trimmed");
    // Read at each call: a token refreshed in its file is used at once.
    std::fs::write(&token_file, "file-token-2").expect("refresh the token file");
    call(&mut server, "https://files.test");
    assert_eq!(sent(&upstream).as_deref(), Some("file-token-2"));
    let requests = upstream.received().len();

    let (text, is_error) = call(&mut server, "https://unset.test");
    assert!(
        is_error && text.contains("ACME_UNSET_TOKEN") && text.contains("stdio.tokens"),
        "an unset variable is a tool error naming it: {text}"
    );
    std::fs::remove_file(&token_file).expect("remove the token file");
    let (text, is_error) = call(&mut server, "https://files.test");
    assert!(
        is_error && text.contains("files-token"),
        "a missing file is a tool error naming it: {text}"
    );
    let (text, is_error) = call(&mut server, "https://other.test");
    assert!(
        is_error && text.contains("https://other.test") && text.contains("[stdio.tokens]"),
        "an audience not configured is a tool error saying where to: {text}"
    );
    assert_eq!(
        upstream.received().len(),
        requests,
        "no call without a token reached the upstream"
    );
    let log = server.log();
    assert!(!log.is_empty(), "the server logs at debug");
    for token in ["env-token-1", "file-token-1", "file-token-2"] {
        assert!(!log.contains(token), "{token} is in the log:\n{log}");
    }
}

/// A `tools/call` of `tool` with `arguments` as a 2026-07-28 request (no session); the
/// result's text and whether it is a tool error.
fn modern_call(server: &mut StdioServer, id: u64, tool: &str, arguments: Value) -> (String, bool) {
    let meta = json!({ "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {} });
    let call = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments, "_meta": meta } });
    server.send(&call.to_string());
    let reply = server.next();
    assert_eq!(reply["id"], id, "{reply}");
    let result = &reply["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    (text.to_owned(), result["isError"] == json!(true))
}

#[test]
fn secrets_and_state_work_over_stdio_from_local_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets.toml");
    std::fs::write(&file, "crm_key = \"from-the-file\"\nother = \"x\"\n").expect("write");
    let file = file.to_string_lossy().into_owned();
    let mut server = StdioServer::start_with(&[
        ("MCP_FLEET_STDIO__SECRETS_FILE", &file),
        ("MCP_FLEET_STDIO__SECRETS_ENV_PREFIX", "ACME_SECRET_"),
        ("ACME_SECRET_other", "from-the-environment"),
    ]);
    let secret = |server: &mut StdioServer, id, name: &str| {
        modern_call(server, id, "test_secret", json!({ "name": name }))
    };
    assert_eq!(
        secret(&mut server, 1, "crm_key"),
        ("from-the-file".into(), false)
    );
    assert_eq!(
        secret(&mut server, 2, "other"),
        ("from-the-environment".into(), false),
        "the environment wins over the file"
    );
    let (text, is_error) = secret(&mut server, 3, "missing");
    assert!(is_error && text.contains("missing"), "{text}");

    let state =
        |server: &mut StdioServer, id, args: Value| modern_call(server, id, "test_state", args);
    assert_eq!(
        state(
            &mut server,
            4,
            json!({ "op": "set", "key": "k", "value": [1, 2] })
        ),
        ("[1,2]".into(), false)
    );
    assert_eq!(
        state(&mut server, 5, json!({ "op": "get", "key": "k" })),
        ("[1,2]".into(), false)
    );
    assert_eq!(
        state(&mut server, 6, json!({ "op": "delete", "key": "k" })),
        ("true".into(), false)
    );
    assert_eq!(
        state(&mut server, 7, json!({ "op": "get", "key": "k" })),
        ("null".into(), false)
    );
}
