//! The `mcp-fleet` binary: parse configuration, start, wait for shutdown.

use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use mcp_fleet::cli::{Cli, Command};
use mcp_fleet::{cluster, telemetry, Config, Node, Role, StartError};

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
            Command::Secrets(args) => {
                mcp_fleet::secrets::run(&args, config.cluster_secret.as_deref())
                    .await
                    .map_err(anyhow::Error::from)
            }
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
            eprintln!("mcp-fleet: {}", describe(&e));
            // As documented: 2 when the configuration is refused or a `cluster` command is
            // given too little to run (a usage error, like clap's), 1 for any other failure.
            let config = e
                .downcast_ref::<StartError>()
                .is_some_and(StartError::is_config);
            let usage = e
                .downcast_ref::<cluster::Error>()
                .is_some_and(cluster::Error::is_usage)
                || e.downcast_ref::<mcp_fleet::secrets::Error>()
                    .is_some_and(mcp_fleet::secrets::Error::is_usage);
            ExitCode::from(if config || usage { 2 } else { 1 })
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

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the public listener (--listen, `listen`) on {}: {e}",
            config.listen
        )
    })?;
    let internal = TcpListener::bind(config.raft_listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the internal listener (--raft-listen, `raft.listen`) on {}: {e}",
            config.raft_listen
        )
    })?;
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
