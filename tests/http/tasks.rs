//! Tasks on one node, on the real binary: the caps on results and on how many tasks a
//! principal holds, results larger than a Raft entry, the lease a running task's node
//! renews, and legacy sessions, which have no tasks. (The protocol's own checks are the
//! conformance suite's `tasks-*` scenarios; cross-node behaviour is in the cluster suite.)

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{Modern, Reply, Session};
use crate::harness::{eventually, Server};
use crate::metrics::{sample, scrape, SECRET};

fn capabilities() -> Value {
    json!({ "elicitation": {}, "extensions": { "io.modelcontextprotocol/tasks": {} } })
}

fn call(server: &Server, tool: &str, arguments: Value) -> Reply {
    Modern::call(tool, arguments)
        .capabilities(capabilities())
        .send(server.url())
}

fn start(server: &Server, tool: &str, arguments: Value) -> String {
    let reply = call(server, tool, arguments);
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = reply.result();
    assert_eq!(result["resultType"], "task", "{reply:?}");
    result["taskId"].as_str().expect("a taskId").to_owned()
}

fn get(server: &Server, task: &str) -> Value {
    let reply = Modern::new("tasks/get", json!({ "taskId": task }))
        .capabilities(capabilities())
        .send(server.url());
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.result()
}

fn ended(server: &Server, task: &str) -> Value {
    eventually(
        &format!("task {task} to end"),
        Duration::from_secs(30),
        || {
            let task = get(server, task);
            matches!(
                task["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(task)
        },
    )
}

fn conformance() -> crate::harness::Builder {
    Server::builder()
        .conformance()
        .env("MCP_FLEET_CLUSTER_SECRET", SECRET)
}

#[test]
fn a_result_over_the_cap_fails_the_task_naming_the_cap_and_is_counted() {
    let server = conformance()
        .config("[tasks]\nmax_result_bytes = 1000\n")
        .start();
    let small = start(&server, "big_result", json!({ "bytes": 500 }));
    assert_eq!(ended(&server, &small)["status"], "completed");

    let big = start(&server, "big_result", json!({ "bytes": 5000 }));
    let task = ended(&server, &big);
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["result"].is_null(), "{task}");
    let message = task["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("tasks.max_result_bytes") && message.contains("1000"),
        "{task}"
    );
    let metrics = scrape(&format!("http://{}/metrics", server.internal()));
    let refusals = "mcp_fleet_limit_refusals_total{limit=\"tasks.max_result_bytes\"}";
    assert_eq!(sample(&metrics, refusals), Some(1.0), "{metrics}");
}

#[test]
fn a_result_larger_than_a_raft_entry_is_stored_in_pieces_and_read_whole() {
    let server = conformance()
        .env("MCP_FLEET_RAFT__MAX_ENTRY_BYTES", "8192")
        .start();
    let task = start(&server, "big_result", json!({ "bytes": 50_000 }));
    let task = ended(&server, &task);
    assert_eq!(task["status"], "completed", "{task}");
    let text = task["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text.len(), 50_000);
}

#[test]
fn tasks_are_capped_per_principal_with_429_naming_the_cap() {
    let server = conformance()
        .config("[tasks]\nmax_tasks_per_principal = 2\n")
        .start();
    for _ in 0..2 {
        start(&server, "slow_compute", json!({ "seconds": 600 }));
    }
    let refused = call(&server, "slow_compute", json!({ "seconds": 600 }));
    refused.assert_error(429, -32010);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tasks.max_tasks_per_principal"),
        "{refused:?}"
    );
    let metrics = scrape(&format!("http://{}/metrics", server.internal()));
    let cap = "{limit=\"tasks.max_tasks_per_principal\"}";
    let refusals = format!("mcp_fleet_limit_refusals_total{cap}");
    assert_eq!(sample(&metrics, &refusals), Some(1.0), "{metrics}");
    let in_use = format!("mcp_fleet_limit_in_use{cap}");
    assert_eq!(sample(&metrics, &in_use), Some(2.0), "{metrics}");
    // A tool that never runs as a task is not held back by the cap.
    let greet = call(&server, "greet", json!({ "name": "Ada" }));
    assert_eq!(greet.status, 200, "{greet:?}");
    assert_eq!(greet.tool_text(), "Hello, Ada!");
}

#[test]
fn a_task_outliving_its_lease_stays_working_while_its_node_renews_the_lease() {
    let server = conformance()
        .config("[tasks]\nowner_lost_after = \"300ms\"\n")
        .start();
    let task = start(&server, "slow_compute", json!({ "seconds": 2 }));
    // Many leases long: each poll sees it working until it completes, never failed.
    let done = eventually("the task to complete", Duration::from_secs(30), || {
        let seen = get(&server, &task);
        let status = seen["status"].as_str().unwrap_or_default().to_owned();
        assert!(status == "working" || status == "completed", "{seen}");
        std::thread::sleep(Duration::from_millis(50));
        (status == "completed").then_some(seen)
    });
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("computed after 2 s"),
        "{done}"
    );
}

