//! Starting a node: fleet store, actors, engine, and the public and internal HTTP
//! servers, from one validated config.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use tokio_util::sync::CancellationToken;

use crate::actors::{SessionHandle, ToolPool};
use crate::auth::dev::DevIssuer;
use crate::auth::{self, Authenticator, Principal};
use crate::crypto::{self, Ring, Sealer};
use crate::identity::{self, Identity};
use crate::mcp::{Engine, ServerInfo};
use crate::metrics::Metrics;
use crate::raft::{self, Store};
use crate::{http, tools, Config};

/// How long an MCP request to a node of one waits for the node's key check, which runs
/// while the node starts serving, before it is refused with the reason.
const KEY_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a node that is not yet a member (or whose key check has not passed) tries
/// again to record its first membership and group in its data directory.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// HTTP workers of the internal listener.
const INTERNAL_WORKERS: usize = 2;

/// Connections the internal listener serves at once; more wait in the listen backlog.
const INTERNAL_MAX_CONNECTIONS: usize = 256;

/// How a node finds its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A group of one, formed on first start (dev mode). Keys and the cluster secret are
    /// generated when not configured.
    Single,
    /// A member of a fleet: forms the group from `raft.peers` on first start, or waits to
    /// be added with `cluster join`. Keys and the cluster secret must be configured.
    Fleet,
}

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
    /// The fleet store could not be opened.
    #[error("store: {0}")]
    Store(#[from] raft::Error),
    /// The sealing key could not be loaded.
    #[error("encryption key: {0}")]
    Key(#[from] crypto::Error),
    /// The development issuer could not start.
    #[error("{0}")]
    DevIssuer(#[from] auth::dev::Error),
    /// A setting a fleet node cannot do without is missing.
    #[error(
        "configuration key `{0}` (environment variable {env}) is required to serve as part \
         of a fleet",
        env = crate::config::env_var(.0)
    )]
    Missing(&'static str),
    /// `serve` with the development issuer: each node would run its own, and trust only it.
    #[error(
        "configuration key `auth.mode`: `dev` runs a development issuer inside one node, so a \
         token from one node is refused by the others; serve a fleet with --auth jwt and a \
         real issuer, or run one node with `mcp-fleet dev --auth dev`"
    )]
    DevAuthInFleet,
    /// The node's id could not be settled against its data directory.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// An HTTP server could not use its listener.
    #[error("listener: {0}")]
    Listen(std::io::Error),
    /// A listener could not be opened on its configured address.
    #[error("cannot open the {what} on {addr}: {source}")]
    Bind {
        /// Which listener, and the settings that name its address.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The tools, resources and prompts cannot be served as given.
    #[error(transparent)]
    Registry(#[from] tools::RegistryError),
}

impl StartError {
    /// Whether the configuration is at fault (exit status 2), rather than the machine.
    pub fn is_config(&self) -> bool {
        match self {
            StartError::Missing(_) | StartError::DevAuthInFleet | StartError::Registry(_) => true,
            StartError::Identity(e) => e.is_config(),
            _ => false,
        }
    }
}

/// What a server offers and how it introduces itself: its tools, resources and prompts,
/// and the name and version in `serverInfo`.
#[derive(Clone)]
pub(crate) struct Catalog {
    /// The tools, resources and prompts.
    pub(crate) registry: tools::Registry,
    /// The name and version clients see.
    pub(crate) info: ServerInfo,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            registry: tools::Registry::new(),
            info: ServerInfo::default(),
        }
    }
}

/// Builds the protocol engine: tools, sessions, sealing key, and what tool calls
/// are given (`services`). Must be called inside an actix system.
pub(crate) fn engine(
    config: &Config,
    catalog: &Catalog,
    store: Store,
    sealer: Sealer,
    metrics: &Metrics,
    services: crate::mcp::Services,
) -> Engine {
    let registry = catalog.registry.clone();
    let pool = ToolPool::start(&registry, &config.tools, metrics);
    let tasks = crate::mcp::Tasks::new(
        store.clone(),
        config.tasks.clone(),
        metrics.limits().clone(),
        config.raft.max_entry_bytes,
    );
    let sessions = SessionHandle::start(store, &config.sessions, metrics.limits());
    sessions.observe_cap(metrics.limits());
    Engine::new(
        catalog.info.clone(),
        config.mcp.clone(),
        registry,
        pool,
        sessions,
        sealer,
        metrics.limits().clone(),
        services,
        tasks,
    )
}

