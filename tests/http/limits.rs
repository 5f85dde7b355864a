//! Caps on what one caller can make a node hold, on the real binary: each refusal names
//! its cap, and what was refused is not held.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{post, request, Modern, Session};
use crate::harness::{eventually, Server};
use crate::metrics::{sample, scrape, SECRET};
use crate::streams::{connect, modern_post_request, next_message, send_raw};

/// Reads the rest of a response whose status line was read: headers, then a body of
/// `Content-Length` bytes, as JSON.
fn read_json_body(reader: &mut BufReader<TcpStream>) -> Value {
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    serde_json::from_slice(&body).expect("a JSON body")
}

/// The message of a JSON-RPC error response.
fn error_message(message: &Value) -> &str {
    message["error"]["message"].as_str().unwrap_or_default()
}

#[test]
fn a_session_over_the_largest_raft_entry_is_refused_naming_that_cap() {
    // An operator who shrinks raft.max_entry_bytes below what a session may hold gets a
    // clear refusal, never a 500.
    let server = Server::builder()
        .env("MCP_FLEET_CLUSTER_SECRET", SECRET)
        .env("MCP_FLEET_RAFT__MAX_ENTRY_BYTES", "4096")
        .start();
    let params = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": { "name": "wide", "version": "1", "padding": "x".repeat(8000) },
    });
    let reply = post(
        server.url(),
        &[],
        &request(1, "initialize", params).to_string(),
    );
    reply.assert_error(400, -32602);
    let message = reply.json();
    let text = error_message(&message);
    assert!(
        text.contains("raft.max_entry_bytes") && text.contains("4096"),
        "{text}"
    );
    let metrics = scrape(&format!("http://{}/metrics", server.internal()));
    let refusals = "mcp_fleet_limit_refusals_total{limit=\"raft.max_entry_bytes\"}";
    assert_eq!(sample(&metrics, refusals), Some(1.0), "{metrics}");
    // A session within the cap is still made.
    Session::initialize(server.url(), "2025-11-25");
}

#[test]
fn initialize_with_megabytes_of_client_info_is_refused_and_nothing_is_stored() {
    let server = Server::builder()
        .env("MCP_FLEET_CLUSTER_SECRET", SECRET)
        .start();
    let metrics = format!("http://{}/metrics", server.internal());
    let records = "mcp_fleet_store_records{table=\"mcp_sessions\"}";
    // Under the 4 MiB body limit, so only the session cap can refuse it.
    let info = json!({ "name": "big", "version": "1", "padding": "x".repeat(3_900_000) });
    for id in 0..3 {
        let params = json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": info,
        });
        let body = request(id, "initialize", params).to_string();
        assert!(body.len() < 4 * 1024 * 1024);
        let reply = post(server.url(), &[], &body);
        reply.assert_error(400, -32602);
        assert!(
            reply.header("mcp-session-id").is_none(),
            "{:?}",
            reply.status
        );
        let message = reply.json();
        let text = error_message(&message);
        assert!(
            text.contains("params.clientInfo")
                && text.contains("16384")
                && text.contains("sessions.max_client_bytes"),
            "{text}"
        );
    }
    let text = scrape(&metrics);
    assert_eq!(sample(&text, records), Some(0.0), "{text}");
    let refusals = "mcp_fleet_limit_refusals_total{limit=\"sessions.max_client_bytes\"}";
    assert_eq!(sample(&text, refusals), Some(3.0), "{text}");

    // An ordinary client is served, and its session is stored.
    let session = Session::initialize(server.url(), "2025-11-25");
    assert_eq!(
        session.echo(server.url(), "still here").tool_text(),
        "still here"
    );
    assert_eq!(sample(&scrape(&metrics), records), Some(1.0));
}

/// A `subscriptions/listen` request for `uris`, as a raw request.
fn listen_request(uris: Value) -> String {
    let mut body = Modern::new("subscriptions/listen", json!({})).body();
    body["params"]["notifications"] = json!({ "resourceSubscriptions": uris });
    modern_post_request("subscriptions/listen", None, &body)
}