#[test]
fn a_legacy_session_runs_a_task_supporting_tool_in_its_response_and_has_no_task_methods() {
    let server = conformance().start();
    let session = Session::initialize(server.url(), "2025-11-25");
    let reply = session.send(
        server.url(),
        "tools/call",
        json!({ "name": "slow_compute", "arguments": { "seconds": 0, "label": "legacy" } }),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.tool_text().contains("legacy"), "{reply:?}");
    let reply = session.send(server.url(), "tasks/get", json!({ "taskId": "x" }));
    assert_eq!(reply.json()["error"]["code"], -32601, "{reply:?}");
}

#[test]
fn a_tool_that_asks_first_becomes_a_task_with_the_answers_it_gathered() {
    let server = conformance().start();
    let first = call(&server, "test_tool_with_task", json!({}));
    let round = first.result();
    assert_eq!(round["resultType"], "input_required", "{first:?}");
    assert!(round.get("taskId").is_none(), "{first:?}");
    let key = round["inputRequests"]
        .as_object()
        .and_then(|r| r.keys().next().cloned())
        .expect("a question");
    let params = json!({
        "name": "test_tool_with_task",
        "arguments": {},
        "inputResponses": { key: { "action": "accept", "content": { "name": "Grace" } } },
        "requestState": round["requestState"],
    });
    let second = Modern::new("tools/call", params)
        .capabilities(capabilities())
        .send(server.url());
    let created = second.result();
    assert_eq!(created["resultType"], "task", "{second:?}");
    assert!(created.get("requestState").is_none(), "{second:?}");
    let task = created["taskId"].as_str().expect("a taskId");
    let done = ended(&server, task);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"], "Hello, Grace, from a task!",
        "{done}"
    );

    // A client that cannot hold a task is refused before anything is asked.
    let refused = Modern::call("test_tool_with_task", json!({})).send(server.url());
    assert_eq!(refused.json()["error"]["code"], -32021, "{refused:?}");
}

#[test]
fn answers_over_the_cap_are_refused_naming_it_and_the_task_still_waits() {
    let server = conformance()
        .config("[tasks]\nmax_input_bytes = 200\n")
        .start();
    let task = start(&server, "confirm_delete", json!({ "filename": "a" }));
    let asking = eventually("the question", Duration::from_secs(30), || {
        let task = get(&server, &task);
        (task["status"] == "input_required").then_some(task)
    });
    let key = asking["inputRequests"]
        .as_object()
        .and_then(|r| r.keys().next().cloned())
        .expect("a question");
    let update = |answer: Value| {
        Modern::new(
            "tasks/update",
            json!({ "taskId": task, "inputResponses": { &key: answer } }),
        )
        .capabilities(capabilities())
        .send(server.url())
    };
    let big =
        json!({ "action": "accept", "content": { "confirm": true, "note": "n".repeat(500) } });
    let refused = update(big);
    refused.assert_error(400, -32602);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("tasks.max_input_bytes") && message.contains("params.inputResponses"),
        "{message}"
    );
    assert_eq!(get(&server, &task)["status"], "input_required");
    let ack = update(json!({ "action": "accept", "content": { "confirm": true } }));
    assert_eq!(ack.status, 200, "{ack:?}");
    assert_eq!(
        ended(&server, &task)["result"]["content"][0]["text"],
        "Deleted a"
    );
}
