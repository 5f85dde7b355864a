//! Tool state written through one node (created, overwritten, deleted) is what a call on
//! any other node reads at once, and one principal's state is nobody else's. Prints the
//! latency of a write through one node followed by a read through another.

use std::time::Instant;

use serde_json::{json, Value};

use crate::fleet::Fleet;

/// A `test_state` call through node `id` as `token`: the answer's text and whether it is
/// a tool error.
fn state_call(fleet: &Fleet, id: u64, token: &str, args: Value) -> (String, bool) {
    fleet.tool_text(id, token, "test_state", args)
}

fn get(fleet: &Fleet, id: u64, token: &str, key: &str, tenant: bool) -> String {
    let (text, is_error) = state_call(
        fleet,
        id,
        token,
        json!({ "op": "get", "key": key, "tenant": tenant }),
    );
    assert!(!is_error, "get {key} through node {id}: {text}");
    text
}

fn set(fleet: &Fleet, id: u64, token: &str, key: &str, value: Value, tenant: bool) {
    let (text, is_error) = state_call(
        fleet,
        id,
        token,
        json!({ "op": "set", "key": key, "value": value, "tenant": tenant }),
    );
    assert!(!is_error, "set {key} through node {id}: {text}");
}

#[test]
fn tool_state_written_through_one_node_is_read_through_another_at_once_and_stays_its_owners() {
    let Some(fleet) = Fleet::builder()
        .unbalanced()
        .conformance()
        .args(&["--issuer-preset", "workos"])
        .env("MCP_FLEET_TOOL_STATE__MAX_VALUE_BYTES", "64")
        .start(3)
    else {
        return;
    };
    let ids = fleet.cluster.ids();
    let alice = fleet.token_in("acme", "alice");
    let carol = fleet.token_in("acme", "carol");
    let bob = fleet.token_in("globex", "bob");
    // The same subject in another tenant is another principal.
    let alice_elsewhere = fleet.token_in("globex", "alice");

    // Created, overwritten and deleted through one node; read through another at once.
    let mut timings = Vec::new();
    for round in 0..10 {
        let (writer, reader) = (ids[round % 3], ids[(round + 1) % 3]);
        let started = Instant::now();
        set(&fleet, writer, &alice, "cursor", json!(round), false);
        let read = get(&fleet, reader, &alice, "cursor", false);
        timings.push(started.elapsed());
        assert_eq!(
            read,
            round.to_string(),
            "round {round}: written via {writer}, read via {reader}"
        );
    }
    timings.sort();
    eprintln!(
        "tool state write via one node + read via another (debug build, loaded machine): \
         median {:?}, max {:?}",
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );
    let (text, is_error) = state_call(
        &fleet,
        ids[0],
        &alice,
        json!({ "op": "delete", "key": "cursor" }),
    );
    assert_eq!((text.as_str(), is_error), ("true", false));
    assert_eq!(
        get(&fleet, ids[1], &alice, "cursor", false),
        "null",
        "deleted via node 1"
    );

    // Nobody else sees alice's state: not another principal of her tenant, not another
    // tenant, not the same subject in another tenant.
    set(&fleet, ids[0], &alice, "mine", json!("alice's"), false);
    for (who, token) in [
        ("carol", &carol),
        ("bob", &bob),
        ("alice of globex", &alice_elsewhere),
    ] {
        assert_eq!(get(&fleet, ids[1], token, "mine", false), "null", "{who}");
    }
    // Tenant-wide state is shared inside the tenant, and only there.
    set(&fleet, ids[2], &alice, "shared", json!("acme's"), true);
    assert_eq!(get(&fleet, ids[0], &carol, "shared", true), "\"acme's\"");
    assert_eq!(get(&fleet, ids[0], &bob, "shared", true), "null");
    assert_eq!(
        get(&fleet, ids[0], &alice, "shared", false),
        "null",
        "not alice's own"
    );

    // A value over the cap is refused naming it; nothing is stored.
    let (text, is_error) = state_call(
        &fleet,
        ids[1],
        &alice,
        json!({ "op": "set", "key": "big", "value": "x".repeat(100) }),
    );
    assert!(
        is_error && text.contains("tool_state.max_value_bytes"),
        "{text}"
    );
    assert_eq!(get(&fleet, ids[2], &alice, "big", false), "null");
}
