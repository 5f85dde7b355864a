//! Tenant secrets set, rotated and deleted through one node are what a tool call on any
//! other node reads at once; a missing secret is a tool error naming it and nothing of
//! another tenant; values never reach the data directories unsealed, the logs or
//! `/metrics`; bad names, tenants and values are refused naming the cap.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fleet::Fleet;
use crate::harness::random_hex;

/// A `test_secret` call through node `id` as `token`: the text and whether it is an error.
fn secret_call(fleet: &Fleet, id: u64, token: &str, name: &str) -> (String, bool) {
    fleet.tool_text(id, token, "test_secret", json!({ "name": name }))
}

/// Writes `value` to a file for `--from-file`, in a directory removed when the test ends.
fn value_file(dir: &Path, value: &str) -> String {
    let path = dir.join(format!("value-{}", random_hex(4)));
    std::fs::write(&path, format!("{value}\n")).expect("write the value file");
    path.to_string_lossy().into_owned()
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn a_secret_set_or_deleted_through_one_node_is_what_every_other_node_uses_at_once() {
    let Some(fleet) = Fleet::builder()
        .unbalanced()
        .conformance()
        .args(&["--issuer-preset", "workos"])
        .start(3)
    else {
        return;
    };
    let files = tempfile::tempdir().expect("temp dir");
    let ids = fleet.cluster.ids();
    let via = |id: u64| fleet.cluster.node(id).internal().to_string();
    let acme = fleet.token_in("acme", "alice");
    let globex = fleet.token_in("globex", "bob");
    let canary = format!("canary-{}", random_hex(16));

    // Set through node 1; a call through node 3 reads it right after the command returns.
    let path = value_file(files.path(), &canary);
    let out = fleet.cluster.secrets(&[
        "set",
        "--via",
        &via(ids[0]),
        "--tenant",
        "acme",
        "--name",
        "crm_key",
        "--from-file",
        &path,
    ]);
    fleet.cluster.assert_success(&out, "secrets set");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&canary),
        "the answer carries no value"
    );
    assert_eq!(
        secret_call(&fleet, ids[2], &acme, "crm_key"),
        (canary.clone(), false),
        "node 3 right after the set through node 1"
    );

    // Another tenant has no such secret: a tool error naming it, nothing of acme's.
    let (text, is_error) = secret_call(&fleet, ids[2], &globex, "crm_key");
    assert!(is_error, "globex reads no acme secret: {text}");
    assert!(
        text.contains("crm_key") && !text.contains(&canary) && !text.contains("acme"),
        "{text}"
    );

    // Rotated through node 2, the value on standard input with the newline `echo` adds:
    // node 1 never uses the old value after the command returns.
    let rotated = format!("rotated-{}", random_hex(16));
    let out = fleet.cluster.secrets_with_input(
        &[
            "set",
            "--via",
            &via(ids[1]),
            "--tenant",
            "acme",
            "--name",
            "crm_key",
        ],
        &format!("{rotated}\n"),
    );
    fleet.cluster.assert_success(&out, "secrets set (rotation)");
    for &id in &ids {
        assert_eq!(
            secret_call(&fleet, id, &acme, "crm_key"),
            (rotated.clone(), false),
            "node {id} right after the rotation"
        );
    }

    // Listed by name and time, never value.
    let out = fleet
        .cluster
        .secrets(&["list", "--via", &via(ids[2]), "--tenant", "acme"]);
    fleet.cluster.assert_success(&out, "secrets list");
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON list");
    assert_eq!(listed["secrets"][0]["name"], "crm_key", "{listed}");
    assert!(
        listed["secrets"][0]["updated_ms"].as_u64().is_some(),
        "{listed}"
    );
    assert!(!listed.to_string().contains(&rotated), "{listed}");
    let out = fleet
        .cluster
        .secrets(&["list", "--via", &via(ids[2]), "--tenant", "globex"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON list");
    assert_eq!(
        listed["secrets"],
        json!([]),
        "globex sees no acme names: {listed}"
    );

    // Deleted through node 2: the next call through node 1 fails cleanly, naming it.
    let out = fleet.cluster.secrets(&[
        "delete",
        "--via",
        &via(ids[1]),
        "--tenant",
        "acme",
        "--name",
        "crm_key",
    ]);
    fleet.cluster.assert_success(&out, "secrets delete");
    let (text, is_error) = secret_call(&fleet, ids[0], &acme, "crm_key");
    assert!(
        is_error,
        "node 1 right after the delete through node 2: {text}"
    );
    assert!(
        text.contains("crm_key") && !text.contains(&rotated),
        "{text}"
    );

    // Canary: neither value reached a data directory unsealed, a log or /metrics. Each
    // node's directory holds its data directory and its whole log.
    let through = [ids[0], ids[1]];
    for &id in &ids {
        let data = fleet.cluster.node(id).data_dir();
        let dir = data.parent().expect("the node's directory");
        for value in [&canary, &rotated] {
            let found = files_containing(dir, value.as_bytes());
            assert!(found.is_empty(), "node {id}: {value} in {found:?}");
        }
        if through.contains(&id) {
            // Info lines reach the log in batches.
            fleet.cluster.eventually(
                &format!("node {id} to log the set (the grep reads its log)"),
                Duration::from_secs(10),
                || (!files_containing(dir, b"a tenant secret was set").is_empty()).then_some(()),
            );
        }
        let metrics = fleet.cluster.try_metrics(id).expect("metrics");
        assert!(!metrics.contains(&canary) && !metrics.contains(&rotated));
        let status = fleet.cluster.status(id).to_string();
        assert!(!status.contains(&canary) && !status.contains(&rotated));
    }
    let logs = fleet.logs();
    assert!(
        !logs.contains(&canary) && !logs.contains(&rotated),
        "a value in the logs"
    );
}

#[test]
fn bad_secret_names_tenants_and_values_are_refused_naming_the_cap() {
    let Some(fleet) = Fleet::builder()
        .unbalanced()
        .conformance()
        .env("MCP_FLEET_SECRETS__MAX_VALUE_BYTES", "32")
        .start(1)
    else {
        return;
    };
    let files = tempfile::tempdir().expect("temp dir");
    let via = fleet.cluster.node(1).internal().to_string();
    let small = value_file(files.path(), "small");
    let long_name = "n".repeat(129);
    let long_tenant = "t".repeat(257);
    let cases: [(&str, &str, &str, &str); 4] = [
        ("", "key", &small, "tenant is empty"),
        ("acme", "", &small, "name is empty"),
        ("acme", &long_name, &small, "secrets.max_name_bytes"),
        (&long_tenant, "key", &small, "secrets.max_tenant_bytes"),
    ];
    for (tenant, name, file, says) in cases {
        let out = fleet.cluster.secrets(&[
            "set",
            "--via",
            &via,
            "--tenant",
            tenant,
            "--name",
            name,
            "--from-file",
            file,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    let big = value_file(files.path(), &"v".repeat(33));
    let out = fleet.cluster.secrets(&[
        "set",
        "--via",
        &via,
        "--tenant",
        "acme",
        "--name",
        "key",
        "--from-file",
        &big,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("secrets.max_value_bytes") && stderr.contains("33"),
        "{stderr}"
    );
    let metrics = fleet.cluster.try_metrics(1).expect("metrics");
    assert!(
        metrics.contains("mcp_fleet_limit_refusals_total{limit=\"secrets.max_value_bytes\"} 1"),
        "{metrics}"
    );
    // An empty value is a usage error, refused before any node is asked.
    let empty = value_file(files.path(), "");
    let out = fleet.cluster.secrets(&[
        "set",
        "--via",
        &via,
        "--tenant",
        "acme",
        "--name",
        "key",
        "--from-file",
        &empty,
    ]);
    assert_eq!(out.status.code(), Some(2));
}