/// Opens a listen stream and reads its acknowledgement.
fn open_listen(server: &Server, uris: Value) -> BufReader<TcpStream> {
    let (status, mut stream) = send_raw(server, &listen_request(uris));
    assert_eq!(status, 200);
    let ack = next_message(&mut stream);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    stream
}

#[test]
fn listen_streams_are_capped_per_principal_and_closing_one_frees_a_place() {
    let server = Server::builder()
        .conformance()
        .config("[http]\nmax_listen_streams_per_principal = 2\nmax_listen_uris = 3\n")
        .start();
    let watched = json!(["test://watched-resource"]);
    let first = open_listen(&server, watched.clone());
    let _second = open_listen(&server, watched.clone());

    let (status, mut refused) = send_raw(&server, &listen_request(watched.clone()));
    assert_eq!(status, 429);
    let message = read_json_body(&mut refused);
    assert_eq!(message["error"]["code"], -32010, "{message}");
    assert!(
        error_message(&message).contains("http.max_listen_streams_per_principal"),
        "{message}"
    );

    // Closing a stream gives its place back.
    drop(first);
    let mut third = eventually("a freed listen slot", Duration::from_secs(10), || {
        let (status, mut stream) = send_raw(&server, &listen_request(watched.clone()));
        (status == 200).then(|| {
            next_message(&mut stream);
            stream
        })
    });
    let reply = Modern::call(
        "test_update_resource",
        json!({ "uri": "test://watched-resource" }),
    )
    .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    let update = next_message(&mut third);
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{update}"
    );

    // Too many URIs in one stream, or one too long, is invalid params.
    let mut params = json!({});
    params["notifications"] =
        json!({ "resourceSubscriptions": ["a://1", "a://2", "a://3", "a://4"] });
    let reply = Modern::new("subscriptions/listen", params).send(server.url());
    reply.assert_error(400, -32602);
    let message = reply.json();
    assert!(
        error_message(&message).contains("notifications.resourceSubscriptions")
            && error_message(&message).contains("http.max_listen_uris"),
        "{message}"
    );
    let mut params = json!({});
    let long = format!("test://{}", "u".repeat(3000));
    params["notifications"] = json!({ "resourceSubscriptions": [long] });
    let reply = Modern::new("subscriptions/listen", params).send(server.url());
    reply.assert_error(400, -32602);
    assert!(error_message(&reply.json()).contains("mcp.max_uri_bytes"));
}

#[test]
fn a_body_trickling_in_is_answered_408_and_its_connection_closed() {
    let server = Server::builder()
        .config("[http]\nbody_read_timeout = \"2s\"\n")
        .start();
    let (stream, addr) = connect(&server);
    // Generous: the server must answer within its 2 s, but a loaded machine is slow.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("a second handle");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{"
    );
    writer.write_all(head.as_bytes()).expect("send the head");
    // One byte every half second, for longer than the read deadline below.
    let answered = Arc::new(AtomicBool::new(false));
    let stop = answered.clone();
    let trickle = std::thread::spawn(move || {
        for _ in 0..60 {
            if stop.load(Ordering::Acquire) || writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .expect("a status line in time");
    answered.store(true, Ordering::Release);
    assert!(status.contains(" 408 "), "{status}");
    let message = read_json_body(&mut reader);
    assert_eq!(message["error"]["code"], -32600, "{message}");
    assert!(
        error_message(&message).contains("http.body_read_timeout"),
        "{message}"
    );
    // The connection is closed: end of file (or a reset, if a byte crossed the close).
    let mut rest = Vec::new();
    assert!(
        matches!(reader.read_to_end(&mut rest), Ok(0) | Err(_)),
        "{rest:?}"
    );
    trickle.join().expect("the trickling thread");
    assert_eq!(Session::initialize(server.url(), "2025-11-25").id.len(), 32);
}

/// A raw POST on a legacy session, taking an SSE answer.
fn legacy_post(session: &Session, body: &Value) -> String {
    let body = body.to_string();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {{host}}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {}\r\n\
         MCP-Protocol-Version: {}\r\nContent-Length: {}\r\n\r\n{body}",
        session.id,
        session.version,
        body.len()
    )
}

/// Starts `test_sleep` on `session` and returns its stream once the call runs.
fn sleeping(server: &Server, session: &Session, id: i64) -> BufReader<TcpStream> {
    let call = json!({
        "name": "test_sleep",
        "arguments": { "ms": 600_000 },
        "_meta": { "progressToken": format!("p{id}") },
    });
    let (status, mut stream) = send_raw(
        server,
        &legacy_post(session, &request(id, "tools/call", call)),
    );
    assert_eq!(status, 200);
    assert_eq!(
        next_message(&mut stream)["method"],
        "notifications/progress"
    );
    stream
}

fn cancel(server: &Server, session: &Session, id: i64) {
    let note = json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": id },
    });
    let reply = post(server.url(), &session.headers(), &note.to_string());
    assert_eq!(reply.status, 202, "{reply:?}");
}

