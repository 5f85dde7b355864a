//! A legacy elicitation whose answer arrives at another node: the client's POST with the
//! answer lands, as a load balancer may send it, on a node other than the one running the
//! tool, which forwards it; the tool's result then arrives on the first node's stream.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ureq::Agent;

use crate::client::{post, Session};
use crate::fleet::Fleet;

/// How long the event stream may stay silent before the test gives up on it.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// The JSON-RPC messages of an SSE body, one per event, in order.
struct Events<R> {
    lines: std::io::Lines<BufReader<R>>,
}

impl<R: Read> Events<R> {
    fn new(body: R) -> Self {
        Self {
            lines: BufReader::new(body).lines(),
        }
    }

    /// The next event's message; `Err` when the stream ends or fails first.
    fn next_message(&mut self) -> Result<Value, String> {
        let mut data = Vec::new();
        loop {
            let line = self
                .lines
                .next()
                .ok_or("the stream ended")?
                .map_err(|e| format!("reading the stream: {e}"))?;
            if line.is_empty() {
                // Priming events and keep-alives carry no message.
                if data.iter().all(String::is_empty) {
                    data.clear();
                    continue;
                }
                return serde_json::from_str(&data.join("\n"))
                    .map_err(|e| format!("an event that is not JSON ({e}): {data:?}"));
            }
            if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.trim_start().to_owned());
            }
        }
    }

    /// Skips events until one satisfies `wanted`.
    fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Result<Value, String> {
        loop {
            let message = self
                .next_message()
                .map_err(|e| format!("waiting for {what}: {e}"))?;
            if wanted(&message) {
                return Ok(message);
            }
        }
    }
}

#[test]
fn an_elicitation_answered_through_another_node_completes() {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let (asking, answering) = (1, 3);
    let url = |id: u64| fleet.cluster.node(id).mcp_url();
    let token = fleet.token("eve");
    let capabilities = json!({ "elicitation": { "form": {} } });
    let session = Session::open_with(&url(asking), "elicitation", Some(&token), capabilities)
        .expect("initialize")
        .session(Some(&token))
        .unwrap_or_else(|e| panic!("{e}"));
    session.initialized(&url(asking)).expect("initialized");

    // The tool call, on node `asking`, answered as an event stream read as it comes.
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(STREAM_TIMEOUT))
        .build()
        .into();
    let params = json!({ "name": "test_elicitation", "arguments": { "message": "Who are you?" } });
    let call = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params });
    let mut request = agent
        .post(url(asking))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in session.headers() {
        request = request.header(name, value);
    }
    let started = Instant::now();
    let response = request.send(call.to_string()).expect("POST tools/call");
    assert_eq!(response.status(), 200, "tools/call on node {asking}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "content-type {content_type:?}"
    );
    let mut events = Events::new(response.into_body().into_reader());
    let ask = events
        .until("elicitation/create", |m| {
            m["method"] == "elicitation/create"
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", fleet.cluster.logs()));
    let ask_id = ask["id"].clone();
    assert!(
        !ask_id.is_null(),
        "an elicitation request without an id: {ask}"
    );

    // The answer goes to another node, directly.
    let answer = json!({
        "jsonrpc": "2.0",
        "id": ask_id,
        "result": { "action": "accept", "content": { "username": "eve", "email": "eve@example.com" } },
    });
    let headers: Vec<(&str, &str)> = session.headers();
    let reply = post(&url(answering), &headers, &answer.to_string()).expect("POST the answer");
    assert_eq!(
        reply.status, 202,
        "the answer via node {answering}: {reply:?}"
    );

    let result = events
        .until("the tool's result", |m| m["id"] == 7)
        .unwrap_or_else(|e| panic!("{e}\n{}", fleet.cluster.logs()));
    eprintln!(
        "elicitation: asked on node {asking} (id {ask_id}), answered via node {answering}, \
         result on node {asking}'s stream after {:?}: {result}",
        started.elapsed()
    );
    assert!(result.get("error").is_none(), "{result}");
    let text = result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("action=accept") && text.contains("eve@example.com"),
        "the tool saw another answer: {result}"
    );
    assert_ne!(result["result"]["isError"], true, "{result}");
}
