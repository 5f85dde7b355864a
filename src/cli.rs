//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth;
use crate::config::{AuthOverrides, Overrides, RaftOverrides};

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
    #[command(after_help = SERVE_HELP)]
    Serve(FleetArgs),
    /// Look at or change a running fleet through any node's internal listener.
    Cluster(ClusterArgs),
    /// Set, list or delete tenants' secrets through any node's internal listener.
    Secrets(SecretsArgs),
    /// Serve the same tools over standard input and output.
    Stdio(StdioArgs),
    /// Make a key, or print the index key to pin before a key rotation retires the key it
    /// is derived from. Reads keys as `serve` does: `--config`, `MCP_FLEET_ENCRYPTION_KEY`.
    Keys(KeysArgs),
}

/// Flags of `keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// `keys` subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum KeysAction {
    /// Print a new random key (64 hex characters) for `encryption_key` or a key ring.
    Generate,
    /// Print the index key of the configured ring (64 hex characters), the value of
    /// `index_key` that pins it. Without `index_key` it is derived from the key with the
    /// lowest id, so run this before that key leaves the ring.
    IndexKey,
}

/// What `serve --help` adds after the flags: the settings only the environment (or the
/// file) gives, and the exit status.
const SERVE_HELP: &str = "\
Environment (or the same key in the --config file):
  MCP_FLEET_ENCRYPTION_KEY  required (`encryption_key`): 64 hex characters, or the path of
                            a key-ring file; the same on every node
  MCP_FLEET_CLUSTER_SECRET  required (`cluster_secret`): at least 16 characters; the same
                            on every node
  MCP_FLEET_<KEY>           any configuration key, `__` between levels: MCP_FLEET_RAFT__NODE_ID
                            (--node-id), MCP_FLEET_LISTEN (--listen), MCP_FLEET_RAFT__LISTEN
                            (--raft-listen), MCP_FLEET_DATA_DIR (--data-dir); a list is a
                            TOML array: MCP_FLEET_HTTP__ALLOWED_HOSTS='[\"a.example.com\"]'

Exit status: 0 after a clean stop, 1 when the node fails (a listener in use, storage), 2 when
the configuration is refused (a bad or missing key, a node id the data directory does not
belong to).";

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// What `dev` takes too.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// This node's id in the group: required on the first start, then remembered in the
    /// data directory (a different id is refused).
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

/// Flags of the commands that ask a node over its internal listener (`cluster`,
/// `secrets`).
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Internal address of the node to ask (`HOST:PORT`, or `http://HOST:PORT`): any node of
    /// the fleet; required.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    pub via: Option<String>,
    /// The cluster secret.
    #[arg(
        long,
        env = "MCP_FLEET_CLUSTER_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub cluster_secret: Option<String>,
}

/// Flags of `cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The node to ask and the secret to ask it with.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// Flags of `secrets`.
#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// The node to ask and the secret to ask it with.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: SecretsAction,
}