#[test]
fn a_legacy_session_holds_at_most_its_cap_of_unfinished_streams() {
    let server = Server::builder()
        .conformance()
        .config(
            "[http]\nmax_streams_per_session = 2\n[tools.per_tool.test_sleep]\ntimeout = \"10m\"\n",
        )
        .start();
    let session = Session::initialize(server.url(), "2025-06-18");
    let mut first = sleeping(&server, &session, 1);
    let _second = sleeping(&server, &session, 2);

    let refused = session.echo(server.url(), "third");
    refused.assert_error(429, -32010);
    assert!(
        error_message(&refused.json()).contains("http.max_streams_per_session"),
        "{refused:?}"
    );
    // Another session has its own streams.
    let other = Session::initialize(server.url(), "2025-06-18");
    assert_eq!(other.echo(server.url(), "other").tool_text(), "other");

    // A finished request gives its place back.
    cancel(&server, &session, 1);
    assert_eq!(next_message(&mut first)["error"]["code"], -32800);
    let reply = eventually("a freed stream", Duration::from_secs(10), || {
        let reply = session.echo(server.url(), "after");
        (reply.status == 200).then_some(reply)
    });
    assert_eq!(reply.tool_text(), "after");
    cancel(&server, &session, 2);
}

#[test]
fn a_tool_asking_past_the_pending_cap_gets_an_error_naming_it() {
    let server = Server::builder()
        .conformance()
        .config("[http]\nmax_pending_requests_per_session = 1\n")
        .start();
    let params = json!({
        "protocolVersion": "2025-06-18",
        "capabilities": { "elicitation": {} },
        "clientInfo": { "name": "limits-tests", "version": "0" },
    });
    let reply = post(
        server.url(),
        &[],
        &request(0, "initialize", params).to_string(),
    );
    let session = Session {
        id: reply
            .header("mcp-session-id")
            .expect("a session")
            .to_owned(),
        version: "2025-06-18".to_owned(),
    };
    let ask = |id| {
        let call = json!({ "name": "test_elicitation", "arguments": { "message": "Who?" } });
        legacy_post(&session, &request(id, "tools/call", call))
    };
    let (status, mut first) = send_raw(&server, &ask(1));
    assert_eq!(status, 200);
    let question = next_message(&mut first);
    assert_eq!(question["method"], "elicitation/create", "{question}");

    // The first question is still unanswered: the second tool may not ask.
    let (status, mut second) = send_raw(&server, &ask(2));
    assert_eq!(status, 200);
    // Its first message is its final answer, so it comes as plain JSON.
    let answer = read_json_body(&mut second);
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("http.max_pending_requests_per_session"),
        "{answer}"
    );

    // Answering the first question completes the first call.
    let decline =
        json!({ "jsonrpc": "2.0", "id": question["id"], "result": { "action": "decline" } });
    let reply = post(server.url(), &session.headers(), &decline.to_string());
    assert_eq!(reply.status, 202, "{reply:?}");
    let done = next_message(&mut first);
    assert_eq!(done["id"], 1, "{done}");
    assert!(done.get("result").is_some(), "{done}");
}

