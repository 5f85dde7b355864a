//! The official MCP Python SDK as a client: the scripts in `tests/cluster/clients/`, run
//! by the interpreter of the project's virtualenv, `.venv` (which `scripts/test` creates
//! before `cargo test`, with `tests/python/requirements.txt`).

use std::path::PathBuf;
use std::process::Command;

/// A command running `tests/cluster/clients/<script>` with the virtualenv's Python.
///
/// Panics when `.venv` is missing, saying how to create it: a test of the SDK that passes
/// without running the SDK would prove nothing.
pub fn client(script: &str) -> Command {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test once to create the Python SDK's virtualenv \
         (it installs tests/python/requirements.txt), then run this test again",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(repo.join("tests/cluster/clients").join(script));
    cmd
}