/// A fleet's tenant secrets and tool state, both in the replicated store.
pub(crate) fn fleet_storage(config: &Config, store: &Store, metrics: &Metrics) -> tools::Storage {
    tools::Storage {
        secrets: Some(tools::Secrets::fleet(
            store.clone(),
            config.secrets.clone(),
            metrics.limits().clone(),
        )),
        state: Some(tools::StateStore::new(
            store.clone(),
            config.tool_state.clone(),
            metrics.limits().clone(),
        )),
    }
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

/// A node of a fleet (or a node of one), built with [`Node::builder`].
pub struct Node;

impl Node {
    /// A node from `config`, serving nothing until given a registry; a node of one
    /// ([`Role::Single`]) unless told otherwise.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder {
            config,
            role: Role::Single,
            catalog: Catalog::default(),
        }
    }
}

/// Sets up a node: its configuration, role, tools and name; then starts it on listeners.
///
/// ```no_run
/// # async fn example() -> Result<(), mcp_fleet::StartError> {
/// use std::net::TcpListener;
/// use mcp_fleet::{tools::Registry, Config, Node, Role};
///
/// let config = Config::from_toml("data_dir = \"/tmp/acme\"").expect("a valid config");
/// let mut registry = Registry::new();
/// registry.tool(mcp_fleet::tools::builtin::Echo);
/// let node = Node::builder(config)
///     .role(Role::Single)
///     .registry(registry)
///     .server_info("acme-mcp", "1.0.0")
///     .start(
///         TcpListener::bind("127.0.0.1:0").expect("a port"),
///         TcpListener::bind("127.0.0.1:0").expect("a port"),
///     )
///     .await?;
/// println!("serving on {}", node.mcp_url());
/// node.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct NodeBuilder {
    config: Config,
    role: Role,
    catalog: Catalog,
}

impl NodeBuilder {
    /// How the node finds its group (default [`Role::Single`]).
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The tools, resources and prompts the node serves.
    pub fn registry(mut self, registry: tools::Registry) -> Self {
        self.catalog.registry = registry;
        self
    }

    /// The server name and version clients see in `serverInfo` (default: mcp-fleet's).
    pub fn server_info(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.catalog.info = ServerInfo {
            name: name.into(),
            version: version.into(),
        };
        self
    }

    pub(crate) fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Binds the configured addresses (`listen`, `raft.listen`) and starts there.
    /// Must be called inside an actix system.
    pub async fn bind(self) -> Result<NodeHandle, StartError> {
        let bind = |what, addr: SocketAddr| {
            listen(addr).map_err(|source| StartError::Bind { what, addr, source })
        };
        let listener = bind("public listener (--listen, `listen`)", self.config.listen)?;
        let internal = bind(
            "internal listener (--raft-listen, `raft.listen`)",
            self.config.raft_listen,
        )?;
        self.start(listener, internal).await
    }

