//! Prometheus `/metrics` on the internal listener, behind the cluster secret, and the JSON
//! access log of the public listener.

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{get, post, request, Modern};
use crate::harness::{eventually, Server};

/// The cluster secret of the server these tests start.
pub const SECRET: &str = "metrics-tests-cluster-secret";

/// The value of the sample named exactly `series` (name and labels), if it is there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Scrapes `url` with the cluster secret.
pub fn scrape(url: &str) -> String {
    let authorization = format!("Bearer {SECRET}");
    let reply = get(url, &[("authorization", &authorization)]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{reply:?}"
    );
    reply.body
}

#[test]
fn metrics_move_with_calls_and_need_the_cluster_secret() {
    let server = Server::builder()
        .args(&["--auth", "dev"])
        .config("[log]\nformat = \"json\"\n")
        .env("MCP_FLEET_CLUSTER_SECRET", SECRET)
        .start();
    let line = server.stdout_line(2);
    let token = line
        .strip_prefix("mcp-fleet bearer token: ")
        .unwrap_or_else(|| panic!("third line {line:?}"))
        .to_owned();
    let bearer = format!("Bearer {token}");
    let url = format!("http://{}/metrics", server.internal());

    // The internal listener wants the cluster secret: no header, or a user's token, is 401.
    assert_eq!(get(&url, &[]).status, 401);
    assert_eq!(get(&url, &[("authorization", &bearer)]).status, 401);

    let before = scrape(&url);
    let ok_calls = "mcp_fleet_tool_calls_total{tool=\"echo\",outcome=\"ok\"}";
    assert_eq!(sample(&before, ok_calls), Some(0.0), "{before}");
    assert_eq!(sample(&before, "mcp_fleet_raft_is_leader"), Some(1.0));
    // A node of one checks its key before it listens.
    assert_eq!(sample(&before, "mcp_fleet_keys_verified"), Some(1.0));
    assert_eq!(sample(&before, "mcp_fleet_keys_active"), Some(1.0));

    let reply = Modern::call("echo", json!({ "text": "counted" }))
        .header("Authorization", &bearer)
        .header("x-request-id", "metrics-test-1")
        .send(server.url());
    assert_eq!(reply.tool_text(), "counted", "{reply:?}");
    assert_eq!(reply.header("x-request-id"), Some("metrics-test-1"));
    // A legacy session is a record in the fleet store, written through Raft.
    let params = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": { "name": "metrics-tests", "version": "0" },
    });
    let reply = post(
        server.url(),
        &[("authorization", &bearer)],
        &request(0, "initialize", params).to_string(),
    );
    assert!(reply.header("mcp-session-id").is_some(), "{reply:?}");
    let refused = Modern::new("tools/list", json!({})).send(server.url());
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.header("x-request-id").is_some(), "{refused:?}");

    let after = scrape(&url);
    assert_eq!(sample(&after, ok_calls), Some(1.0), "{after}");
    assert_eq!(
        sample(
            &after,
            "mcp_fleet_tool_call_duration_seconds_count{tool=\"echo\"}"
        ),
        Some(1.0),
        "{after}"
    );
    let posts = "mcp_fleet_http_requests_total{method=\"POST\",status=\"200\"}";
    assert!(sample(&after, posts) >= Some(1.0), "{after}");
    let refusals = "mcp_fleet_http_requests_total{method=\"POST\",status=\"401\"}";
    assert_eq!(sample(&after, refusals), Some(1.0), "{after}");
    let checked: f64 = ["verified", "memory_hit"]
        .iter()
        .filter_map(|r| sample(&after, &format!("mcp_fleet_auth_total{{result=\"{r}\"}}")))
        .sum();
    assert!(checked >= 1.0, "{after}");
    for series in [
        "mcp_fleet_auth_total{result=\"refused\"}",
        "mcp_fleet_jwks_fetches_total",
        "mcp_fleet_raft_term",
        "mcp_fleet_raft_leader_changes_total",
        "mcp_fleet_raft_applied_index",
        "mcp_fleet_raft_last_log_index",
        "mcp_fleet_raft_commit_seconds_count",
        "mcp_fleet_http_request_duration_seconds_count{method=\"POST\"}",
    ] {
        assert!(
            sample(&after, series).is_some(),
            "{series} missing:\n{after}"
        );
    }
    assert!(sample(&after, "mcp_fleet_raft_leader_changes_total") >= Some(1.0));
    let sessions = "mcp_fleet_store_records{table=\"mcp_sessions\"}";
    assert_eq!(sample(&after, sessions), Some(1.0), "{after}");
    let commits = "mcp_fleet_raft_commit_seconds_count";
    assert!(
        sample(&after, commits) > sample(&before, commits),
        "{after}"
    );

    // The JSON log: one access line for the call, with the caller's request id, the tool,
    // the caller's subject and the outcome, and no second line for the call at `info`; the
    // token nowhere. Waiting for the last request's line (the 401) waits for all of them.
    let log = eventually("the access lines", Duration::from_secs(5), || {
        // Complete lines only: the node's log writer may be part-way through a line.
        let log = server.log();
        let complete = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
        (complete.contains("metrics-test-1") && complete.contains("\"status\":401"))
            .then(|| complete.to_owned())
    });
    assert!(
        !log.contains(&token),
        "the bearer token reached the log:\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["span"]["request_id"] == "metrics-test-1")
        .collect();
    assert_eq!(access.len(), 1, "one access line per request:\n{log}");
    assert_eq!(access[0]["status"], 200, "{log}");
    assert_eq!(access[0]["span"]["method"], "POST", "{log}");
    assert_eq!(access[0]["span"]["path"], "/mcp", "{log}");
    assert_eq!(access[0]["tool"], "echo", "{log}");
    assert_eq!(access[0]["subject"], "dev-user", "{log}");
    assert_eq!(access[0]["outcome"], "ok", "{log}");
    assert!(access[0]["latency_ms"].is_f64(), "{log}");
    assert!(
        !lines.iter().any(|l| l["message"] == "tool call"),
        "the call was logged twice:\n{log}"
    );
    // A request that called no tool names none.
    let refused = lines
        .iter()
        .find(|l| l["message"] == "request" && l["status"] == 401)
        .expect("the 401's access line");
    assert!(refused.get("tool").is_none(), "{log}");
}

#[test]
fn log_lines_held_for_batching_are_all_written_at_a_clean_stop() {
    // Info lines wait up to a minute: only the stop can write this one in time.
    let mut server = Server::builder()
        .config("[log]\nformat = \"json\"\nflush_interval = \"60s\"\n")
        .start();
    let reply = Modern::call("echo", json!({ "text": "last words" }))
        .header("x-request-id", "stop-test-1")
        .send(server.url());
    assert_eq!(reply.tool_text(), "last words", "{reply:?}");
    assert!(
        !server.log().contains("stop-test-1"),
        "the line was not held:\n{}",
        server.log()
    );
    let status = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let log = server.log();
    let access = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request" && l["span"]["request_id"] == "stop-test-1")
        .unwrap_or_else(|| panic!("the access line was lost at the stop:\n{log}"));
    assert_eq!(access["status"], 200, "{log}");
    assert_eq!(access["tool"], "echo", "{log}");
}