/// `secrets` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Set a tenant's secret, replacing any; the value is read from standard input (one
    /// trailing newline dropped) or `--from-file`, never from the command line. Returns once
    /// every member that answers has applied it.
    Set {
        /// The tenant (the organisation claim of its users' tokens).
        #[arg(long)]
        tenant: String,
        /// The secret's name, as tools ask for it.
        #[arg(long)]
        name: String,
        /// Read the value from this file instead of standard input.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
    },
    /// Print a tenant's secret names and when each was set (never values), as JSON.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Delete a tenant's secret; returns once every member that answers has applied it.
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The secret's name.
        #[arg(long)]
        name: String,
    },
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Print every member (id, address, state, applied index, and each one's own report),
    /// as asked through the node at `--via`; members that do not answer are shown as
    /// unreachable (JSON).
    Status,
    /// Form a new group with these voters (safe to repeat on every node with the same list;
    /// another list on a formed group is an error).
    Init {
        /// The voters: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` (internal addresses).
        #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = crate::raft::parse_peers)]
        peers: std::collections::BTreeMap<u64, String>,
    },
    /// Add a started node: it catches up as a learner, then becomes a voter (warns when
    /// the voters become an even number).
    Join {
        /// Its id; never the id of a node whose disk was lost.
        #[arg(long)]
        node_id: u64,
        /// Its internal address.
        #[arg(long, value_name = "HOST:PORT")]
        raft_addr: String,
    },
    /// Remove a node from the group; it is told, and stops serving and voting.
    Leave {
        /// Its id.
        #[arg(long)]
        node_id: u64,
    },
    /// Seal again, with the active key, every record sealed with an older key.
    Reseal,
    /// Refuse a user's tokens issued so far, one token, or one legacy session, on every
    /// node; returns once every member that answers has applied it.
    Revoke {
        /// The issuer of the user or token: one of the configured issuers (a trailing
        /// slash more or less is tolerated).
        #[arg(long, required_unless_present = "session")]
        issuer: Option<String>,
        /// The user (the subject the issuer names).
        #[arg(long, conflicts_with_all = ["token_id", "session"], requires = "issuer")]
        subject: Option<String>,
        /// One token, by its `jti`.
        #[arg(long, conflicts_with = "session", requires = "issuer")]
        token_id: Option<String>,
        /// One legacy session, by its `Mcp-Session-Id`.
        #[arg(long)]
        session: Option<String>,
    },
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
    /// The trusted token issuer (`iss`), for `--auth jwt`; replaces configured issuers.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// An accepted token audience (repeatable); default: the public MCP URL.
    #[arg(long, value_name = "URL", requires = "issuer")]
    pub audience: Vec<String>,
    /// The issuer's key set; default: read from the issuer's metadata.
    #[arg(long, value_name = "URL", requires = "issuer")]
    pub jwks_uri: Option<String>,
    /// Whose claim names the issuer uses.
    #[arg(long, value_enum, requires = "issuer")]
    pub issuer_preset: Option<PresetArg>,
    /// A PEM file of CA certificates trusted, besides the system's roots, for calls to
    /// issuers (`auth.ca_file`): for an identity provider behind a private CA.
    #[arg(long, value_name = "FILE")]
    pub issuer_ca_file: Option<PathBuf>,
    /// The public URL of the MCP endpoint, as clients reach it (the OAuth resource);
    /// default: `http://<listen address>/mcp`.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        let issuers = self.issuer.as_ref().map(|issuer| {
            let mut config = auth::IssuerConfig::new(issuer.clone());
            config.jwks_uri = self.jwks_uri.clone();
            config.audiences = self.audience.clone();
            config.preset = match self.issuer_preset {
                None | Some(PresetArg::Generic) => auth::Preset::Generic,
                Some(PresetArg::Workos) => auth::Preset::Workos,
                Some(PresetArg::Auth0) => auth::Preset::Auth0,
                Some(PresetArg::Keycloak) => auth::Preset::Keycloak,
                Some(PresetArg::Entra) => auth::Preset::Entra,
            };
            vec![config]
        });
        Overrides {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            auth: AuthOverrides {
                mode: self.auth.map(|a| match a {
                    AuthArg::None => auth::Mode::None,
                    AuthArg::Jwt => auth::Mode::Jwt,
                    AuthArg::Dev => auth::Mode::Dev,
                }),
                issuers,
                ca_file: self.issuer_ca_file.clone(),
            },
            public_url: self.public_url.clone(),
            ..Overrides::default()
        }
    }
}

/// `--issuer-preset` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// `sub`, `email`, `scope`.
    Generic,
    /// WorkOS AuthKit.
    Workos,
    /// Auth0.
    Auth0,
    /// Keycloak.
    Keycloak,
    /// Microsoft Entra ID.
    Entra,
}

/// Flags of `stdio` (none yet).
#[derive(Debug, Args)]
pub struct StdioArgs {}

/// `--auth` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// No authentication (loopback only).
    None,
    /// Bearer tokens from the configured issuers.
    Jwt,
    /// A built-in development issuer; prints a token to use (loopback only).
    Dev,
}

impl Cli {
    /// The flags that override file and environment.
    pub fn overrides(&self) -> Overrides {
        match &self.command {
            Command::Dev(args) => args.overrides(),
            Command::Serve(args) => Overrides {
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
                ..args.serve.overrides()
            },
            Command::Cluster(_) | Command::Secrets(_) | Command::Keys(_) | Command::Stdio(_) => {
                Overrides::default()
            }
        }
    }
}
