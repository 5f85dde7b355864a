//! Each node reports its server name, version and catalog digest on `/cluster`, and
//! `cluster status` flags a fleet whose nodes differ, as during a rolling upgrade to a
//! build with other tools; meanwhile each node serves its own catalog.

use std::time::Duration;

use serde_json::Value;

use crate::client::modern_call;
use crate::harness::Cluster;

/// `cluster status` asked through node `via`, as printed.
fn status(cluster: &Cluster, via: u64) -> Value {
    let via = cluster.node(via).internal().to_string();
    let out = cluster.cli(&["status", "--via", &via]);
    cluster.assert_success(&out, "cluster status");
    serde_json::from_slice(&out.stdout).expect("cluster status prints JSON")
}

#[test]
fn cluster_status_flags_a_node_serving_another_catalog_while_each_serves_its_own() {
    let mut cluster = Cluster::start(3);
    let before = status(&cluster, 1);
    assert_eq!(before["catalogs_agree"], true, "{before}");
    let digests: Vec<&str> = before["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["report"]["catalog"].as_str().expect("a catalog digest"))
        .collect();
    assert_eq!(digests.len(), 3);
    assert!(
        digests.iter().all(|d| d.len() == 64 && *d == digests[0]),
        "{before}"
    );

    cluster.restart_program(3, crate::examples::example("conformance"));
    cluster.wait_ready(3);
    let after = cluster.eventually(
        "cluster status to flag node 3",
        Duration::from_secs(30),
        || {
            let after = status(&cluster, 1);
            (after["catalogs_agree"] == false).then_some(after)
        },
    );
    let warning = after["catalog_warning"].as_str().expect("a warning");
    assert!(
        warning.contains("node 3: mcp-fleet-conformance"),
        "{warning}"
    );
    assert!(warning.contains("node 1: mcp-fleet "), "{warning}");

    // Each node serves its own catalog meanwhile.
    let fixture = |id: u64| {
        let reply = modern_call(
            &cluster.node(id).mcp_url(),
            None,
            "test_simple_text",
            serde_json::json!({}),
        )
        .expect("an answer");
        reply.message().expect("a JSON-RPC message")
    };
    assert!(fixture(3)["result"]["content"].is_array(), "{}", fixture(3));
    assert!(fixture(1)["error"].is_object(), "{}", fixture(1));
}