    /// Starts the node on already-bound listeners (port 0 is fine; see
    /// [`NodeHandle::addr`]): `listener` serves MCP, `internal` serves Raft and cluster
    /// status. Must be called inside an actix system.
    pub async fn start(
        self,
        listener: TcpListener,
        internal: TcpListener,
    ) -> Result<NodeHandle, StartError> {
        let NodeBuilder {
            mut config,
            role,
            catalog,
        } = self;
        catalog.registry.check()?;
        if role == Role::Fleet && config.auth.mode == auth::Mode::Dev {
            return Err(StartError::DevAuthInFleet);
        }
        create_data_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let (identity, unwritten_identity) = settle_identity(&mut config, role)?;
        let internal_addr = internal.local_addr().map_err(StartError::Listen)?;
        let addr = listener.local_addr().map_err(StartError::Listen)?;
        let (ring, unwritten_key) = ring(&config, role)?;
        let first_files = write_first_files(unwritten_identity, unwritten_key);
        let sealer = ring.sealer.clone();
        let metrics = Metrics::new();
        let access = Access::new(&config, addr)?;
        let authenticated = access.auth.mode != auth::Mode::None;
        let opening = begin_open(&config, role, ring, metrics.limits())?;
        // The issuers' client is built and their keys fetched while the store opens, not
        // after: the first request with a token waits for them.
        let keys = authenticated.then(|| Authenticator::fetch_keys(&access.auth));
        let (store, runtime, secret) =
            open_store(&config, role, opening, first_files, internal_addr).await?;
        // What a node waiting for a group names in the commands it suggests.
        store.set_advertised(
            config
                .raft
                .advertise
                .clone()
                .unwrap_or_else(|| internal_addr.to_string()),
        );
        store.expect_group(identity.group_id().map(str::to_owned));
        if role == Role::Single {
            // A group of one decides within milliseconds, but that includes writing the
            // key-check record on a fresh data directory: serve meanwhile, and let the
            // first requests wait for the decision rather than meet a 503 for a check
            // nobody else could slow down.
            store.hold_requests_for_key_check(KEY_CHECK_WAIT);
        }
        store.check_keys();
        metrics.observe_store(&store);
        record_first_membership(identity, store.clone());
        let authenticator = keys.map(|keys| {
            let limits = metrics.limits().clone();
            Authenticator::start_with_keys(
                &access.auth,
                &access.resource,
                store.clone(),
                limits,
                keys,
            )
        });
        if let Some(authenticator) = &authenticator {
            metrics.observe_auth(authenticator);
        }
        // Tools reach upstreams through their own client; under --auth none there is no
        // caller token, so no exchanger.
        let tokens = if let Some(authenticator) = &authenticator {
            let exchanger =
                auth::Exchanger::new(&access.auth, store.clone(), authenticator.issuer_client());
            metrics.observe_exchanges(&exchanger);
            tools::Tokens::Exchange(exchanger)
        } else {
            tools::Tokens::None
        };
        // Resource updates a tool announces here reach every node's subscribers.
        let (updates, relayed) = tools::Updates::relayed(
            config.http.max_queued_updates,
            metrics.limits().clone(),
            http::MAX_QUEUED_UPDATES,
        );
        http::relay_updates(store.clone(), relayed);
        let services = crate::mcp::Services {
            access: authenticated.then(|| access.auth.clone()),
            upstream: tools::Upstream::new(config.tools.http, metrics.limits().clone(), tokens),
            storage: fleet_storage(&config, &store, &metrics),
            updates,
        };
        let engine = engine(&config, &catalog, store.clone(), sealer, &metrics, services);
        let guard = http::Guard::new(
            authenticator.clone(),
            &access.resource,
            access.auth.required_scopes.clone(),
        );
        let metadata = authenticator
            .is_some()
            .then(|| http::metadata_document(&access.resource, &access.auth));
        let dev_token = access.dev.as_ref().map(|dev| {
            dev.mint(&Principal {
                subject: auth::dev::DEV_SUBJECT.to_owned(),
                scopes: access.auth.all_scopes(),
                ..Principal::anonymous()
            })
        });
        let shutdown = CancellationToken::new();
        let state = web::Data::new(http::State::new(
            engine.clone(),
            config.http.clone(),
            addr.ip(),
            shutdown.clone(),
            store.clone(),
            http::AuthSetup {
                guard,
                metadata,
                dev: access.dev.clone(),
            },
        ));
        let http_config = Arc::new(config.http.clone());
        let workers = config.http.worker_count();
        let app_state = state.clone();
        let observe = http::Observe::new(metrics.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(http::cors(&http_config))
                .wrap(actix_web::middleware::from_fn(http::close_when_draining))
                // Outermost, so refusals by the layers inside are counted and logged too.
                .wrap(observe.clone())
                .configure(http::configure)
        })
        .workers(workers)
        // actix's cap is per worker: together they take at most http.max_connections.
        .max_connections(config.http.connections_per_worker())
        .client_request_timeout(config.http.head_timeout)
        .keep_alive(config.http.keep_alive)
        // A client closing its connection ends its request at once (see http::connections).
        .h1_allow_half_closed(false)
        .on_connect(http::on_connect(metrics.limits()))
        // Responses written in pieces (SSE) otherwise stall on delayed ACKs.
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)
        .map_err(StartError::Listen)?
        .run();
        let internal_state = web::Data::new(http::Internal {
            store: store.clone(),
            metrics,
            secret,
            authenticator,
            issuers: access
                .auth
                .issuers
                .iter()
                .map(|i| i.issuer.clone())
                .collect(),
            sessions: engine.sessions().clone(),
            public: state.clone(),
            holdings: http::Holdings {
                server: http::ServerLine {
                    name: catalog.info.name.clone(),
                    version: catalog.info.version.clone(),
                },
                catalog: catalog.registry.digest(),
            },
        });
        let internal_secrets = web::Data::new(tools::Secrets::fleet(
            store.clone(),
            config.secrets.clone(),
            internal_state.metrics.limits().clone(),
        ));
        let body_limits = http::BodyLimits::new(&config);
        let internal_server = HttpServer::new(move || {
            App::new()
                .app_data(internal_state.clone())
                .app_data(internal_secrets.clone())
                .configure(|cfg| http::configure_internal(cfg, body_limits))
        })
        .workers(INTERNAL_WORKERS)
        // Peers keep a few pooled connections each and Prometheus one; the cap keeps a
        // caller who reaches this port (it should be firewalled) from taking descriptors.
        .max_connections(INTERNAL_MAX_CONNECTIONS / INTERNAL_WORKERS)
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(internal)
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
        let internal_handle = internal_server.handle();
        let task = actix_web::rt::spawn(server);
        actix_web::rt::spawn(internal_server);
        Ok(NodeHandle {
            addr,
            internal_addr,
            resource: access.resource,
            dev_token,
            handle,
            internal_handle,
            task,
            shutdown,
            store,
            runtime: Arc::new(runtime),
            state,
            // A node of one has no balancer to leave.
            drain: match role {
                Role::Single => std::time::Duration::ZERO,
                Role::Fleet => config.http.drain,
            },
        })
    }
}

