//! Configuration the binary refuses to start with; the message names the key at fault.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{command, wait_exit};

/// Runs `mcp-fleet` with `args`, expecting it to exit non-zero; returns its stderr.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = command()
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn mcp-fleet");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!status.success(), "{args:?} started; stderr:\n{stderr}");
    stderr
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
