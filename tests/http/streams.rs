//! Streams and cancellation: resuming a legacy stream with `Last-Event-ID`, cancelling a
//! legacy request with `notifications/cancelled`, and a 2026-07-28 request cancelled by
//! closing its connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::client::{self, Modern, Session};
use crate::harness::{eventually, Server};

#[test]
fn a_stream_closed_by_the_server_resumes_with_last_event_id() {
    let server = Server::builder().conformance().start();
    let session = Session::initialize(server.url(), "2025-11-25");
    let mut headers = session.headers();
    headers.push(("Accept", "application/json, text/event-stream"));
    let call = client::request(
        5,
        "tools/call",
        json!({ "name": "test_reconnection", "arguments": {} }),
    );
    let first = client::post(server.url(), &headers, &call.to_string());
    assert_eq!(first.status, 200, "{first:?}");
    // The connection ends after the priming event (an id, a retry delay, empty data).
    let priming_id = first
        .body
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no priming event id: {first:?}"))
        .to_owned();
    assert!(first.body.contains("retry: "), "{first:?}");
    assert!(
        !first.body.contains("Reconnection test completed"),
        "{first:?}"
    );

    let mut resume = session.headers();
    resume.push(("Accept", "text/event-stream"));
    resume.push(("Last-Event-ID", priming_id.as_str()));
    let resumed = client::get(server.url(), &resume);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    assert_eq!(resumed.json()["id"], 5);
    assert!(resumed.tool_text().contains("Reconnection test completed"));

    // A stream that never existed cannot be resumed.
    let mut unknown = session.headers();
    unknown.push(("Last-Event-ID", "999-0"));
    assert_eq!(client::get(server.url(), &unknown).status, 400);
}

#[test]
fn notifications_cancelled_stops_a_legacy_request() {
    let server = Server::builder().conformance().start();
    let session = Session::initialize(server.url(), "2025-06-18");
    let url = server.url().to_owned();
    let headers: Vec<(String, String)> = session
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let call = client::request(
        41,
        "tools/call",
        json!({ "name": "test_sleep", "arguments": { "ms": 600_000 } }),
    );
    let running = std::thread::spawn(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        client::post(&url, &headers, &call.to_string())
    });
    let cancel = json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": 41, "reason": "test" },
    });
    // The request may not have started when the first notice arrives; notices for
    // requests not running are ignored, so keep sending until the call ends.
    eventually("the call to end", Duration::from_secs(10), || {
        let reply = client::post(server.url(), &session.headers(), &cancel.to_string());
        assert_eq!(reply.status, 202, "{reply:?}");
        running.is_finished().then_some(())
    });
    let reply = running.join().expect("the calling thread");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.error_code(), Some(-32800), "{reply:?}");
    // The session goes on.
    assert_eq!(session.echo(server.url(), "after").tool_text(), "after");
}

#[test]
fn closing_a_2026_07_28_connection_cancels_the_call() {
    // One call of test_sleep at a time: a second call can only run once the first is gone.
    let server = Server::builder()
        .conformance()
        .config("[tools.per_tool.test_sleep]\nconcurrency = 1\ntimeout = \"10m\"")
        .start();
    let body = Modern::call("test_sleep", json!({ "ms": 600_000 })).body();
    let mut body = body;
    body["params"]["_meta"]["progressToken"] = json!("p");
    let body = body.to_string();
    let addr = server
        .base()
        .strip_prefix("http://")
        .expect("an http base")
        .to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: tools/call\r\nMcp-Name: test_sleep\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    // The first progress notification proves the call is running and holds the slot.
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.contains("notifications/progress") {
        line.clear();
        let n = reader.read_line(&mut line).expect("read the event stream");
        assert!(n > 0, "the stream ended before any progress");
    }
    drop(reader);

    let second = Modern::call("test_sleep", json!({ "ms": 1 })).send(server.url());
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.tool_text(), "slept");
}
