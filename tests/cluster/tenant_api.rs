//! `examples/tenant_api` on three nodes, called by the official Python SDK: the team's API
//! (a local upstream) receives each tenant's own key, set with `mcp-fleet secrets set`,
//! and a token exchanged for the caller, never the caller's own; calls through other nodes
//! reuse that token (one exchange per caller for the whole fleet) and read the state the
//! earlier calls wrote; a tenant without a key, and an API refusal, are tool errors that
//! say what is wrong and nothing of another tenant; no key or token reaches the logs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fleet::Fleet;
use crate::harness::{random_hex, run_bounded};
use crate::issuer::forge;
use crate::upstream::{Received, Upstream};

/// The audience the example asks tokens for, as the issuer knows the team's API.
const AUDIENCE: &str = "https://api.acme.test";
/// How long the Python client may take for the whole plan.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// One tool call by the Python SDK.
struct Step<'a> {
    node: u64,
    token: &'a str,
    tool: &'a str,
    arguments: Value,
    legacy: bool,
}

/// A call of `tool` through node `node` with `token`, at 2026-07-28.
fn step<'a>(node: u64, token: &'a str, tool: &'a str, arguments: Value) -> Step<'a> {
    Step {
        node,
        token,
        tool,
        arguments,
        legacy: false,
    }
}

impl Step<'_> {
    /// The same call in a 2025-11-25 session.
    fn legacy(self) -> Self {
        Self {
            legacy: true,
            ..self
        }
    }
}

