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
    let mut body = Modern::call("test_sleep", json!({ "ms": 600_000 })).body();
    body["params"]["_meta"]["progressToken"] = json!("p");
    let mut stream = open_modern_post(&server, "tools/call", Some("test_sleep"), &body);
    // The first progress notification proves the call is running and holds the slot.
    assert_eq!(
        next_message(&mut stream)["method"],
        "notifications/progress"
    );
    drop(stream);

    let second = Modern::call("test_sleep", json!({ "ms": 1 })).send(server.url());
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.tool_text(), "slept");
}

/// Connects to the server's listener; `{host}` in a request is its address.
pub fn connect(server: &Server) -> (TcpStream, String) {
    let addr = server
        .base()
        .strip_prefix("http://")
        .expect("an http base")
        .to_owned();
    let stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    (stream, addr)
}

/// Sends a raw HTTP/1.1 request and returns the response's status and the open response
/// (positioned after the status line), for reading a stream.
pub fn send_raw(server: &Server, request: &str) -> (u16, BufReader<TcpStream>) {
    let (mut stream, addr) = connect(server);
    stream
        .write_all(request.replace("{host}", &addr).as_bytes())
        .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("a status line");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status:?}"));
    (code, reader)
}

/// Sends a raw HTTP/1.1 request and returns the open response, for reading a stream.
fn open_stream(server: &Server, request: &str) -> BufReader<TcpStream> {
    let (status, reader) = send_raw(server, request);
    assert_eq!(status, 200);
    reader
}

/// A raw POST of a 2026-07-28 request with the headers a client sends.
pub fn modern_post_request(method: &str, name: Option<&str>, body: &serde_json::Value) -> String {
    let body = body.to_string();
    let name = name.map_or_else(String::new, |n| format!("Mcp-Name: {n}\r\n"));
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {{host}}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: {method}\r\n{name}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// POSTs a 2026-07-28 request with the headers a client sends, and returns the open
/// response stream.
pub fn open_modern_post(
    server: &Server,
    method: &str,
    name: Option<&str>,
    body: &serde_json::Value,
) -> BufReader<TcpStream> {
    open_stream(server, &modern_post_request(method, name, body))
}

/// The next JSON-RPC message on an SSE stream (priming events and comments skipped).
pub fn next_message(reader: &mut BufReader<TcpStream>) -> serde_json::Value {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read the event stream");
        assert!(n > 0, "the stream ended");
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            if let Ok(message) = serde_json::from_str(data) {
                return message;
            }
        }
    }
}

/// The next message on `stream`, checked to be the update of `uri`.
fn next_update(stream: &mut BufReader<TcpStream>, uri: &str) -> serde_json::Value {
    let update = next_message(stream);
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{update}"
    );
    assert_eq!(update["params"]["uri"], uri, "{update}");
    update
}

fn announce(server: &Server, uri: &str) {
    let reply = Modern::call("test_update_resource", json!({ "uri": uri })).send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// A 2025-11-25 session subscribed to `test://watched-resource`.
fn watching_session(server: &Server) -> Session {
    let session = Session::initialize(server.url(), "2025-11-25");
    let reply = session.send(
        server.url(),
        "resources/subscribe",
        json!({ "uri": "test://watched-resource" }),
    );
    assert_eq!(reply.result(), json!({}));
    session
}

/// A raw GET opening `session`'s GET stream, resuming after `last` if given.
fn get_stream_request(session: &Session, last: Option<&str>) -> String {
    let last = last.map_or_else(String::new, |id| format!("Last-Event-ID: {id}\r\n"));
    format!(
        "GET /mcp HTTP/1.1\r\nHost: {{host}}\r\nAccept: text/event-stream\r\n\
         Mcp-Session-Id: {}\r\nMCP-Protocol-Version: 2025-11-25\r\n{last}\r\n",
        session.id
    )
}

#[test]
fn a_legacy_get_stream_carries_updates_of_subscribed_resources() {
    let server = Server::builder().conformance().start();
    let session = watching_session(&server);
    let mut stream = open_stream(&server, &get_stream_request(&session, None));
    // An update nobody subscribed to is not sent; the subscribed one is.
    announce(&server, "test://static-text");
    announce(&server, "test://watched-resource");
    next_update(&mut stream, "test://watched-resource");

    // After unsubscribing, updates stop.
    session.send(
        server.url(),
        "resources/unsubscribe",
        json!({ "uri": "test://watched-resource" }),
    );
    session.send(
        server.url(),
        "resources/subscribe",
        json!({ "uri": "test://static-text" }),
    );
    announce(&server, "test://watched-resource");
    announce(&server, "test://static-text");
    next_update(&mut stream, "test://static-text");
}

#[test]
fn a_get_stream_whose_events_are_lost_opens_anew_but_a_lost_request_stream_is_refused() {
    let server = Server::builder().conformance().start();
    let session = watching_session(&server);
    // The GET stream of this node (1) that it does not hold (it restarted), then that of
    // a node that is not a member (it died): the events are lost, the stream goes on.
    for last in ["1-0-7", "9-0-3"] {
        let mut stream = open_stream(&server, &get_stream_request(&session, Some(last)));
        announce(&server, "test://watched-resource");
        next_update(&mut stream, "test://watched-resource");
    }
    // A request's stream lost the same way is refused: nothing can give its answer now.
    for last in ["1-5-0", "9-5-0"] {
        let mut headers = session.headers();
        headers.push(("Accept", "text/event-stream"));
        headers.push(("Last-Event-ID", last));
        let refused = client::get(server.url(), &headers);
        assert_eq!(refused.status, 400, "{last}: {refused:?}");
    }
}

#[test]
fn subscriptions_listen_carries_updates_with_the_subscription_id() {
    let server = Server::builder().conformance().start();
    let mut body = Modern::new("subscriptions/listen", json!({})).body();
    body["id"] = json!("sub-1");
    body["params"]["notifications"] = json!({
        "resourceSubscriptions": ["test://watched-resource"],
        "toolsListChanged": true,
    });
    let mut stream = open_modern_post(&server, "subscriptions/listen", None, &body);
    let ack = next_message(&mut stream);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub-1"
    );
    // Granted: the resource subscription; not list changes, which this server never sends.
    assert_eq!(
        ack["params"]["notifications"],
        json!({ "resourceSubscriptions": ["test://watched-resource"] })
    );
    announce(&server, "test://static-text");
    announce(&server, "test://watched-resource");
    let update = next_update(&mut stream, "test://watched-resource");
    assert_eq!(
        update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub-1"
    );
}

