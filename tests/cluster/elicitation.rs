//! A legacy elicitation whose answer arrives at another node: the client's POST with the
//! answer lands, as a load balancer may send it, on a node other than the one running the
//! tool, which forwards it; the tool's result then arrives on the first node's stream.

use std::time::Instant;

use serde_json::json;

use crate::client::{post, post_stream, Session};
use crate::fleet::Fleet;

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
    let params = json!({ "name": "test_elicitation", "arguments": { "message": "Who are you?" } });
    let call = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params });
    let started = Instant::now();
    let (status, mut events) =
        post_stream(&url(asking), &session.headers(), &call.to_string()).expect("POST tools/call");
    assert_eq!(status, 200, "tools/call on node {asking}");
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
