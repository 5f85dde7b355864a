//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth;
use crate::config::Overrides;

/// Host MCP tools for many users on a fleet of instances.
#[derive(Debug, Parser)]
#[command(name = "mcp-fleet", version, about)]
pub struct Cli {
    /// A TOML configuration file; `MCP_FLEET_*` variables and flags override it.
    #[arg(long, global = true, env = "MCP_FLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One node for development: listens on 127.0.0.1:8080, keeps data in ./data.
    Dev(ServeArgs),
    /// Serve the same tools over standard input and output.
    Stdio(StdioArgs),
}

/// Flags of `dev`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Directory for the node's data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// How callers authenticate.
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,
    /// Serve the MCP conformance suite's fixtures.
    #[arg(long)]
    pub conformance: bool,
}

/// Flags of `stdio`.
#[derive(Debug, Args)]
pub struct StdioArgs {
    /// Serve the MCP conformance suite's fixtures.
    #[arg(long)]
    pub conformance: bool,
}

/// `--auth` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// No authentication (loopback only).
    None,
}

impl Cli {
    /// The flags that override file and environment.
    pub fn overrides(&self) -> Overrides {
        match &self.command {
            Command::Dev(args) => Overrides {
                listen: args.listen.clone(),
                data_dir: args.data_dir.clone(),
                auth: args.auth.map(|AuthArg::None| auth::Mode::None),
                conformance: args.conformance.then_some(true),
            },
            Command::Stdio(args) => Overrides {
                conformance: args.conformance.then_some(true),
                ..Overrides::default()
            },
        }
    }
}
