//! The `mcp-fleet` binary: parse configuration, start, wait for shutdown.

use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use mcp_fleet::cli::{Cli, Command};
use mcp_fleet::{telemetry, Config, Node};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-fleet: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            Command::Dev(_) => serve(config).await,
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let node = Node::start(config, listener)?;
    // The first line on standard output is the endpoint, for people and for test harnesses.
    println!("mcp-fleet listening on {}", node.mcp_url());
    tracing::info!(addr = %node.addr(), "serving");
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
