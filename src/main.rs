//! The `mcp-fleet` binary: the mcp-fleet command line with the built-in tools.

use std::process::ExitCode;

mod alloc;

use mcp_fleet::tools::builtin::{Echo, WhoAmI};

fn main() -> ExitCode {
    alloc::cap_malloc_arenas();
    mcp_fleet::App::new("mcp-fleet", env!("CARGO_PKG_VERSION"))
        .tool(WhoAmI)
        .tool(Echo)
        .run()
}
