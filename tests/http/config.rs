//! Configuration the binary refuses to start with; the message names the key at fault.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{command, wait_exit, Server};

/// Runs `mcp-fleet` with `args` and `env` on a fresh data directory, expecting it to exit
/// non-zero; returns its exit status and stderr.
fn refused_with(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = command()
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn mcp-fleet");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!status.success(), "{args:?} started; stderr:\n{stderr}");
    (status.code(), stderr)
}

/// Like [`refused_with`], without environment; returns stderr.
fn refused(args: &[&str]) -> String {
    refused_with(args, &[]).1
}

/// What `serve` needs besides a node id.
const FLEET_ENV: [(&str, &str); 2] = [
    (
        "MCP_FLEET_ENCRYPTION_KEY",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    ),
    ("MCP_FLEET_CLUSTER_SECRET", "a-cluster-secret-for-tests"),
];

/// `serve` on loopback with free ports, then `extra`.
fn serve_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--raft-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn auth_none_off_loopback_is_refused() {
    let stderr = refused(&["dev", "--listen", "0.0.0.0:0", "--auth", "none"]);
    assert!(stderr.contains("auth"), "{stderr}");
}

#[test]
fn a_mistyped_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[http]\nmax_body_bytes = \"x\"\n").expect("write config");
    let file = file.display().to_string();
    let stderr = refused(&["dev", "--listen", "127.0.0.1:0", "--config", &file]);
    assert!(stderr.contains("max_body_bytes"), "{stderr}");
}

#[test]
fn a_bad_value_exits_with_status_2() {
    let (code, stderr) = refused_with(&["dev", "--listen", "nowhere"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`listen`"), "{stderr}");
}

#[test]
fn serve_on_an_empty_data_dir_without_an_id_is_refused() {
    let (code, stderr) = refused_with(&serve_args(&[]), &FLEET_ENV);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("has no node id yet") && stderr.contains("--node-id"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_the_development_issuer() {
    let (code, stderr) = refused_with(
        &serve_args(&["--node-id", "1", "--auth", "dev"]),
        &FLEET_ENV,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("auth.mode")
            && stderr.contains("--auth jwt")
            && stderr.contains("dev --auth dev"),
        "{stderr}"
    );
}

#[test]
fn a_missing_key_names_its_variable_and_exits_with_status_2() {
    let (code, stderr) = refused_with(&serve_args(&["--node-id", "1"]), &[FLEET_ENV[1]]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`encryption_key`") && stderr.contains("MCP_FLEET_ENCRYPTION_KEY"),
        "{stderr}"
    );
    let (code, stderr) = refused_with(&serve_args(&["--node-id", "1"]), &[FLEET_ENV[0]]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`cluster_secret`") && stderr.contains("MCP_FLEET_CLUSTER_SECRET"),
        "{stderr}"
    );
}

#[test]
fn an_address_in_use_names_the_listener_and_exits_with_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let (code, stderr) = refused_with(&["dev", "--listen", &addr], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("public listener") && stderr.contains("--listen") && stderr.contains(&addr),
        "{stderr}"
    );
    let (code, stderr) = refused_with(
        &[
            "serve",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--raft-listen",
            &addr,
        ],
        &FLEET_ENV,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("internal listener")
            && stderr.contains("--raft-listen")
            && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn a_plain_value_for_a_list_in_the_environment_says_how_to_write_one() {
    let (code, stderr) = refused_with(
        &["dev", "--listen", "127.0.0.1:0"],
        &[("MCP_FLEET_HTTP__ALLOWED_HOSTS", "a.example.com")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .contains("`http.allowed_hosts` (environment variable MCP_FLEET_HTTP__ALLOWED_HOSTS)")
            && stderr
                .contains(r#"MCP_FLEET_HTTP__ALLOWED_HOSTS='["a.example.com","b.example.com"]'"#),
        "{stderr}"
    );
}

#[test]
fn a_file_error_names_the_key_and_the_file_without_internal_prefixes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[http]\nmax_body_bytes = \"x\"\n").expect("write config");
    let file = file.display().to_string();
    let (code, stderr) = refused_with(&["dev", "--listen", "127.0.0.1:0", "--config", &file], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "configuration key `http.max_body_bytes` in {file}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("default."), "{stderr}");
}

#[test]
fn serve_help_names_the_variables_serve_requires_and_the_exit_statuses() {
    let out = command()
        .args(["serve", "--help"])
        .output()
        .expect("run serve --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needed in [
        "MCP_FLEET_ENCRYPTION_KEY",
        "MCP_FLEET_CLUSTER_SECRET",
        "MCP_FLEET_RAFT__NODE_ID",
        "Exit status",
    ] {
        assert!(help.contains(needed), "{needed} missing:\n{help}");
    }
}

#[test]
fn a_command_line_error_exits_with_status_2() {
    let (code, stderr) = refused_with(&["serve", "--no-such-flag"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn a_clean_stop_exits_with_status_0() {
    let mut server = Server::start();
    // Serving first: the listening line comes out a moment before the runtime takes over
    // SIGTERM, and a signal in that moment ends the process by the default action.
    let health = crate::client::get(&format!("{}/health", server.base()), &[]);
    assert_eq!(health.status, 200, "{health:?}");
    let status = server.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

#[test]
fn a_data_dir_held_by_another_node_is_a_failure_said_once() {
    let server = Server::start();
    let stderr_path = server.data_dir().with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = command()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn mcp-fleet");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("could not acquire lock").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn an_unusable_issuer_ca_file_names_the_key_and_the_file_and_exits_with_status_2() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.pem");
    let no_certificate = dir.path().join("key-only.pem");
    std::fs::write(
        &no_certificate,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for (file, why) in [
        (&missing, "cannot read"),
        (&no_certificate, "no PEM certificate"),
        (&broken, "certificate 1"),
    ] {
        let path = file.display().to_string();
        let dev = ["dev", "--listen", "127.0.0.1:0", "--issuer-ca-file", &path];
        let (code, stderr) = refused_with(&dev, &[]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("`auth.ca_file`") && stderr.contains(&path) && stderr.contains(why),
            "{stderr}"
        );
        // The same from the environment, on `serve`.
        let mut env = FLEET_ENV.to_vec();
        env.push(("MCP_FLEET_AUTH__CA_FILE", &path));
        let (code, stderr) = refused_with(&serve_args(&["--node-id", "1"]), &env);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("`auth.ca_file`") && stderr.contains(&path),
            "{stderr}"
        );
    }
}