/// A raw legacy POST of tools/call `params` with id `id` on `session`, taking an event stream.
fn legacy_call(session: &Session, id: i64, params: serde_json::Value) -> String {
    let body = client::request(id, "tools/call", params).to_string();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {{host}}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {}\r\n\
         MCP-Protocol-Version: {}\r\nContent-Length: {}\r\n\r\n{body}",
        session.id,
        session.version,
        body.len()
    )
}

/// Reads an event stream up to its first event id (the priming event's) and returns it.
fn first_event_id(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read the event stream");
        assert!(n > 0, "the stream ended before an event id");
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            return id.to_owned();
        }
    }
}

/// The (event id, message) pairs of an SSE body, in order.
fn events(body: &str) -> Vec<(Option<String>, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|event| {
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_owned);
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let message = serde_json::from_str(&data.join("\n")).ok()?;
            Some((id, message))
        })
        .collect()
}

/// Asserts that a resumed body carries the progress and then the result of call `id`,
/// once each, with event ids that are new and distinct.
#[track_caller]
fn assert_resumed_call(resumed: &client::Reply, id: i64, after: &str) {
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let events = events(&resumed.body);
    let ids: Vec<&str> = events.iter().filter_map(|(i, _)| i.as_deref()).collect();
    assert!(!ids.contains(&after), "replayed {after} again: {resumed:?}");
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "duplicate event ids: {resumed:?}");
    let kinds: Vec<String> = events
        .iter()
        .map(|(_, m)| match m.get("method") {
            Some(method) => method.as_str().unwrap_or_default().to_owned(),
            None => format!("response {}", m["id"]),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "notifications/progress".to_owned(),
            format!("response {id}")
        ],
        "{resumed:?}"
    );
    assert_eq!(resumed.tool_text(), "slept");
}

#[test]
fn a_stream_dropped_mid_call_resumes_with_last_event_id_after_the_call_ended() {
    // One call of test_sleep at a time: a second call answers only once the first ended.
    let server = Server::builder()
        .conformance()
        .config("[tools.per_tool.test_sleep]\nconcurrency = 1\ntimeout = \"10m\"")
        .start();
    let session = Session::initialize(server.url(), "2025-11-25");
    let params = json!({
        "name": "test_sleep",
        "arguments": { "ms": 1500 },
        "_meta": { "progressToken": "p" },
    });
    let (status, mut stream) = send_raw(&server, &legacy_call(&session, 7, params));
    assert_eq!(status, 200);
    let priming = first_event_id(&mut stream);
    // The client stops reading: a network blip took its connection, which the server
    // still sees open (no FIN arrived). Not a cancellation.
    let _abandoned = stream;

    let second = session.send(
        server.url(),
        "tools/call",
        json!({ "name": "test_sleep", "arguments": { "ms": 1 } }),
    );
    assert_eq!(second.tool_text(), "slept", "{second:?}");

    let mut resume = session.headers();
    resume.push(("Accept", "text/event-stream"));
    resume.push(("Last-Event-ID", priming.as_str()));
    let resumed = client::get(server.url(), &resume);
    assert_resumed_call(&resumed, 7, &priming);
}

#[test]
fn a_stream_dropped_mid_call_resumes_at_once_while_the_call_runs() {
    let server = Server::builder().conformance().start();
    let session = Session::initialize(server.url(), "2025-11-25");
    let params = json!({
        "name": "test_sleep",
        "arguments": { "ms": 1500 },
        "_meta": { "progressToken": "p" },
    });
    let (status, mut stream) = send_raw(&server, &legacy_call(&session, 8, params));
    assert_eq!(status, 200);
    let priming = first_event_id(&mut stream);
    let _abandoned = stream;

    // The server cannot know the old connection is dead: the resuming GET takes the
    // stream over instead of answering 409.
    let mut resume = session.headers();
    resume.push(("Accept", "text/event-stream"));
    resume.push(("Last-Event-ID", priming.as_str()));
    let resumed = client::get(server.url(), &resume);
    assert_resumed_call(&resumed, 8, &priming);
}
