//! Operational endpoints and the endpoint's trailing-slash alias.

use serde_json::json;

use crate::client::{get, Modern, Session};
use crate::harness::Server;

#[test]
fn health_and_ready_are_200() {
    let server = Server::start();
    for path in ["/health", "/ready"] {
        let reply = get(&format!("{}{path}", server.base()), &[]);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert!(reply.json()["status"].is_string(), "{path}: {reply:?}");
    }
}

#[test]
fn the_endpoint_with_a_trailing_slash_serves_the_same() {
    let server = Server::start();
    let slash = format!("{}/", server.url());
    let plain = Modern::new("tools/list", json!({})).send(server.url());
    let slashed = Modern::new("tools/list", json!({})).send(&slash);
    assert_eq!(slashed.status, 200, "no redirect: {slashed:?}");
    assert_eq!(slashed.result()["tools"], plain.result()["tools"]);
    // Errors are the same too.
    Modern::new("no/such/method", json!({}))
        .send(&slash)
        .assert_error(404, -32601);
    // A session made on one path works on the other.
    let session = Session::initialize(&slash, "2025-06-18");
    assert_eq!(session.echo(server.url(), "plain").tool_text(), "plain");
    assert_eq!(session.echo(&slash, "slash").tool_text(), "slash");
    let reply = crate::client::delete(&slash, &session.headers());
    assert_eq!(reply.status, 204, "{reply:?}");
    session.echo(server.url(), "gone").assert_error(404, -32001);
}

#[test]
fn a_node_whose_standard_output_is_closed_serves_on() {
    // A supervisor that reads the first line and closes the pipe (or never reads it) must
    // not kill the node: the endpoint lines are written to a pipe with no reader.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let data = tempfile::tempdir().expect("a temp dir");
    let mut child = crate::harness::command()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mcp-fleet dev");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The node says where it serves in its log, since standard output is gone.
    let mut log = String::new();
    let addr = crate::harness::eventually(
        "the 'serving' log line",
        std::time::Duration::from_secs(30),
        || {
            while let Ok(line) = rx.try_recv() {
                log.push_str(&line);
                log.push('\n');
            }
            let at = log.find("serving")?;
            let rest = &log[at..];
            let addr = rest.split("addr=").nth(1)?.split_whitespace().next()?;
            Some(addr.trim_matches('"').to_owned())
        },
    );
    let reply = get(&format!("http://{addr}/health"), &[]);
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    assert!(exited.is_none(), "the node exited: {exited:?}\n{log}");
    assert_eq!(reply.status, 200, "{reply:?}\n{log}");
    assert!(log.contains("standard output is closed"), "{log}");
}

#[test]
fn an_initialize_sent_as_soon_as_the_port_accepts_is_answered_with_a_session_or_a_503_with_a_reason(
) {
    use std::net::{TcpListener, TcpStream};
    use std::process::Stdio;
    use std::time::Duration;

    use crate::client::post;
    use crate::harness::{command, eventually, wait_exit};

    let dir = tempfile::tempdir().expect("a temporary directory");
    // A port known before the node starts, so the first connection can race its start.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let mut child = command()
        .args(["dev", "--auth", "none", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mcp-fleet");
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "racing-the-start", "version": "0" },
        },
    })
    .to_string();
    let url = format!("http://{addr}/mcp");
    let session = eventually(
        "an initialize answered 200",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the node exited with {status}");
            }
            TcpStream::connect(&addr).ok()?;
            let reply = post(&url, &[], &body);
            match reply.status {
                200 => Some(reply),
                503 => {
                    assert!(!reply.body.trim().is_empty(), "a 503 without a reason");
                    None
                }
                _ => panic!("a request racing the start was answered {reply:?}"),
            }
        },
    );
    assert!(session.header("mcp-session-id").is_some(), "{session:?}");
    assert_eq!(
        session.json()["result"]["protocolVersion"],
        "2025-11-25",
        "{session:?}"
    );
    let _ = child.kill();
    wait_exit(&mut child, Duration::from_secs(30));
}

#[test]
fn a_burst_of_new_connections_waits_in_the_backlog_while_the_node_is_busy() {
    // Stopped, the node accepts nothing: each connection the kernel completes for it waits
    // in the listener's backlog. With std's backlog of 128, handshakes past it would be
    // dropped (and retried a second later, to be dropped again while it stays stopped).
    // The kernel caps every backlog at net.core.somaxconn (4096 on kernels since 5.4).
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    let burst = somaxconn.min(300);
    let server = Server::start();
    let addr: std::net::SocketAddr = server
        .base()
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &server.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    };
    signal("STOP");
    let connects: Vec<_> = (0..burst)
        .map(|_| {
            std::thread::spawn(move || {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
            })
        })
        .collect();
    let connected: Vec<_> = connects
        .into_iter()
        .map(|c| c.join().expect("a connect thread"))
        .collect();
    signal("CONT");
    let refused: Vec<String> = connected
        .iter()
        .filter_map(|c| c.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {burst} connections not completed: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    drop(connected);
    // Running again, it serves.
    let reply = get(&format!("{}/health", server.base()), &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
}
