//! The `mcp-fleet` binary: parse configuration, start, wait for shutdown.

use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use mcp_fleet::cli::{Cli, Command};
use mcp_fleet::{cluster, telemetry, Config, Node, Role};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-fleet: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Keys(args) = &cli.command {
        return match mcp_fleet::keys::run(args.action, config.encryption_key.as_ref()) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcp-fleet: {e}");
                ExitCode::from(2)
            }
        };
    }
    telemetry::init(&config.log);
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            Command::Dev(_) => serve(config, Role::Single).await,
            Command::Serve(_) => serve(config, Role::Fleet).await,
            Command::Cluster(args) => cluster::run(&args, config.cluster_secret.as_deref())
                .await
                .map_err(anyhow::Error::from),
            Command::Keys(_) => unreachable!("answered before the runtime starts"),
            Command::Stdio(_) => {
                mcp_fleet::stdio::serve(&config, tokio::io::stdin(), tokio::io::stdout())
                    .await
                    .map_err(anyhow::Error::from)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-fleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let internal = TcpListener::bind(config.raft_listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.raft_listen))?;
    let node = Node::start(config, role, listener, internal).await?;
    // The first lines on standard output are the endpoints, for people and test harnesses.
    println!("mcp-fleet listening on {}", node.mcp_url());
    println!(
        "mcp-fleet internal listener on http://{}",
        node.internal_addr()
    );
    if let Some(token) = node.dev_token() {
        // Standard output, not the log: this token is for the developer to copy.
        println!("mcp-fleet bearer token: {token}");
        let snippet = serde_json::json!({ "mcpServers": { "mcp-fleet": {
            "type": "http",
            "url": node.resource(),
            "headers": { "Authorization": format!("Bearer {token}") },
        }}});
        println!("mcp-fleet client config: {snippet}");
    }
    tracing::info!(addr = %node.addr(), internal = %node.internal_addr(), "serving");
    let stopper = node.stopper();
    let wait = node.wait();
    tokio::pin!(wait);
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down: draining in-flight requests");
            stopper.stop().await;
            wait.await?;
        }
        result = &mut wait => result?,
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
