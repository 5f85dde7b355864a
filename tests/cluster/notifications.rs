//! Fleet-wide notifications: `notifications/resources/updated` announced by a tool on one
//! node reaches the subscribers that other nodes hold, a legacy session's GET stream and a
//! 2026-07-28 `subscriptions/listen` stream alike, once each. And a legacy session that
//! last listed tools on a node with other tools (a rolling upgrade) hears
//! `notifications/tools/list_changed` from a node whose tools differ.

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{get_stream, modern_call, post, post_stream, Session, MODERN};
use crate::fleet::Fleet;
use crate::harness::{run_bounded, Cluster};

const WATCHED: &str = "test://fleet/watched";
const ALSO_WATCHED: &str = "test://fleet/also-watched";
const UNWATCHED: &str = "test://fleet/unwatched";
/// How long the Python clients may run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(90);

/// Calls `test_update_resource` for `uri` on node `node`.
fn announce(fleet: &Fleet, node: u64, token: &str, uri: &str) {
    let url = fleet.cluster.node(node).mcp_url();
    let reply = modern_call(
        &url,
        Some(token),
        "test_update_resource",
        json!({ "uri": uri }),
    )
    .unwrap_or_else(|e| panic!("test_update_resource on node {node}: {e}"));
    assert_eq!(reply.status, 200, "node {node}: {reply:?}");
}

fn is_update(message: &Value) -> bool {
    message["method"] == "notifications/resources/updated"
}

#[test]
fn a_resource_update_on_one_node_reaches_streams_held_by_the_others() {
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let url = |id: u64| fleet.cluster.node(id).mcp_url();
    let token = fleet.token("ada");
    let bearer = format!("Bearer {token}");

    // Node 2 holds a legacy session's GET stream, subscribed to two resources.
    let session = Session::open_as(&url(2), "notifications", Some(&token))
        .expect("initialize")
        .session(Some(&token))
        .unwrap_or_else(|e| panic!("{e}"));
    session.initialized(&url(2)).expect("initialized");
    for uri in [WATCHED, ALSO_WATCHED] {
        let subscribe = json!({ "jsonrpc": "2.0", "id": 2, "method": "resources/subscribe",
            "params": { "uri": uri } });
        let reply = post(&url(2), &session.headers(), &subscribe.to_string()).expect("subscribe");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let (status, mut legacy) = get_stream(&url(2), &session.headers()).expect("GET stream");
    assert_eq!(status, 200, "GET stream on node 2");

    // Node 3 holds a 2026-07-28 listen stream for the same two.
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let listen = json!({ "jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen",
        "params": { "_meta": meta,
            "notifications": { "resourceSubscriptions": [WATCHED, ALSO_WATCHED] } } });
    let headers = [
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", "subscriptions/listen"),
        ("Authorization", bearer.as_str()),
    ];
    let (status, mut modern) =
        post_stream(&url(3), &headers, &listen.to_string()).expect("subscriptions/listen");
    assert_eq!(status, 200, "subscriptions/listen on node 3");
    let ack = modern.next_message().expect("the acknowledgement");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );

    // Node 1 announces: something nobody watches, then each watched resource once.
    announce(&fleet, 1, &token, UNWATCHED);
    announce(&fleet, 1, &token, WATCHED);
    announce(&fleet, 1, &token, ALSO_WATCHED);

    // Each stream gets exactly the watched ones, in order: nothing unwatched, no echo of
    // an update relayed back and forth.
    for (name, events) in [
        ("node 2's GET stream", &mut legacy),
        ("node 3's listen stream", &mut modern),
    ] {
        let fail = |e: String| panic!("{name}: {e}\n{}", fleet.cluster.logs());
        let first = events
            .until("the first update", is_update)
            .unwrap_or_else(fail);
        assert_eq!(first["params"]["uri"], WATCHED, "{name}: {first}");
        let second = events
            .until("the second update", is_update)
            .unwrap_or_else(fail);
        assert_eq!(second["params"]["uri"], ALSO_WATCHED, "{name}: {second}");
    }

    // From another node the same: node 2 announces, node 3's stream names its subscription.
    announce(&fleet, 2, &token, WATCHED);
    let update = modern
        .until("an update announced on node 2", is_update)
        .unwrap_or_else(|e| panic!("{e}\n{}", fleet.cluster.logs()));
    assert_eq!(update["params"]["uri"], WATCHED, "{update}");
    let subscription = &update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"];
    assert_eq!(subscription, "sub-1", "{update}");
}