/// Runs `steps` in order through the Python SDK's client script, each against its node's
/// own URL; returns one result per step.
fn sdk_calls(fleet: &Fleet, steps: &[Step]) -> Vec<Value> {
    let script = "tenant_api.py";
    let mut cmd = crate::python::client(script);
    let plan: Vec<Value> = steps
        .iter()
        .map(|step| {
            json!({
                "url": fleet.cluster.node(step.node).mcp_url(),
                "token": step.token,
                "tool": step.tool,
                "arguments": step.arguments,
                "mode": if step.legacy { "legacy" } else { "auto" },
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("plan.json");
    std::fs::write(&path, Value::Array(plan).to_string()).expect("write the plan");
    cmd.arg(&path);
    let out = run_bounded(cmd, CLIENT_DEADLINE)
        .unwrap_or_else(|e| panic!("{script}: {e}\n{}", fleet.logs()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        fleet.logs()
    );
    let results: Vec<Value> = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON array ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(results.len(), steps.len(), "{results:#?}");
    for (i, (result, step)) in results.iter().zip(steps).enumerate() {
        assert!(
            result.get("exception").is_none(),
            "step {i}: the SDK raised:\n{}\n{}",
            result["exception"].as_str().unwrap_or_default(),
            fleet.logs()
        );
        let version = if step.legacy {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(result["protocol_version"], version, "step {i}");
    }
    results
}

/// A successful `create_requirement` result: its structured content.
#[track_caller]
fn created(result: &Value) -> &Value {
    assert_eq!(result["is_error"], false, "{result:#}");
    &result["structured"]
}

/// The text of a tool error.
#[track_caller]
fn tool_error(result: &Value) -> &str {
    assert_eq!(result["is_error"], true, "{result:#}");
    result["text"].as_str().expect("an error text")
}

/// Sets `tenant`'s secret `name` through node `id`, the value on standard input.
fn set_secret(fleet: &Fleet, id: u64, tenant: &str, name: &str, value: &str) {
    let via = fleet.cluster.node(id).internal().to_string();
    let out = fleet.cluster.secrets_with_input(
        &["set", "--via", &via, "--tenant", tenant, "--name", name],
        &format!("{value}\n"),
    );
    fleet
        .cluster
        .assert_success(&out, &format!("secrets set {tenant}/{name}"));
}

#[test]
fn tenant_api_sends_each_tenants_key_and_one_token_exchanged_per_caller_from_any_node() {
    // Before the fleet: without the SDK's virtualenv this fails at once, saying why.
    drop(crate::python::client("tenant_api.py"));
    let upstream = Upstream::start();
    let api = upstream.url("");
    let Some(fleet) = Fleet::builder()
        .unbalanced()
        .example("tenant_api")
        .issuer_preset("workos")
        .token_exchange()
        .env("ACME_API_URL", &api)
        .env("ACME_API_AUDIENCE", AUDIENCE)
        .start(3)
    else {
        return;
    };
    let ids = fleet.cluster.ids();
    let (n1, n2, n3) = (ids[0], ids[1], ids[2]);
    let acme_key = format!("acme-key-{}", random_hex(12));
    let globex_key = format!("globex-key-{}", random_hex(12));
    let acme_other = format!("acme-billing-{}", random_hex(12));
    set_secret(&fleet, n1, "acme", "api_key", &acme_key);
    set_secret(&fleet, n2, "globex", "api_key", &globex_key);
    set_secret(&fleet, n3, "acme", "billing_token", &acme_other);

    let alice = fleet.token_in("acme", "alice");
    let bob = fleet.token_in("globex", "bob");
    let carol = fleet.token_in("initech", "carol");
    let create = "create_requirement";
    let results = sdk_calls(
        &fleet,
        &[
            step(
                n1,
                &alice,
                create,
                json!({ "title": "Single sign-on", "description": "SAML and OIDC" }),
            ),
            step(n2, &alice, create, json!({ "title": "Audit log" })),
            step(n3, &bob, create, json!({ "title": "Export to CSV" })),
            step(n1, &carol, create, json!({ "title": "Dark mode" })),
            step(n3, &alice, create, json!({ "title": "" })),
            step(n3, &alice, create, json!({ "title": "SCIM" })),
            step(n1, &alice, create, json!({ "title": "Legacy client" })).legacy(),
        ],
    );

    // Alice's first call through node 1; her second, through node 2, reads what the first
    // wrote there.
    let first = created(&results[0]);
    assert_eq!(first["id"], "REQ-1", "{first}");
    assert_eq!(first["filed_by_you"], 1, "{first}");
    assert_eq!(first["previous_id"], Value::Null, "{first}");
    let second = created(&results[1]);
    assert_eq!(second["id"], "REQ-2", "{second}");
    assert_eq!(
        (&second["filed_by_you"], &second["previous_id"]),
        (&json!(2), &json!("REQ-1")),
        "node 2 reads the state written through node 1: {second}"
    );
    // Bob, another tenant, starts from nothing: alice's state is hers.
    let bobs = created(&results[2]);
    assert_eq!(bobs["id"], "REQ-3", "{bobs}");
    assert_eq!(
        (&bobs["filed_by_you"], &bobs["previous_id"]),
        (&json!(1), &Value::Null),
        "{bobs}"
    );

    // Carol's tenant has no key: the error names the secret, nothing of other tenants.
    let error = tool_error(&results[3]);
    assert!(error.contains("api_key"), "{error}");
    for other in [
        "acme",
        "globex",
        "billing_token",
        &acme_key,
        &globex_key,
        &acme_other,
    ] {
        assert!(!error.contains(other), "{other:?} in {error:?}");
    }

    // The API refuses an empty title: a tool error quoting it, and nothing counted.
    let error = tool_error(&results[4]);
    assert!(
        error.contains("HTTP 422") && error.contains("title must not be empty"),
        "{error}"
    );
    let last = created(&results[5]);
    assert_eq!(last["id"], "REQ-4", "{last}");
    assert_eq!(
        (&last["filed_by_you"], &last["previous_id"]),
        (&json!(3), &json!("REQ-2")),
        "{last}"
    );
    // A 2025-11-25 session carries the caller's token to ctx.token_for as well.
    let legacy = created(&results[6]);
    assert_eq!(
        (
            &legacy["id"],
            &legacy["filed_by_you"],
            &legacy["previous_id"]
        ),
        (&json!("REQ-5"), &json!(4), &json!("REQ-4")),
        "{legacy}"
    );

    // What the API received: alice's and bob's calls (carol's never left the node), each
    // with its tenant's key and a token exchanged for its caller.
    let received: Vec<Received> = upstream
        .received()
        .into_iter()
        .filter(|r| r.path == "/requirements")
        .collect();
    let callers: Vec<(&str, &str)> = received
        .iter()
        .map(|r| {
            let claims = forge::claims_of(r.bearer().expect("a bearer token"));
            assert_eq!(claims["aud"], AUDIENCE, "{claims}");
            assert_eq!(claims["iss"], fleet.issuer.url(), "{claims}");
            let subject = match claims["sub"].as_str() {
                Some("alice") => "alice",
                Some("bob") => "bob",
                other => panic!("a token for {other:?}: {claims}"),
            };
            (subject, r.api_key.as_deref().expect("an x-api-key"))
        })
        .collect();
    assert_eq!(
        callers,
        [
            ("alice", acme_key.as_str()),
            ("alice", acme_key.as_str()),
            ("bob", globex_key.as_str()),
            ("alice", acme_key.as_str()),
            ("alice", acme_key.as_str()),
            ("alice", acme_key.as_str()),
        ]
    );
    for r in &received {
        let sent = r.bearer().expect("a bearer token");
        assert!(
            sent != alice && sent != bob,
            "a caller's own token reached the API"
        );
        assert_eq!(r.method, "POST");
    }
    let body: Value = serde_json::from_str(&received[0].body).expect("a JSON body");
    assert_eq!(
        body,
        json!({ "title": "Single sign-on", "description": "SAML and OIDC" })
    );
    // Alice's five requests, through nodes 1, 2 and 3, carried one token: exchanged once.
    let alices: Vec<&str> = received
        .iter()
        .filter(|r| r.api_key.as_deref() == Some(acme_key.as_str()))
        .filter_map(Received::bearer)
        .collect();
    assert!(alices.windows(2).all(|w| w[0] == w[1]), "{alices:?}");
    assert_eq!(
        fleet.issuer.exchanges(),
        2,
        "one exchange for alice, one for bob, none for carol"
    );

    // Neither the keys nor the exchanged token reach the nodes' logs (each node's whole
    // log, beside its data directory), which do record the calls: each call's access line
    // names its tool (lines reach the log in batches, so within a bound).
    for &id in &ids {
        let data = fleet.cluster.node(id).data_dir();
        let path = data
            .parent()
            .expect("the node's directory")
            .join("node.log");
        let log = fleet.cluster.eventually(
            &format!("{} to log its calls", path.display()),
            Duration::from_secs(10),
            || {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                log.contains(&format!("tool=\"{create}\"")).then_some(log)
            },
        );
        for secret in [acme_key.as_str(), globex_key.as_str(), alices[0]] {
            assert!(!log.contains(secret), "node {id}: a secret in its log");
        }
    }
}
