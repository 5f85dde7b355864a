//! Starting a node: store, actors, engine and HTTP server, from one validated config.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use tokio_util::sync::CancellationToken;

use crate::actors::{SessionHandle, ToolPool};
use crate::crypto::{self, Sealer};
use crate::mcp::{Engine, ServerInfo};
use crate::store::LocalStore;
use crate::{http, store, tools, Config};

/// Page cache of the local store.
const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The sealing key could not be loaded.
    #[error("encryption key: {0}")]
    Key(#[from] crypto::Error),
    /// The HTTP server could not use the listener.
    #[error("listener: {0}")]
    Listen(std::io::Error),
}

/// Builds the protocol engine: tool actors, session actor, sealing key.
/// Must be called inside an actix system.
pub(crate) fn engine(config: &Config, store: LocalStore, sealer: Sealer) -> Engine {
    let registry = tools::default_registry(config.conformance);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = ToolPool::start(&registry, &config.tools, threads);
    let sessions = SessionHandle::start(store, &config.sessions);
    Engine::new(
        ServerInfo::default(),
        config.mcp.clone(),
        registry,
        pool,
        sessions,
        sealer,
    )
}

/// Creates the data directory, owner-only when this creates it: it holds the sealing key.
fn create_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A running node.
pub struct Node;

impl Node {
    /// Starts a node on an already-bound `listener` (port 0 is fine; see
    /// [`NodeHandle::addr`]). Must be called inside an actix system.
    pub fn start(config: Config, listener: TcpListener) -> Result<NodeHandle, StartError> {
        create_data_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let key = match &config.encryption_key {
            Some(key) => key.clone(),
            None => crypto::load_or_create_key_file(&config.data_dir.join("encryption.key"))?,
        };
        let store = LocalStore::open(&config.data_dir.join("store"), STORE_CACHE_BYTES)?;
        let engine = engine(&config, store, Sealer::single(key));
        let addr = listener.local_addr().map_err(StartError::Listen)?;
        let shutdown = CancellationToken::new();
        let state = web::Data::new(http::State::new(
            engine,
            config.http.clone(),
            addr.ip().is_loopback(),
            shutdown.clone(),
        ));
        let http_config = Arc::new(config.http.clone());
        let workers = match config.http.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(http::cors(&http_config))
                .configure(http::configure)
        })
        .workers(workers)
        .on_connect(http::on_connect)
        // Responses written in pieces (SSE) otherwise stall on delayed ACKs.
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)
        .map_err(StartError::Listen)?
        .run();
        let prune_state = state.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                prune_state.live.prune();
            }
        });
        let handle = server.handle();
        let task = actix_web::rt::spawn(server);
        Ok(NodeHandle {
            addr,
            handle,
            task,
            shutdown,
        })
    }
}

/// A handle on a running node.
pub struct NodeHandle {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
}

impl NodeHandle {
    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint's URL.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// A handle that can stop the node while another task waits on it.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            handle: self.handle.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 10 s), and
    /// waits until the server is down.
    pub async fn stop(self) {
        self.stopper().stop().await;
        let _ = self.task.await;
    }

    /// Waits until the server stops on its own.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Stops a node from anywhere.
#[derive(Clone)]
pub struct Stopper {
    handle: actix_web::dev::ServerHandle,
    shutdown: CancellationToken,
}

impl Stopper {
    /// Stops accepting connections, closes open-ended streams, and lets in-flight requests
    /// finish (up to 10 s).
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.handle.stop(true).await;
    }
}
