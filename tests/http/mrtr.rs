//! Multi Round-Trip Requests: the round trip, and `requestState` values that are tampered
//! with, expired, or presented with other arguments.

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{Modern, Reply};
use crate::harness::{eventually, Server};

const ELICITATION: &str = "test_elicitation";

fn capabilities() -> Value {
    json!({ "elicitation": {} })
}

/// The first round: the tool asks for input.
fn first_round(server: &Server, message: &str) -> (Value, String) {
    let reply = Modern::call(ELICITATION, json!({ "message": message }))
        .capabilities(capabilities())
        .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = reply.result();
    assert_eq!(result["resultType"], "input_required", "{reply:?}");
    let input = &result["inputRequests"]["input-0"];
    assert_eq!(input["method"], "elicitation/create", "{reply:?}");
    assert!(input["params"]["requestedSchema"].is_object(), "{reply:?}");
    let state = result["requestState"]
        .as_str()
        .expect("a requestState")
        .to_owned();
    (result, state)
}

/// The retry with the user's answer and `state`.
fn retry(server: &Server, message: &str, state: &str) -> Reply {
    let params = json!({
        "name": ELICITATION,
        "arguments": { "message": message },
        "inputResponses": {
            "input-0": { "action": "accept", "content": { "username": "ada-lovelace", "email": "ada@example.com" } },
        },
        "requestState": state,
    });
    Modern::new("tools/call", params)
        .capabilities(capabilities())
        .send(server.url())
}

fn conformance() -> Server {
    Server::builder().conformance().start()
}

#[test]
fn a_round_trip_completes() {
    let server = conformance();
    let (_, state) = first_round(&server, "Who are you?");
    let reply = retry(&server, "Who are you?", &state);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.result()["resultType"], "complete", "{reply:?}");
    let text = reply.tool_text();
    assert!(
        text.contains("ada-lovelace") && text.contains("accept"),
        "{text}"
    );
    // The same state works again: it is self-contained, not consumed.
    assert_eq!(retry(&server, "Who are you?", &state).status, 200);
}

#[test]
fn a_tampered_request_state_is_400() {
    let server = conformance();
    let (_, state) = first_round(&server, "hi");
    let mut bytes = state.clone().into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("ASCII");
    retry(&server, "hi", &tampered).assert_error(400, -32602);
    retry(&server, "hi", "not-a-request-state!").assert_error(400, -32602);
    let truncated = &state[..state.len() - 4];
    retry(&server, "hi", truncated).assert_error(400, -32602);
    // The genuine state still works.
    assert_eq!(retry(&server, "hi", &state).status, 200);
}

#[test]
fn an_expired_request_state_is_400() {
    let server = Server::builder()
        .conformance()
        .config("[mcp]\nrequest_state_ttl = \"1ms\"\n")
        .start();
    let (_, state) = first_round(&server, "hurry");
    // Observable expiry: retry until the server refuses the state (it must, within 1 ms
    // of issuing it; the deadline only bounds a broken server).
    let reply = eventually("the requestState to expire", Duration::from_secs(5), || {
        let reply = retry(&server, "hurry", &state);
        (reply.status != 200).then_some(reply)
    });
    reply.assert_error(400, -32602);
}

#[test]
fn a_request_state_with_other_arguments_is_400() {
    let server = conformance();
    let (_, state) = first_round(&server, "original");
    retry(&server, "changed", &state).assert_error(400, -32602);
    // Nor does it fit another tool that asks the same question shape.
    let params = json!({
        "name": "test_elicitation_sep1034_defaults",
        "arguments": {},
        "inputResponses": { "input-0": { "action": "accept", "content": {} } },
        "requestState": state,
    });
    let reply = Modern::new("tools/call", params)
        .capabilities(capabilities())
        .send(server.url());
    reply.assert_error(400, -32602);
    assert_eq!(retry(&server, "original", &state).status, 200);
}

#[test]
fn input_without_the_capability_is_refused() {
    let server = conformance();
    let reply = Modern::call(ELICITATION, json!({ "message": "m" })).send(server.url());
    reply.assert_error(400, -32021);
}

#[test]
fn a_request_state_over_its_cap_is_refused_coming_and_going() {
    let server = Server::builder()
        .conformance()
        .config("[mcp]\nmax_request_state_bytes = 2048\n")
        .start();
    // Coming in: refused before it is opened, naming the field and the cap.
    let params = json!({
        "name": ELICITATION,
        "arguments": { "message": "m" },
        "requestState": "A".repeat(3000),
    });
    let reply = Modern::new("tools/call", params)
        .capabilities(capabilities())
        .send(server.url());
    reply.assert_error(400, -32602);
    let message = reply.json()["error"]["message"].to_string();
    assert!(
        message.contains("params.requestState") && message.contains("mcp.max_request_state_bytes"),
        "{message}"
    );

    // Going out: a large first answer would travel on in the second round's state.
    let tool = "test_input_required_result_multi_round";
    let first = Modern::call(tool, json!({}))
        .capabilities(capabilities())
        .send(server.url());
    let state = first.result()["requestState"]
        .as_str()
        .expect("a requestState")
        .to_owned();
    let params = json!({
        "name": tool,
        "arguments": {},
        "inputResponses": {
            "step1": { "action": "accept", "content": { "name": "n".repeat(3000) } },
        },
        "requestState": state,
    });
    let reply = Modern::new("tools/call", params)
        .capabilities(capabilities())
        .send(server.url());
    reply.assert_error(400, -32602);
    let message = reply.json()["error"]["message"].to_string();
    assert!(message.contains("mcp.max_request_state_bytes"), "{message}");
    // An ordinary round trip is unaffected.
    let (_, state) = first_round(&server, "small");
    assert_eq!(retry(&server, "small", &state).status, 200);
}
