//! The embedding API in process: a node built from a config and a registry, started on
//! listeners the test bound, serves that registry under the given name and stops by its
//! handle; the examples, built on the public API, serve what their `App` gives.

use std::net::TcpListener;

use mcp_fleet::tools::{NoArgs, Output, Registry, ToolInfo};
use mcp_fleet::{tools::FnTool, Config, Node};
use serde_json::json;

use crate::client::Session;
use crate::harness::Server;

#[test]
fn a_node_built_in_process_serves_its_registry_under_its_own_name_until_stopped() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let toml = format!(
        "data_dir = {:?}",
        dir.path().join("data").display().to_string()
    );
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mut registry = Registry::new();
            registry.tool(FnTool::new(
                ToolInfo::new("acme_ping", "Answers pong."),
                |_ctx, _: NoArgs| async { Ok(Output::text("pong")) },
            ));
            let node = Node::builder(Config::from_toml(&toml).expect("a valid config"))
                .registry(registry)
                .server_info("acme-mcp", "9.9.9")
                .start(
                    TcpListener::bind("127.0.0.1:0").expect("a port"),
                    TcpListener::bind("127.0.0.1:0").expect("a port"),
                )
                .await
                .expect("the node starts");
            url_tx.send(node.mcp_url()).expect("the test waits");
            node.run_until(async {
                let _ = stop_rx.await;
            })
            .await
        })
    });
    let url = url_rx.recv().expect("the node's URL");
    let session = Session::initialize(&url, "2025-11-25");
    let init = crate::client::post(
        &url,
        &[],
        &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "http-tests", "version": "0" } } })
        .to_string(),
    );
    assert_eq!(
        init.result()["serverInfo"],
        json!({ "name": "acme-mcp", "version": "9.9.9" })
    );
    let listed = session.send(&url, "tools/list", json!({})).result();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["acme_ping"],
        "only the registry given, no built-ins"
    );
    let called = session.send(&url, "tools/call", json!({ "name": "acme_ping" }));
    assert_eq!(called.result()["content"][0]["text"], "pong");

    stop_tx.send(()).expect("the node is running");
    let stopped = serving.join().expect("the serving thread");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(
        std::net::TcpStream::connect(url.trim_start_matches("http://").trim_end_matches("/mcp"))
            .is_err(),
        "the listener is closed after stop"
    );
}

#[test]
fn the_conformance_example_introduces_itself_by_the_name_its_app_gives() {
    let server = Server::builder().conformance().start();
    let reply = crate::client::post(
        server.url(),
        &[],
        &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "http-tests", "version": "0" } } })
        .to_string(),
    );
    assert_eq!(
        reply.result()["serverInfo"]["name"],
        "mcp-fleet-conformance"
    );
}

#[test]
fn the_quickstart_example_serves_its_tool_resource_and_prompt() {
    let server = Server::builder().example("quickstart").start();
    let url = server.url();
    let session = Session::initialize(url, "2025-11-25");
    let greeted = session.send(
        url,
        "tools/call",
        json!({ "name": "greet", "arguments": { "name": "Ada" } }),
    );
    assert_eq!(
        greeted.result()["content"][0]["text"],
        "Hello, Ada, from anonymous!"
    );
    let listed = session.send(url, "tools/list", json!({})).result();
    assert_eq!(
        listed["tools"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let read = session.send(url, "resources/read", json!({ "uri": "docs://readme" }));
    assert_eq!(read.result()["contents"][0]["text"], "Try `greet`.");
    let prompt = session.send(
        url,
        "prompts/get",
        json!({ "name": "haiku", "arguments": { "topic": "rafts" } }),
    );
    assert_eq!(
        prompt.result()["messages"][0]["content"]["text"],
        "Write a haiku about rafts."
    );
}
