//! The MCP conformance suite's server: mcp-fleet's built-in tools plus the fixtures the
//! official suite (`@modelcontextprotocol/conformance`, server mode) and this project's
//! own tests call by name.
//!
//! It is a complete mcp-fleet server built on the public API only, with the same command
//! line as `mcp-fleet` (`dev`, `serve`, `stdio`, `cluster …`). Test scaffolding, never
//! something to offer real users: one of its tools panics on purpose.
//!
//! ```text
//! cargo build --example conformance
//! target/debug/examples/conformance dev --listen 127.0.0.1:0
//! ```

use std::process::ExitCode;

mod fixtures;
mod fixtures_storage;
mod pack_2025;
mod pack_2026;
mod pack_tasks;

fn main() -> ExitCode {
    mcp_fleet::App::new("mcp-fleet-conformance", env!("CARGO_PKG_VERSION"))
        .with(mcp_fleet::tools::builtin::register)
        .with(pack_2025::register)
        .with(pack_2026::register)
        .with(pack_tasks::register)
        .with(fixtures::register)
        .run()
}
