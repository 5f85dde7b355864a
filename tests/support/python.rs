//! The official MCP Python SDK as a client, run by the interpreter of the project's
//! virtualenv, `.venv` (which `scripts/test` creates before `cargo test`, with
//! `tests/python/requirements.txt`).

#![allow(dead_code)] // each suite uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;

/// The virtualenv's Python.
///
/// Panics when `.venv` is missing, saying how to create it: a test of the SDK that passes
/// without running the SDK would prove nothing.
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test once to create the Python SDK's virtualenv \
         (it installs tests/python/requirements.txt), then run this test again",
        python.display()
    );
    python
}

/// A command running `tests/cluster/clients/<script>` with the virtualenv's Python.
pub fn client(script: &str) -> Command {
    let mut cmd = Command::new(venv_python());
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/cluster/clients")
            .join(script),
    );
    cmd
}
