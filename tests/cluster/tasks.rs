//! Tasks (`io.modelcontextprotocol/tasks`) across nodes: a task accepted by one node is
//! read, answered and cancelled through the others, and is nobody else's; a cancel
//! received by another node stops the work where it runs; a task whose node is killed
//! is reported failed by another node, or run again there when its tool says that is
//! safe; a listen stream on one node hears the status changes of a task another node
//! runs. Prints how long after the kill the failure was seen.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{modern_request, post_stream, MODERN};
use crate::fleet::Fleet;

/// Generous: writes wait on members that no longer answer after a kill.
const DEADLINE: Duration = Duration::from_secs(60);

fn capabilities() -> Value {
    json!({ "elicitation": {}, "extensions": { "io.modelcontextprotocol/tasks": {} } })
}

/// The JSON-RPC answer to `method` with `params` through node `id` as `token`.
fn ask(fleet: &Fleet, id: u64, token: &str, method: &str, params: Value) -> Value {
    let url = fleet.cluster.node(id).mcp_url();
    let reply = modern_request(&url, Some(token), method, params.clone(), capabilities())
        .unwrap_or_else(|e| panic!("{method} {params} through node {id}: {e}"));
    reply
        .message()
        .unwrap_or_else(|| panic!("{method} through node {id}: no JSON-RPC answer: {reply:?}"))
}

/// Starts a task of `tool` through node `id`; returns its id.
fn start(fleet: &Fleet, id: u64, token: &str, tool: &str, arguments: Value) -> String {
    let answer = ask(
        fleet,
        id,
        token,
        "tools/call",
        json!({ "name": tool, "arguments": arguments }),
    );
    let result = &answer["result"];
    assert_eq!(result["resultType"], "task", "{answer}");
    result["taskId"].as_str().expect("a taskId").to_owned()
}

/// `tasks/get` of `task` through node `id`: the result, or panics on an error.
fn get(fleet: &Fleet, id: u64, token: &str, task: &str) -> Value {
    let answer = ask(fleet, id, token, "tasks/get", json!({ "taskId": task }));
    assert!(
        answer["error"].is_null(),
        "tasks/get through node {id}: {answer}"
    );
    answer["result"].clone()
}

/// Waits until `tasks/get` through node `id` shows `status`; returns that answer.
fn until_status(fleet: &Fleet, id: u64, token: &str, task: &str, status: &str) -> Value {
    fleet.cluster.eventually(
        &format!("task {task} to be {status} seen through node {id}"),
        DEADLINE,
        || {
            let task = get(fleet, id, token, task);
            (task["status"] == status).then_some(task)
        },
    )
}

#[test]
fn a_task_accepted_by_one_node_is_read_answered_and_finished_through_the_others_and_is_nobody_elses(
) {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let ids = fleet.cluster.ids();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let alice = fleet.token("alice");
    let bob = fleet.token("bob");

    let task = start(
        &fleet,
        a,
        &alice,
        "confirm_delete",
        json!({ "filename": "x.txt" }),
    );
    // Readable through another node as soon as it was created.
    let first = get(&fleet, b, &alice, &task);
    assert_eq!(first["taskId"], task.as_str(), "{first}");
    let asking = until_status(&fleet, c, &alice, &task, "input_required");
    let keys: Vec<&String> = asking["inputRequests"]
        .as_object()
        .expect("inputRequests")
        .keys()
        .collect();
    assert_eq!(keys.len(), 1, "{asking}");
    let key = keys[0].clone();
    assert_eq!(
        asking["inputRequests"][&key]["method"], "elicitation/create",
        "{asking}"
    );

    // Another principal finds no such task, through any node, and cannot act on it.
    for id in [a, b, c] {
        for (method, params) in [
            ("tasks/get", json!({ "taskId": task })),
            ("tasks/cancel", json!({ "taskId": task })),
            (
                "tasks/update",
                json!({ "taskId": task, "inputResponses": { &key: { "action": "decline" } } }),
            ),
        ] {
            let answer = ask(&fleet, id, &bob, method, params);
            assert_eq!(answer["error"]["code"], -32602, "{method} as bob: {answer}");
        }
    }

    // Answered through a third node; the tool, running on the first, goes on.
    let answer = json!({ "action": "accept", "content": { "confirm": true } });
    let ack = ask(
        &fleet,
        c,
        &alice,
        "tasks/update",
        json!({ "taskId": task, "inputResponses": { &key: answer } }),
    );
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    let done = until_status(&fleet, b, &alice, &task, "completed");
    assert_eq!(
        done["result"]["content"][0]["text"], "Deleted x.txt",
        "{done}"
    );
    for id in [a, c] {
        assert_eq!(get(&fleet, id, &alice, &task)["result"], done["result"]);
    }
}