#[test]
fn python_sdk_clients_on_two_nodes_receive_an_update_announced_on_a_third() {
    let script = "notifications.py";
    let mut cmd = crate::python::client(script);
    let Some(fleet) = Fleet::builder().unbalanced().conformance().start(3) else {
        return;
    };
    let url = |id: u64| fleet.cluster.node(id).mcp_url();
    cmd.args([url(1), url(2), url(3), WATCHED.to_owned()])
        .env("FLEET_TOKEN", fleet.token("sdk-user"));
    let out = run_bounded(cmd, CLIENT_DEADLINE)
        .unwrap_or_else(|e| panic!("{script}: {e}\n{}", fleet.logs()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\n{stderr}"));
    eprintln!("notifications through the Python SDK: {report}");
    assert_eq!(report["errors"], json!([]), "{report:#}\n{stderr}");
    // Every update either client got is of the one URI announced, and each got it.
    for era in ["legacy", "modern"] {
        let got = report[era].as_array().expect("a list of URIs");
        assert!(!got.is_empty(), "{era}: nothing arrived: {report:#}");
        assert!(got.iter().all(|u| u == WATCHED), "{era}: {report:#}");
    }
}

/// The methods of the messages a legacy request on `session` through `url` is answered
/// with, in order (the response itself as `"response"`).
fn answered_with(session: &Session, url: &str, method: &str) -> Vec<String> {
    let body = json!({ "jsonrpc": "2.0", "id": 9, "method": method, "params": {} });
    let reply = post(url, &session.headers(), &body.to_string())
        .unwrap_or_else(|e| panic!("{method} through {url}: {e}"));
    assert_eq!(reply.status, 200, "{method} through {url}: {reply:?}");
    reply
        .messages()
        .iter()
        .map(|m| m["method"].as_str().unwrap_or("response").to_owned())
        .collect()
}

/// The tool names `tools/list` through `url` shows `session`.
fn listed(session: &Session, url: &str) -> Vec<String> {
    let body = json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {} });
    let reply = post(url, &session.headers(), &body.to_string()).expect("tools/list");
    let message = reply.message().expect("a tools/list answer");
    message["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{message}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const LIST_CHANGED: &str = "notifications/tools/list_changed";

#[test]
fn a_session_hears_list_changed_from_a_node_whose_tools_differ_from_those_it_listed() {
    // A rolling upgrade half done: node 3 runs a build with more tools.
    let mut cluster = Cluster::start(3);
    cluster.restart_program(3, crate::examples::example("conformance"));
    cluster.wait_ready(3);
    let url = |id: u64| cluster.node(id).mcp_url();
    let opened = Session::open_as(&url(1), "list-changed", None).expect("initialize");
    let init = opened.message().expect("an initialize answer");
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"], true,
        "{init}"
    );
    let session = opened.session(None).unwrap_or_else(|e| panic!("{e}"));
    session.initialized(&url(1)).expect("initialized");

    // Nothing listed yet: nothing to say, whichever node answers.
    assert_eq!(answered_with(&session, &url(3), "ping"), ["response"]);

    // Listed on node 1: node 2 serves the same tools, node 3 others.
    assert!(!listed(&session, &url(1))
        .iter()
        .any(|t| t == "test_simple_text"));
    assert_eq!(answered_with(&session, &url(2), "ping"), ["response"]);
    cluster.eventually(
        "node 3 to say its tools changed",
        Duration::from_secs(10),
        || {
            let methods = answered_with(&session, &url(3), "ping");
            (methods == [LIST_CHANGED, "response"]).then_some(())
        },
    );

    // Listed again on node 3: node 3 is quiet, and now node 1 is the one that differs.
    assert!(listed(&session, &url(3))
        .iter()
        .any(|t| t == "test_simple_text"));
    assert_eq!(answered_with(&session, &url(3), "ping"), ["response"]);
    cluster.eventually(
        "node 1 to say its tools changed",
        Duration::from_secs(10),
        || {
            let methods = answered_with(&session, &url(1), "ping");
            (methods == [LIST_CHANGED, "response"]).then_some(())
        },
    );
}
