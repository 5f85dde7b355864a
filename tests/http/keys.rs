//! Keys on one node: a data directory opened with another key refuses MCP requests with
//! 503 and the reason (never 404 for its sessions) until the right key is back; and the
//! `keys` command says which setting it needs when no key is configured; a first start
//! that cannot write its key file serves nothing.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::client::{get, Modern, Session};
use crate::harness::{command, eventually, wait_exit, Server};

#[test]
fn a_data_dir_opened_with_another_key_answers_503_naming_the_key_until_it_is_back() {
    let mut server = Server::start();
    let session = Session::initialize(server.url(), "2025-06-18");
    assert_eq!(session.echo(server.url(), "before").tool_text(), "before");
    let key_file = server.data_dir().join("encryption.key");
    let key = std::fs::read(&key_file).expect("dev keeps its key in the data directory");

    // Lost key: dev makes a new one, which opens none of what the fleet store holds.
    server.kill();
    std::fs::remove_file(&key_file).expect("remove the key");
    server.restart();
    let ready = get(&format!("{}/ready", server.base()), &[]);
    assert_eq!(ready.status, 503, "{ready:?}");
    let body = ready.json();
    assert_eq!(body["status"], "key ring is not the fleet's", "{body}");
    let why = body["keys"].as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains("key 1 does not open") && why.contains("index key differs"),
        "{why}"
    );
    let reply = session.echo(server.url(), "wrong key");
    reply.assert_error(503, -32603);
    let message = reply.json()["error"]["message"].to_string();
    assert!(message.contains("key 1 does not open"), "{message}");
    // Like every 503 of the MCP endpoint, it says when to try again.
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    let modern = Modern::call("echo", json!({ "text": "wrong key" })).send(server.url());
    assert_eq!(modern.status, 503, "{modern:?}");
    assert_eq!(modern.header("retry-after"), Some("1"), "{modern:?}");
    let log = eventually("the error in the log", Duration::from_secs(30), || {
        let log = server.log();
        log.contains("key ring is not the fleet's").then_some(log)
    });
    assert!(
        !log.contains(&hex_of(&key)),
        "the key itself is never logged"
    );

    // The key is back: the session is served again.
    server.kill();
    std::fs::remove_file(&key_file).expect("remove the wrong key");
    std::fs::write(&key_file, &key).expect("restore the key");
    server.restart();
    let reply = session.echo(server.url(), "right key");
    assert_eq!(reply.status, 200, "{reply:?}\nlog:\n{}", server.log());
    assert_eq!(reply.tool_text(), "right key");
    assert_eq!(get(&format!("{}/ready", server.base()), &[]).status, 200);
}

/// What is in a key file, as it would appear in a log.
fn hex_of(key: &[u8]) -> String {
    String::from_utf8_lossy(key).trim().to_owned()
}

#[test]
fn keys_index_key_without_a_key_exits_2_naming_the_variable() {
    let mut child = command()
        .args(["keys", "index-key"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcp-fleet keys");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("MCP_FLEET_ENCRYPTION_KEY"), "{stderr}");
}

#[test]
fn a_first_start_that_cannot_write_its_key_file_exits_and_the_next_starts_as_new() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    // The key file is written through `encryption.key.tmp`: a directory there stops it.
    let obstacle = data.join("encryption.key.tmp");
    std::fs::create_dir_all(obstacle.join("inside")).expect("the obstacle");
    let stderr_path = dir.path().join("stderr");
    let mut child = command()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn mcp-fleet dev");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !status.success(),
        "it started without its key file:\n{stderr}"
    );
    assert!(stderr.contains("encryption.key"), "{stderr}");
    assert!(!data.join("encryption.key").exists());

    // The obstacle gone, the same directory starts as a new one and serves.
    std::fs::remove_dir_all(&obstacle).expect("remove the obstacle");
    let server = Server::builder().data_dir(&data).start();
    let session = Session::initialize(server.url(), "2025-06-18");
    assert_eq!(session.echo(server.url(), "anew").tool_text(), "anew");
    assert!(data.join("encryption.key").exists());
    assert!(data.join("identity.json").exists());
}