#[test]
fn a_cancel_received_by_another_node_stops_the_work_where_it_runs() {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let ids = fleet.cluster.ids();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let alice = fleet.token("alice");

    let task = start(&fleet, a, &alice, "slow_compute", json!({ "seconds": 600 }));
    assert_eq!(get(&fleet, c, &alice, &task)["status"], "working");
    let ack = ask(&fleet, b, &alice, "tasks/cancel", json!({ "taskId": task }));
    assert_eq!(
        ack["result"],
        json!({ "resultType": "complete", "_meta": ack["result"]["_meta"] })
    );
    // `cancelled` is written only when the tool, on node a, returned because its context
    // was cancelled: the cancel travelled from b to the running call.
    until_status(&fleet, c, &alice, &task, "cancelled");
    // Counted where it ran: node a's slow_compute call ended as cancelled, no other
    // node ran one.
    let cancelled = "mcp_fleet_tool_calls_total{tool=\"slow_compute\",outcome=\"cancelled\"} 1";
    let metrics = |id| fleet.cluster.try_metrics(id).unwrap_or_default();
    assert!(metrics(a).contains(cancelled), "node {a}: {}", metrics(a));
    for id in [b, c] {
        assert!(!metrics(id).contains(cancelled), "node {id} ran nothing");
    }
    // A cancel of an ended task is the same empty ack, and changes nothing.
    let again = ask(&fleet, c, &alice, "tasks/cancel", json!({ "taskId": task }));
    assert_eq!(again["result"]["resultType"], "complete", "{again}");
    assert_eq!(get(&fleet, b, &alice, &task)["status"], "cancelled");
}

#[test]
fn a_task_whose_node_is_killed_fails_seen_from_another_node_or_runs_again_when_rerunnable() {
    let Some(mut fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let leader = fleet.cluster.leader();
    let ids = fleet.cluster.ids();
    // The accepting node is a follower, so the fleet keeps its leader through the kill.
    let victim = *ids.iter().find(|&&id| id != leader).expect("a follower");
    let witness = leader;
    let alice = fleet.token("alice");

    let stuck = start(
        &fleet,
        victim,
        &alice,
        "slow_compute",
        json!({ "seconds": 600 }),
    );
    let rerun = start(
        &fleet,
        victim,
        &alice,
        "rerunnable_sleep",
        json!({ "seconds": 2 }),
    );
    assert_eq!(get(&fleet, witness, &alice, &stuck)["status"], "working");
    fleet.cluster.kill(victim);
    let killed = Instant::now();

    let failed = until_status(&fleet, witness, &alice, &stuck, "failed");
    let seen_after = killed.elapsed();
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("node {victim}")) && message.contains("not declared safe"),
        "{failed}"
    );
    assert!(failed["result"].is_null(), "{failed}");
    println!(
        "tasks: a task of killed node {victim} was seen failed through node {witness} \
         {} ms after the kill (tasks.owner_lost_after = 5 s)",
        seen_after.as_millis()
    );

    // The rerunnable one is run again from the start by the node that noticed.
    let done = until_status(&fleet, witness, &alice, &rerun, "completed");
    let status = done["statusMessage"].as_str().unwrap_or_default();
    assert!(
        status.contains(&format!("node {victim}")) && status.contains("running it again"),
        "{done}"
    );
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("computed after 2 s"),
        "{done}"
    );
}

/// Opens a `subscriptions/listen` stream through node `id` as `token` following `tasks`;
/// returns the HTTP status and the stream.
fn listen_for_tasks(
    fleet: &Fleet,
    id: u64,
    token: &str,
    tasks: &[&str],
    capabilities: Value,
) -> Result<crate::client::Stream, ureq::Error> {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    });
    let listen = json!({ "jsonrpc": "2.0", "id": "watch-1", "method": "subscriptions/listen",
        "params": { "_meta": meta, "notifications": { "taskIds": tasks } } });
    let bearer = format!("Bearer {token}");
    let headers = [
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", "subscriptions/listen"),
        ("Authorization", bearer.as_str()),
    ];
    let url = fleet.cluster.node(id).mcp_url();
    post_stream(&url, &headers, &listen.to_string())
}

