//! The whole mcp-fleet command line (`dev`, `serve`, `stdio`, `cluster …`, `keys …`) run
//! for a team's own tools, resources and prompts.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::node::{Catalog, Node, Role, StartError};
use crate::tools::{Prompt, Registry, Resource, ResourceTemplate, Tool};
use crate::{cluster, telemetry, Config};

/// An MCP server built on mcp-fleet: its tools, resources and prompts, and the command
/// line that serves them.
///
/// ```no_run
/// use mcp_fleet::tools::builtin::Echo;
///
/// fn main() -> std::process::ExitCode {
///     mcp_fleet::App::new("acme-mcp", env!("CARGO_PKG_VERSION"))
///         .tool(Echo)
///         .run()
/// }
/// ```
pub struct App {
    name: &'static str,
    version: &'static str,
    registry: Registry,
}

impl App {
    /// A server that introduces itself to clients (`serverInfo`) and on its command line
    /// as `name` at `version`, offering nothing yet.
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            registry: Registry::new(),
        }
    }

    /// Offers a tool. Two tools of one name stop the server from starting, naming both.
    pub fn tool<T: Tool>(mut self, tool: T) -> Self {
        self.registry.tool(tool);
        self
    }

    /// Offers a resource.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.registry.resource(resource);
        self
    }

    /// Offers a resource template.
    pub fn resource_template(mut self, template: ResourceTemplate) -> Self {
        self.registry.resource_template(template);
        self
    }

    /// Offers a prompt.
    pub fn prompt(mut self, prompt: Prompt) -> Self {
        self.registry.prompt(prompt);
        self
    }

    /// Adds to the registry in place: for packs of tools registered by a function.
    pub fn with(mut self, register: impl FnOnce(&mut Registry)) -> Self {
        register(&mut self.registry);
        self
    }

    /// The tools, resources and prompts offered so far.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A node serving this app's offer, from `config`, for tests and for embedding in a
    /// program of one's own; see [`crate::NodeBuilder`].
    pub fn node(&self, config: Config) -> crate::NodeBuilder {
        Node::builder(config).catalog(self.catalog())
    }

    fn catalog(&self) -> Catalog {
        Catalog {
            registry: self.registry.clone(),
            info: crate::mcp::ServerInfo {
                name: self.name.to_owned(),
                version: self.version.to_owned(),
            },
        }
    }

    /// Runs the command line of this process (`std::env::args`): parses flags, reads
    /// configuration (`--config`, `MCP_FLEET_*`), serves until SIGINT or SIGTERM. Returns
    /// the exit status: 0 after a clean stop, 2 when the configuration or the command line
    /// is refused, 1 for any other failure.
    pub fn run(self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// Runs the command line `args` (the first is the program name) as [`App::run`] does.
    pub fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        // Before anything signs or checks a token: the first use of `jsonwebtoken` fixes
        // its crypto backend for the process.
        crate::auth::jwt_crypto::install();
        let command = Cli::command().name(self.name).version(self.version);
        let cli = match command
            .try_get_matches_from(args)
            .and_then(|m| Cli::from_arg_matches(&m))
        {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", self.name);
                return ExitCode::from(2);
            }
        };
        if let Command::Keys(args) = &cli.command {
            return match crate::keys::run(args.action, config.encryption_key.as_ref()) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", self.name);
                    ExitCode::from(2)
                }
            };
        }
        if let Err(e) = self.registry.check() {
            eprintln!("{}: {e}", self.name);
            return ExitCode::from(2);
        }
        let logs = telemetry::init(&config.log);
        let catalog = self.catalog();
        let result = actix_web::rt::System::new().block_on(async move {
            match cli.command {
                Command::Dev(_) => serve(config, Role::Single, catalog).await,
                Command::Serve(_) => serve(config, Role::Fleet, catalog).await,
                Command::Cluster(args) => cluster::run(&args, config.cluster_secret.as_deref())
                    .await
                    .map_err(anyhow::Error::from),
                Command::Secrets(args) => {
                    crate::secrets::run(&args, config.cluster_secret.as_deref())
                        .await
                        .map_err(anyhow::Error::from)
                }
                Command::Keys(_) => unreachable!("answered before the runtime starts"),
                Command::Stdio(_) => {
                    crate::stdio::serve(&config, &catalog, tokio::io::stdin(), tokio::io::stdout())
                        .await
                        .map_err(anyhow::Error::from)
                }
            }
        });
        // Every buffered line out before the process's last words, in order.
        drop(logs);
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {}", self.name, describe(&e));
                // As documented: 2 when the configuration is refused or a `cluster` command
                // is given too little to run (a usage error, like clap's), 1 for any other
                // failure.
                let config = e
                    .downcast_ref::<StartError>()
                    .is_some_and(StartError::is_config);
                let usage = e
                    .downcast_ref::<cluster::Error>()
                    .is_some_and(cluster::Error::is_usage)
                    || e.downcast_ref::<crate::secrets::Error>()
                        .is_some_and(crate::secrets::Error::is_usage);
                ExitCode::from(if config || usage { 2 } else { 1 })
            }
        }
    }
}

/// The error and its causes, each said once: most errors already quote their cause.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn serve(config: Config, role: Role, catalog: Catalog) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let name = catalog.info.name.clone();
    let node = Node::builder(config)
        .role(role)
        .catalog(catalog)
        .bind()
        .await?;
    // The first lines on standard output are the endpoints, for people and test harnesses.
    announce(format_args!("mcp-fleet listening on {}", node.mcp_url()));
    announce(format_args!(
        "mcp-fleet internal listener on http://{}",
        node.internal_addr()
    ));
    if let Some(token) = node.dev_token() {
        // Standard output, not the log: this token is for the developer to copy.
        announce(format_args!("mcp-fleet bearer token: {token}"));
        let snippet = serde_json::json!({ "mcpServers": { name: {
            "type": "http",
            "url": node.resource(),
            "headers": { "Authorization": format!("Bearer {token}") },
        }}});
        announce(format_args!("mcp-fleet client config: {snippet}"));
    }
    tracing::info!(addr = %node.addr(), internal = %node.internal_addr(), "serving");
    node.run_until(shutdown).await?;
    Ok(())
}

/// Writes one line to standard output. A node that serves must not die because no one
/// reads its standard output any more (a supervisor that read the first line and closed
/// the pipe): `println!` panics on a closed pipe, so a failed write is only logged.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "standard output is closed; the node serves on");
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when it is first awaited: a signal sent as soon as the endpoint is printed (as test
/// harnesses and process managers do) must stop the node cleanly, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::builtin::Echo;

    #[test]
    fn two_tools_of_one_name_stop_the_command_line_before_it_serves_with_status_2() {
        let app = App::new("acme-mcp", "1.0.0").tool(Echo).tool(Echo);
        let error = app.registry().check().expect_err("a duplicate");
        assert!(error
            .to_string()
            .contains("tool `echo` is registered twice"));
        // `stdio` would serve standard input; the check refuses before anything is read.
        let status = app.run_from(["acme-mcp", "stdio"]);
        assert_eq!(format!("{status:?}"), format!("{:?}", ExitCode::from(2)));
    }
}
