//! One client through the load balancer, driven by the official Python SDK: a legacy
//! session and stateless 2026-07-28 requests, each call on whichever node HAProxy picks,
//! without a refusal, a lost session or an error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::fleet::Fleet;
use crate::harness::run_bounded;

/// Consecutive `echo` calls in each mode.
const CALLS: u64 = 200;
/// How long the Python client may run (both modes).
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn python_sdk_calls_round_robin_over_three_nodes() {
    let script = "round_robin.py";
    let mut cmd = crate::python::client(script);
    let Some(fleet) = Fleet::builder().start(3) else {
        return;
    };
    let lb = fleet.lb();
    let before = lb.stats().expect("haproxy stats");
    cmd.arg(fleet.url())
        .arg(CALLS.to_string())
        .env("FLEET_TOKEN", fleet.token("round-robin-user"));
    let out = run_bounded(cmd, CLIENT_DEADLINE)
        .unwrap_or_else(|e| panic!("{script}: {e}\n{}", fleet.logs()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        fleet.logs()
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let after = lb.stats().expect("haproxy stats");

    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let report = &summary[mode];
        eprintln!(
            "round robin, {mode}: {}/{} calls ok, {} errors, HTTP statuses {}, session ids {}",
            report["ok"],
            report["calls"],
            report["errors"].as_array().map_or(0, Vec::len),
            report["statuses"],
            report["session_ids"]
        );
        assert_eq!(report["errors"], Value::Array(vec![]), "{mode}: {report:#}");
        assert_eq!(report["ok"], CALLS, "{mode}: {report:#}");
        assert_eq!(report["protocol_version"], version, "{mode}: {report:#}");
        assert_eq!(report["subject"], "round-robin-user", "{mode}: {report:#}");
        let refused: BTreeMap<&String, &Value> = report["statuses"]
            .as_object()
            .expect("statuses")
            .iter()
            .filter(|(key, _)| {
                !key.ends_with(" 200") && !key.ends_with(" 202") && !key.ends_with(" 204")
            })
            .collect();
        // No 401 (no re-authentication), no 404 (no lost session), nothing else either.
        assert!(
            refused.is_empty(),
            "{mode}: statuses {refused:?}\n{report:#}"
        );
        let sessions = report["session_ids"].as_array().expect("session ids").len();
        let expected = if mode == "legacy" { 1 } else { 0 };
        assert_eq!(
            sessions, expected,
            "{mode}: one session for the whole run: {report:#}"
        );
    }

    // Every node served its share: HAProxy's per-server counters.
    let mut served: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
    let mut chosen: BTreeMap<u64, u64> = BTreeMap::new();
    for (id, stats) in &after {
        let was = before.get(id).cloned().unwrap_or_default();
        let delta = |class| stats.class(class) - was.class(class);
        served.insert(*id, [delta(2), delta(4), delta(5)]);
        chosen.insert(*id, stats.selected - was.selected);
    }
    let total: u64 = served.values().map(|[ok, _, _]| ok).sum();
    eprintln!(
        "round robin: requests haproxy sent to each node {chosen:?}; responses per node \
         [2xx, 4xx, 5xx] {served:?}"
    );
    assert!(
        total >= 2 * CALLS,
        "haproxy counted {total} 2xx responses: {served:?}"
    );
    for (id, [ok, client_errors, server_errors]) in &served {
        assert_eq!(
            (client_errors, server_errors),
            (&0, &0),
            "node {id}: {served:?}"
        );
        assert!(
            *ok * 4 >= total,
            "node {id} served {ok} of {total} responses, less than a quarter: {served:?}"
        );
    }
}