fn is_task_note(message: &Value) -> bool {
    message["method"] == "notifications/tasks"
}

#[test]
fn a_listen_stream_on_one_node_hears_the_status_of_a_task_another_node_runs() {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let ids = fleet.cluster.ids();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let alice = fleet.token("alice");
    let bob = fleet.token("bob");
    let task = start(
        &fleet,
        a,
        &alice,
        "confirm_delete",
        json!({ "filename": "y.txt" }),
    );

    // Bob names alice's task: it is not his, so it is not acknowledged, and he hears
    // nothing of it. Without the tasks extension, naming tasks is refused.
    let (status, mut bobs) =
        listen_for_tasks(&fleet, b, &bob, &[&task], capabilities()).expect("bob's listen");
    assert_eq!(status, 200);
    let ack = bobs.next_message().expect("bob's acknowledgement");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert!(ack["params"]["notifications"]["taskIds"].is_null(), "{ack}");
    let refused = match listen_for_tasks(&fleet, b, &alice, &[&task], json!({})) {
        Err(ureq::Error::StatusCode(status)) | Ok((status, _)) => status,
        Err(e) => panic!("listen naming tasks without the extension: {e}"),
    };
    assert_eq!(refused, 400, "listen naming tasks without the extension");

    // Alice follows her task through node 2 while node 1 runs it.
    let (status, mut stream) =
        listen_for_tasks(&fleet, b, &alice, &[&task], capabilities()).expect("alice's listen");
    assert_eq!(status, 200);
    let ack = stream.next_message().expect("the acknowledgement");
    assert_eq!(
        ack["params"]["notifications"]["taskIds"],
        json!([task]),
        "{ack}"
    );
    let fail = |e: String| panic!("{e}\n{}", fleet.cluster.logs());
    let asking = stream
        .until("the task asking for input", |m| {
            is_task_note(m) && m["params"]["status"] == "input_required"
        })
        .unwrap_or_else(fail);
    assert_eq!(asking["params"]["taskId"], task.as_str(), "{asking}");
    assert_eq!(
        asking["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "watch-1",
        "{asking}"
    );
    let requests = asking["params"]["inputRequests"]
        .as_object()
        .expect("the questions");
    let key = requests.keys().next().expect("one question").clone();

    // Answered through node 3: node 2's stream hears the end, with the result.
    let answer = json!({ "action": "accept", "content": { "confirm": true } });
    ask(
        &fleet,
        c,
        &alice,
        "tasks/update",
        json!({ "taskId": task, "inputResponses": { &key: answer } }),
    );
    let done = stream
        .until("the task completed", |m| {
            is_task_note(m) && m["params"]["status"] == "completed"
        })
        .unwrap_or_else(fail);
    assert_eq!(
        done["params"]["result"]["content"][0]["text"], "Deleted y.txt",
        "{done}"
    );
}

#[test]
fn a_listen_stream_hears_a_task_failed_when_its_node_is_killed_with_no_one_polling() {
    let Some(mut fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let leader = fleet.cluster.leader();
    let ids = fleet.cluster.ids();
    let victim = *ids.iter().find(|&&id| id != leader).expect("a follower");
    let alice = fleet.token("alice");
    let task = start(
        &fleet,
        victim,
        &alice,
        "slow_compute",
        json!({ "seconds": 600 }),
    );
    let (status, mut stream) =
        listen_for_tasks(&fleet, leader, &alice, &[&task], capabilities()).expect("listen");
    assert_eq!(status, 200);
    let fail = |e: String| panic!("{e}\n{}", fleet.cluster.logs());
    stream
        .until("the task working", |m| {
            is_task_note(m) && m["params"]["status"] == "working"
        })
        .unwrap_or_else(fail);

    // Nobody calls tasks/get: the node holding the stream notices the lapsed lease itself.
    fleet.cluster.kill(victim);
    let fail = |e: String| panic!("{e}");
    let failed = stream
        .until("the task failed", |m| {
            is_task_note(m) && m["params"]["status"] == "failed"
        })
        .unwrap_or_else(fail);
    let message = failed["params"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains(&format!("node {victim}")), "{failed}");
}
