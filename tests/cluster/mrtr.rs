//! Multi Round-Trip Requests (2026-07-28) across nodes: each round of one tool call lands
//! on another node, as a round-robin balancer sends them, and the `requestState` a node
//! sealed opens on every other one for its principal only.

use serde_json::{json, Map, Value};

use crate::client::modern_tool_call;
use crate::fleet::Fleet;

const MULTI_ROUND: &str = "test_input_required_result_multi_round";

/// One round of the call on node `node`: the result, after checking it is JSON-RPC success.
fn round(fleet: &Fleet, node: u64, token: &str, params: &Value) -> Value {
    let url = fleet.cluster.node(node).mcp_url();
    let capabilities = json!({ "elicitation": {} });
    let reply = modern_tool_call(&url, Some(token), capabilities, params.clone())
        .unwrap_or_else(|e| panic!("tools/call on node {node}: {e}"));
    assert_eq!(reply.status, 200, "node {node}: {reply:?}");
    let message = reply.message().expect("a JSON-RPC response");
    assert!(message.get("error").is_none(), "node {node}: {message}");
    message["result"].clone()
}

/// The retry answering every input request of `result` with `content`.
fn retry(result: &Value, content: Value) -> Value {
    assert_eq!(result["resultType"], "input_required", "{result}");
    let asked = result["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(asked.len(), 1, "one question per round: {result}");
    let answers: Map<String, Value> = asked
        .keys()
        .map(|key| {
            let answer = json!({ "action": "accept", "content": content });
            (key.clone(), answer)
        })
        .collect();
    json!({
        "name": MULTI_ROUND,
        "arguments": {},
        "inputResponses": answers,
        "requestState": result["requestState"].as_str().expect("a requestState"),
    })
}

fn question(result: &Value) -> String {
    let asked = result["inputRequests"].as_object().expect("inputRequests");
    let (_, request) = asked.iter().next().expect("an input request");
    assert_eq!(request["method"], "elicitation/create", "{result}");
    request["params"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn each_round_of_a_multi_round_request_is_served_by_another_node() {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let token = fleet.token("ada");
    let first = json!({ "name": MULTI_ROUND, "arguments": {} });

    // Round 1 on node 1: the first question.
    let asked_name = round(&fleet, 1, &token, &first);
    assert!(question(&asked_name).contains("name"), "{asked_name}");

    // Round 2 on node 2: node 1's requestState opens there; the second question.
    let named = retry(&asked_name, json!({ "name": "Ada" }));
    let asked_color = round(&fleet, 2, &token, &named);
    assert!(question(&asked_color).contains("color"), "{asked_color}");

    // Round 3 on node 3: node 2's requestState carries node 1's answer too.
    let colored = retry(&asked_color, json!({ "color": "teal" }));
    let done = round(&fleet, 3, &token, &colored);
    assert_eq!(done["resultType"], "complete", "{done}");
    let text = done["content"][0]["text"].as_str().unwrap_or_default();
    assert_eq!(
        text, "Multi-round complete for Ada who likes teal",
        "{done}"
    );

    // The state is self-contained, not consumed by a node: round 2 again, on node 3.
    let again = round(&fleet, 3, &token, &named);
    assert_eq!(question(&again), question(&asked_color), "{again}");

    // Bound to its principal on every node: another caller's retry is refused.
    let other = fleet.token("mallory");
    for node in [1, 2, 3] {
        let url = fleet.cluster.node(node).mcp_url();
        let reply = modern_tool_call(
            &url,
            Some(&other),
            json!({ "elicitation": {} }),
            named.clone(),
        )
        .unwrap_or_else(|e| panic!("tools/call on node {node}: {e}"));
        assert_eq!(
            reply.status, 400,
            "node {node}, another principal: {reply:?}"
        );
        let message = reply.message().expect("a JSON-RPC error");
        assert_eq!(message["error"]["code"], -32602, "node {node}: {message}");
    }
}
