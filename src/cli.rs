//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth;
use crate::config::{Overrides, RaftOverrides};

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
    /// One node for development: listens on 127.0.0.1:8080, keeps data in ./data, and
    /// forms a group of one on its own.
    Dev(ServeArgs),
    /// One node of a fleet: joins the group given by `--peers`, or waits to be added.
    Serve(FleetArgs),
    /// Look at or change a running fleet through any node's internal listener.
    Cluster(ClusterArgs),
    /// Serve the same tools over standard input and output.
    Stdio(StdioArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// What `dev` takes too.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// This node's id in the group.
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,
    /// Address of the internal listener (Raft, forwarded writes, cluster status).
    #[arg(long, value_name = "HOST:PORT")]
    pub raft_listen: Option<String>,
    /// Internal address other nodes reach this one at, when it differs from the bound one.
    #[arg(long, value_name = "HOST:PORT")]
    pub raft_advertise: Option<String>,
    /// The initial voters: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` (internal addresses).
    /// The same list on every node of a new fleet; ignored once the node belongs to one.
    #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = crate::raft::parse_peers)]
    pub peers: Option<std::collections::BTreeMap<u64, String>>,
}

/// Flags of `cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Internal address of any node of the fleet.
    #[arg(
        long,
        value_name = "HOST:PORT",
        global = true,
        default_value = "127.0.0.1:7000"
    )]
    pub via: String,
    /// The cluster secret.
    #[arg(
        long,
        env = "MCP_FLEET_CLUSTER_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub cluster_secret: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Print the group as the node at `--via` sees it (JSON).
    Status,
    /// Form a new group with these voters (safe to repeat on every node with the same list).
    Init {
        /// The voters: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` (internal addresses).
        #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = crate::raft::parse_peers)]
        peers: std::collections::BTreeMap<u64, String>,
    },
    /// Add a started node: it catches up as a learner, then becomes a voter.
    Join {
        /// Its id; never the id of a node whose disk was lost.
        #[arg(long)]
        node_id: u64,
        /// Its internal address.
        #[arg(long, value_name = "HOST:PORT")]
        raft_addr: String,
    },
    /// Remove a node from the group.
    Leave {
        /// Its id.
        #[arg(long)]
        node_id: u64,
    },
    /// Seal again, with the active key, every record sealed with an older key.
    Reseal,
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
                ..Overrides::default()
            },
            Command::Serve(args) => Overrides {
                listen: args.serve.listen.clone(),
                data_dir: args.serve.data_dir.clone(),
                auth: args.serve.auth.map(|AuthArg::None| auth::Mode::None),
                conformance: args.serve.conformance.then_some(true),
                raft: RaftOverrides {
                    node_id: args.node_id,
                    listen: args.raft_listen.clone(),
                    advertise: args.raft_advertise.clone(),
                    peers: args.peers.as_ref().map(|peers| {
                        peers
                            .iter()
                            .map(|(id, addr)| (id.to_string(), addr.clone()))
                            .collect()
                    }),
                },
            },
            Command::Cluster(_) => Overrides::default(),
            Command::Stdio(args) => Overrides {
                conformance: args.conformance.then_some(true),
                ..Overrides::default()
            },
        }
    }
}
