//! The programs under `examples/` that tests run as servers. Cargo gives examples no
//! `CARGO_BIN_EXE_` path, so each is built once per test run (a no-op when it is up to
//! date, and never stale after `cargo test --test …` builds only the suite) and found
//! beside the `mcp-fleet` binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Builds example `name` (once per test process) and returns its path: `conformance` is
/// the built-ins plus the conformance fixtures, with the same command line as `mcp-fleet`.
pub fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_mcp-fleet"))
        .parent()
        .expect("the binary's directory");
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|d| d == "release") {
        cmd.arg("--release");
    }
    let output = cmd.output().expect("run cargo build --example");
    assert!(
        output.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = profile_dir.join("examples").join(name);
    assert!(path.is_file(), "no example binary at {}", path.display());
    built.insert(name.to_owned(), path.clone());
    path
}

/// A `cargo` command (the one running these tests) for a nested build, without the
/// variables `cargo test` sets for our crate (see [`without_crate_env`]).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    without_crate_env(&mut cmd);
    cmd
}

/// Removes from `cmd` the variables `cargo test` gives this process for our crate. A build
/// script (ring's) watches some of them, so a nested build inheriting them would rebuild
/// it, and the next ordinary build would rebuild it back. Cargo's own settings stay.
pub fn without_crate_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let per_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&key.as_str());
        if per_crate {
            cmd.env_remove(key);
        }
    }
    cmd
}