/// Open file descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .count()
}

/// The process's descriptors once two readings 100 ms apart agree (within 5 s): a file the
/// node holds open for a moment in the background (a record written, a log fsynced) is not
/// counted as one of its connections.
fn settled_descriptors(pid: u32) -> usize {
    let mut last = descriptors(pid);
    crate::harness::eventually_or(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = descriptors(pid);
        let settled = now == last;
        last = now;
        settled.then_some(())
    });
    last
}

/// Opens a connection and completes one request on it, so it is accepted and kept alive.
fn served_connection(server: &Server) -> BufReader<TcpStream> {
    let (status, mut reader) = send_raw(
        server,
        "GET /health HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 200);
    // Headers, then the small body, so the connection is idle and open.
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    reader
}

#[test]
#[cfg(target_os = "linux")]
fn connections_are_capped_per_node_and_each_holds_one_descriptor() {
    // Two workers (the harness's), two connections each.
    let server = Server::builder()
        .env("MCP_FLEET_CLUSTER_SECRET", SECRET)
        .config("[http]\nmax_connections = 4\nkeep_alive = \"60s\"\nhead_timeout = \"60s\"\n")
        .start();
    let metrics = format!("http://{}/metrics", server.internal());
    let in_use = "mcp_fleet_limit_in_use{limit=\"http.max_connections\"}";
    let mut open: Vec<_> = (0..4).map(|_| served_connection(&server)).collect();
    assert_eq!(sample(&scrape(&metrics), in_use), Some(4.0));
    // Closing two connections gives back one descriptor each: their sockets, and no
    // duplicate of them.
    let with_four = settled_descriptors(server.pid());
    open.truncate(2);
    eventually("two connections to close", Duration::from_secs(10), || {
        (sample(&scrape(&metrics), in_use) == Some(2.0)).then_some(())
    });
    // Both are gone (their extensions dropped with them); their sockets close in the same
    // drop. Two more descriptors gone would be a duplicate socket per connection.
    let mut now = 0;
    let two_fewer = crate::harness::eventually_or(Duration::from_secs(5), || {
        now = descriptors(server.pid());
        (now == with_four - 2).then_some(())
    });
    assert!(
        two_fewer.is_some(),
        "{with_four} descriptors with four connections, {now} with two"
    );
    open.extend((0..2).map(|_| served_connection(&server)));

    // A fifth waits in the backlog: not served while four are open...
    let (mut waiting, addr) = connect(&server);
    waiting
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    write!(waiting, "GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut byte = [0u8; 1];
    assert!(waiting.read(&mut byte).is_err(), "served over the cap");
    // ...and served once one closes.
    drop(open.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut status = String::new();
    BufReader::new(waiting)
        .read_line(&mut status)
        .expect("served once a connection closed");
    assert!(status.contains(" 200 "), "{status}");
}

#[test]
fn a_body_that_would_parse_into_too_much_memory_is_413() {
    let server = Server::builder()
        .config("[http]\nmax_parsed_body_bytes = 1048576\n")
        .start();
    // 200 KB of small objects would take about 16 MB once parsed.
    let items = vec![r#"{"a":1}"#; 25_000].join(",");
    let params = format!(
        r#"{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"x","list":[{items}]}}}}"#
    );
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{params}}}"#);
    let reply = post(server.url(), &[], &body);
    reply.assert_error(413, -32600);
    assert!(
        error_message(&reply.json()).contains("http.max_parsed_body_bytes"),
        "{reply:?}"
    );
    // The same amount of text in a string is fine.
    let text = "x".repeat(200_000);
    let reply = Modern::call("echo", json!({ "text": text })).send(server.url());
    assert_eq!(reply.tool_text().len(), 200_000);
}
