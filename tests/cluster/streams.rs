//! Legacy streams across nodes: a stream whose connection broke resumes with
//! `Last-Event-ID` at any node (the reconnect is forwarded to the node holding the stream),
//! and `notifications/cancelled` sent to any node stops the call where it runs.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::{json, Value};
use ureq::Agent;

use crate::client::{get, post, Reply, Session};
use crate::fleet::Fleet;

/// How long a stream may stay silent before the test gives up on it.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs a legacy `tools/call` of `test_sleep` (with a progress token) on `session` to
/// `url`, and returns the open event stream.
fn sleep_call(url: &str, session: &Session, id: i64, ms: u64) -> BufReader<impl Read> {
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(STREAM_TIMEOUT))
        .build()
        .into();
    let params = json!({
        "name": "test_sleep",
        "arguments": { "ms": ms },
        "_meta": { "progressToken": format!("p{id}") },
    });
    let call = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
    let mut request = agent
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in session.headers() {
        request = request.header(name, value);
    }
    let response = request.send(call.to_string()).expect("POST tools/call");
    assert_eq!(response.status(), 200, "tools/call via {url}");
    BufReader::new(response.into_body().into_reader())
}

/// Reads a stream up to its first event id (the priming event's) and returns it.
fn first_event_id(stream: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stream.read_line(&mut line).expect("read the event stream");
        assert!(n > 0, "the stream ended before an event id");
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            return id.to_owned();
        }
    }
}

/// Reads a stream until a message satisfying `wanted` and returns it.
fn next_message(stream: &mut impl BufRead, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stream.read_line(&mut line).expect("read the event stream");
        assert!(n > 0, "the stream ended");
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            if let Ok(message) = serde_json::from_str::<Value>(data) {
                if wanted(&message) {
                    return message;
                }
            }
        }
    }
}

/// A resuming GET from `last` on `session` through `url`.
fn resume(url: &str, session: &Session, last: &str) -> Reply {
    let mut headers = session.headers();
    headers.push(("Accept", "text/event-stream"));
    headers.push(("Last-Event-ID", last));
    get(url, &headers).expect("GET with Last-Event-ID")
}

/// The messages of an SSE body, in order, with their event ids.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|event| {
            let id = event.lines().find_map(|l| l.strip_prefix("id: "))?;
            let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((id.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect()
}

/// Asserts that `resumed` carries call `id`'s progress and then its result, once each,
/// all after `last`.
#[track_caller]
fn assert_resumed(resumed: &Reply, id: i64, last: &str, fleet: &Fleet) {
    assert_eq!(resumed.status, 200, "{resumed:?}\n{}", fleet.logs());
    let events = events(&resumed.body);
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
    assert!(events.iter().all(|(i, _)| i != last), "{resumed:?}");
    assert_ne!(events[0].0, events[1].0, "{resumed:?}");
    let result = &events[1].1;
    assert_eq!(result["result"]["content"][0]["text"], "slept", "{result}");
}

#[test]
fn a_stream_broken_on_one_node_resumes_on_another_and_through_the_balancer() {
    let Some(mut fleet) = Fleet::builder().conformance().start(3) else {
        return;
    };
    let leader = fleet.cluster.leader();
    let holder = fleet
        .cluster
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    let other = fleet
        .cluster
        .ids()
        .into_iter()
        .find(|&i| i != holder)
        .expect("another node");
    let (holder_url, other_url) = (
        fleet.cluster.node(holder).mcp_url(),
        fleet.cluster.node(other).mcp_url(),
    );
    let token = fleet.token("ada");
    let session =
        Session::create_as(&fleet.url(), "streams", &token).unwrap_or_else(|e| panic!("{e}"));

    let mut stream = sleep_call(&holder_url, &session, 3, 1500);
    let priming = first_event_id(&mut stream);
    // The client's connection is gone (the server may still see it open): the call runs on.
    let _abandoned = stream;

    // While the call runs, another node forwards the reconnect to the one holding it.
    let resumed = resume(&other_url, &session, &priming);
    assert_resumed(&resumed, 3, &priming, &fleet);
    // After the call ended, wherever the balancer sends the reconnect.
    for _ in 0..3 {
        let resumed = resume(&fleet.url(), &session, &priming);
        assert_resumed(&resumed, 3, &priming, &fleet);
    }

    // The node holding the stream is gone: so is the stream, and the client hears it at once.
    fleet.cluster.kill(holder);
    let gone = resume(&other_url, &session, &priming);
    assert_eq!(gone.status, 400, "{gone:?}");
    assert!(gone.body.contains("gone"), "{gone:?}");
}

#[test]
fn notifications_cancelled_sent_to_another_node_stops_the_call_where_it_runs() {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let (running, told) = (1, 2);
    let url = |id: u64| fleet.cluster.node(id).mcp_url();
    let token = fleet.token("grace");
    let session =
        Session::create_as(&url(running), "streams", &token).unwrap_or_else(|e| panic!("{e}"));

    let mut stream = sleep_call(&url(running), &session, 41, 600_000);
    // The first progress notification proves the call runs on node `running`.
    next_message(&mut stream, |m| m["method"] == "notifications/progress");

    let cancel = json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": 41, "reason": "the user changed their mind" },
    });
    let reply = post(&url(told), &session.headers(), &cancel.to_string()).expect("POST cancel");
    assert_eq!(reply.status, 202, "{reply:?}");

    // The tool observed the cancellation: its call ends with the cancelled error.
    let result = next_message(&mut stream, |m| m["id"] == 41);
    assert_eq!(
        result["error"]["code"],
        -32800,
        "{result}\n{}",
        fleet.logs()
    );
}

#[test]
fn the_python_sdk_resumes_streams_the_server_closed_wherever_the_balancer_sends_it() {
    let script = "resume.py";
    let calls: u64 = 4;
    let mut cmd = crate::python::client(script);
    let Some(fleet) = Fleet::builder().conformance().start(3) else {
        return;
    };
    cmd.arg(fleet.url())
        .arg(calls.to_string())
        .env("FLEET_TOKEN", fleet.token("resumer"));
    let out = crate::harness::run_bounded(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{script}: {e}\n{}", fleet.logs()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}: {stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}):\n{stdout}\n{stderr}"));
    eprintln!("resume.py: {report}");
    assert_eq!(report["ok"], calls, "{report}\n{stderr}\n{}", fleet.logs());
    // One resuming GET per call (and the SDK's own GET stream), none refused.
    let gets = report["statuses"]["GET 200"].as_u64().unwrap_or(0);
    assert!(gets >= calls, "{report}");
    let refused = report["statuses"]
        .as_object()
        .is_some_and(|s| s.keys().any(|k| k.starts_with("GET ") && k != "GET 200"));
    assert!(!refused, "{report}");
    // Round robin over three nodes sends some reconnects to a node other than the call's.
    let logs = fleet.logs();
    assert!(
        logs.contains("relaying a stream resumed from another node"),
        "no reconnect crossed nodes: {report}"
    );
}