/// Who may call, as this node enforces it.
struct Access {
    /// Authentication settings in force (with the development issuer added in dev mode).
    auth: auth::Config,
    /// The public MCP URL.
    resource: String,
    /// The development issuer, with `--auth dev`.
    dev: Option<Arc<DevIssuer>>,
}

impl Access {
    fn new(config: &Config, addr: SocketAddr) -> Result<Self, StartError> {
        let resource = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}/mcp"));
        let mut auth = config.auth.clone();
        let dev = match auth.mode {
            auth::Mode::Dev => {
                let dev = DevIssuer::open(&config.data_dir, &format!("http://{addr}"), &resource)?;
                auth.issuers.insert(0, dev.config());
                Some(Arc::new(dev))
            }
            _ => None,
        };
        Ok(Self {
            auth,
            resource,
            dev,
        })
    }
}

/// Connections the kernel completes and queues for a listener before the node accepts
/// them (the listen backlog, capped by the kernel's `net.core.somaxconn`). std binds with
/// 128: past that, a burst of new connections (a balancer reconnecting after a failover,
/// clients coming back at once) has its handshakes dropped and retried a second or more
/// later. 1024 is actix's own default for the listeners it binds.
const LISTEN_BACKLOG: i32 = 1024;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`], as `TcpListener::bind` makes one
/// otherwise (address reuse on Unix, close-on-exec).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Settles this node's id against its data directory (see [`identity`]) and puts it in
/// `config.raft.node_id`. A node of one is node 1 unless configured or recorded otherwise;
/// a fleet node has no default. On a first start the record comes back still to write
/// (see [`write_first_files`]).
fn settle_identity(
    config: &mut Config,
    role: Role,
) -> Result<(Identity, Option<identity::Unwritten>), StartError> {
    let default = match role {
        Role::Single => Some(config.raft.node_id),
        Role::Fleet => None,
    };
    let (identity, unwritten) =
        Identity::settle_unwritten(&config.data_dir, config.configured_node_id, default)?;
    let id = identity.node_id();
    config.raft.node_id = id;
    if !config.raft.peers.is_empty() && !config.raft.peers.contains_key(&id) {
        return Err(identity::Error::NotInPeers { id }.into());
    }
    Ok((identity, unwritten))
}

/// Writes what a first start adds to the data directory (`identity.json`; in dev mode
/// `encryption.key`) on a blocking thread, while the replica opens on another: each is
/// a file and a directory fsynced, about 1.5 ms together of a fresh start's ten or so.
/// [`open_store`] waits for them before the replica takes its first vote or entry, so a
/// crash before then leaves an empty replica that the next start opens as new, and no
/// record is ever sealed with a key whose file is not on disk. `None` on a restart.
fn write_first_files(
    identity: Option<identity::Unwritten>,
    key: Option<crypto::UnwrittenKey>,
) -> Option<actix_web::rt::task::JoinHandle<Result<(), StartError>>> {
    if identity.is_none() && key.is_none() {
        return None;
    }
    Some(actix_web::rt::task::spawn_blocking(move || {
        if let Some(identity) = identity {
            identity.write()?;
        }
        if let Some(key) = key {
            key.write()?;
        }
        Ok(())
    }))
}

/// Records, once, the first membership this node finds itself in and its group; see
/// [`identity`]. In the background, while the node serves: the record says which group a
/// data directory belongs to, and nothing the node serves waits for it (each write is an
/// fsync of `identity.json` and its directory). A member records its membership at once
/// and its group once the key check has read it; one waiting to be joined watches until
/// it is.
fn record_first_membership(identity: Identity, store: Store) {
    if identity.has_first_membership() && identity.group_id().is_some() {
        return;
    }
    actix_web::rt::spawn(async move {
        let mut identity = identity;
        // The group is known once the key check passes: a node of one needs milliseconds.
        store.keys_decided(RECORD_EVERY).await;
        loop {
            let attempt = store.clone();
            let Ok((back, done)) = actix_web::rt::task::spawn_blocking(move || {
                let member = record_membership_if_member(&mut identity, &attempt);
                let done = record_group(&mut identity, &attempt) && member;
                (identity, done)
            })
            .await
            else {
                return;
            };
            if done {
                return;
            }
            identity = back;
            tokio::time::sleep(RECORD_EVERY).await;
        }
    });
}

/// Records the group's id once this node's key check has read it; returns whether it is
/// settled. Only a key check that passed names it: a node that failed its check (a ring
/// that is not the fleet's, or another group's replica) never records a group.
fn record_group(identity: &mut Identity, store: &Store) -> bool {
    if identity.group_id().is_some() {
        return true;
    }
    let Some(group) = store.group_id().filter(|_| store.key_problem().is_none()) else {
        return false;
    };
    match identity.record_group(&group) {
        Ok(wrote) => {
            if wrote {
                tracing::info!(group = %group, "recorded the group this data directory belongs to");
            }
            store.expect_group(Some(group));
        }
        Err(e) => tracing::warn!(error = %e, "cannot record the group's id"),
    }
    true
}

/// Records the membership if this node belongs to it; returns whether it is settled.
fn record_membership_if_member(identity: &mut Identity, store: &Store) -> bool {
    let status = store.status();
    if !status.members.iter().any(|m| m.id == identity.node_id()) {
        return false;
    }
    let members = status.members.into_iter().map(|m| (m.id, m.addr)).collect();
    if let Err(e) = identity.record_first_membership(members) {
        tracing::warn!(error = %e, "cannot record the first membership");
    }
    true
}

/// The sealing key ring: configured, or in dev mode read from the data directory, or
/// generated there on a first start (its file still to write; see [`write_first_files`]).
fn ring(config: &Config, role: Role) -> Result<(Ring, Option<crypto::UnwrittenKey>), StartError> {
    match (&config.encryption_key, role) {
        (Some(ring), _) => Ok((ring.clone(), None)),
        (None, Role::Single) => {
            let path = config.data_dir.join("encryption.key");
            let (key, unwritten) = crypto::load_or_generate_key_file(&path)?;
            Ok((Ring::single(key), unwritten))
        }
        (None, Role::Fleet) => Err(StartError::Missing("encryption_key")),
    }
}

/// The replica being opened on a blocking thread, and the cluster secret it was opened
/// with; see [`begin_open`].
struct Opening {
    task: actix_web::rt::task::JoinHandle<Result<(Store, raft::Runtime), raft::Error>>,
    secret: String,
}

/// Starts opening the replica with `ring` on a blocking thread: the disk work and Raft's
/// start take milliseconds, during which this thread goes on (building the issuers'
/// client, which reads the system's certificates, and fetching their keys).
fn begin_open(
    config: &Config,
    role: Role,
    ring: Ring,
    limits: &crate::limits::Limits,
) -> Result<Opening, StartError> {
    let secret = match role {
        Role::Single => config
            .cluster_secret
            .clone()
            .unwrap_or_else(|| crypto::random_hex(32)),
        Role::Fleet => config
            .cluster_secret
            .clone()
            .ok_or(StartError::Missing("cluster_secret"))?,
    };
    let (raft, dir, opened_with, limits) = (
        config.raft.clone(),
        config.data_dir.join("raft"),
        secret.clone(),
        limits.clone(),
    );
    let task = actix_web::rt::task::spawn_blocking(move || {
        Store::open(&raft, &dir, &opened_with, ring, &limits)
    });
    Ok(Opening { task, secret })
}

/// Waits for the replica [`begin_open`] opens and the files [`write_first_files`] writes,
/// then joins (or forms) the group.
async fn open_store(
    config: &Config,
    role: Role,
    opening: Opening,
    first_files: Option<actix_web::rt::task::JoinHandle<Result<(), StartError>>>,
    internal_addr: SocketAddr,
) -> Result<(Store, raft::Runtime, String), StartError> {
    let Opening { task, secret } = opening;
    let opened = task
        .await
        .map_err(|_| raft::Error::Storage("opening the replica panicked".to_owned()));
    if let Some(first_files) = first_files {
        first_files
            .await
            .map_err(|_| raft::Error::Storage("writing the first files panicked".to_owned()))??;
    }
    let (store, runtime) = opened??;
    match role {
        Role::Single => {
            // The address recorded for the one member; nothing else ever dials it.
            let advertise = config
                .raft
                .advertise
                .clone()
                .or_else(|| config.raft.peers.get(&config.raft.node_id).cloned())
                .unwrap_or_else(|| internal_addr.to_string());
            store.lead_alone(advertise).await?;
        }
        Role::Fleet => {
            if !config.raft.peers.is_empty() {
                // The same voters on every node: safe to repeat, a no-op once formed.
                if store.initialize(config.raft.peers.clone()).await? {
                    tracing::info!(voters = config.raft.peers.len(), "formed a new group");
                }
            }
        }
    }
    Ok((store, runtime, secret))
}

/// A handle on a running node.
pub struct NodeHandle {
    addr: SocketAddr,
    internal_addr: SocketAddr,
    resource: String,
    dev_token: Option<String>,
    handle: actix_web::dev::ServerHandle,
    internal_handle: actix_web::dev::ServerHandle,
    task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
    store: Store,
    runtime: Arc<raft::Runtime>,
    state: web::Data<http::State>,
    drain: std::time::Duration,
}

impl NodeHandle {
    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the internal listener.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// The MCP endpoint's URL, as this node listens.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The public MCP URL: the OAuth resource tokens must name.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// With `--auth dev`, a token for the development user, with every configured scope.
    pub fn dev_token(&self) -> Option<&str> {
        self.dev_token.as_deref()
    }

    /// A handle that can stop the node while another task waits on it.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            state: self.state.clone(),
            drain: self.drain,
            handle: self.handle.clone(),
            internal_handle: self.internal_handle.clone(),
            shutdown: self.shutdown.clone(),
            store: self.store.clone(),
            _runtime: self.runtime.clone(),
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

    /// Serves until `shutdown` completes, then stops as [`Stopper::stop`] does; or until
    /// the server stops on its own.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let stopper = self.stopper();
        let wait = self.wait();
        tokio::pin!(wait);
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down: draining in-flight requests");
                stopper.stop().await;
                wait.await
            }
            result = &mut wait => result,
        }
    }
}

/// Stops a node from anywhere.
#[derive(Clone)]
pub struct Stopper {
    state: web::Data<http::State>,
    drain: std::time::Duration,
    handle: actix_web::dev::ServerHandle,
    internal_handle: actix_web::dev::ServerHandle,
    shutdown: CancellationToken,
    store: Store,
    _runtime: Arc<raft::Runtime>,
}

impl Stopper {
    /// Leaves the balancer's rotation (`/ready` 503 for the drain period, connections
    /// closed after each answer), then stops accepting connections, closes open-ended
    /// streams, and lets in-flight requests finish (up to 10 s).
    pub async fn stop(&self) {
        if !self.drain.is_zero() {
            self.state
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(drain = ?self.drain, "draining before the listener closes");
            tokio::time::sleep(self.drain).await;
        }
        self.shutdown.cancel();
        self.handle.stop(true).await;
        // Raft last: requests in flight above may still be writing.
        if !self.drain.is_zero() {
            self.store.step_down().await;
        }
        self.store.shutdown().await;
        self.internal_handle.stop(true).await;
    }
}
