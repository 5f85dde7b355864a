//! The same engine over standard input and output: one JSON-RPC message per line.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::crypto::{Key, Ring};
use crate::mcp::jsonrpc::{self, error_response, notification, reply, response};
use crate::mcp::{Call, Era, Inflight, Message, ModernMeta, Outbound, RpcError};
use crate::raft::Store;
use crate::tools::{self, Peer};

/// Why stdio serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the streams failed.
    #[error("stdio: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] crate::raft::Error),
    /// `[stdio]` names something that cannot be used.
    #[error("{key}: {reason}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Serves MCP on `input`/`output` until `input` ends. Must be called inside an actix system.
pub(crate) async fn serve(
    config: &crate::Config,
    catalog: &crate::node::Catalog,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
) -> Result<(), Error> {
    // A stdio server belongs to one client process: its state lives and dies with it.
    let dir = tempfile::Builder::new()
        .prefix("mcp-fleet-stdio")
        .tempdir()?;
    let ring = config
        .encryption_key
        .clone()
        .unwrap_or_else(|| Ring::single(Key::generate()));
    let (store, _runtime) = Store::open_single(dir.path(), ring.clone()).await?;
    // Nothing scrapes a stdio server: its calls are counted into a registry of its own.
    let metrics = crate::metrics::Metrics::new();
    let storage = local_storage(config, &store, &metrics).await?;
    let services = crate::mcp::Services {
        access: None,
        upstream: tools::Upstream::new(
            config.tools.http,
            metrics.limits().clone(),
            tools::Tokens::Local(config.stdio.tokens.clone()),
        ),
        storage: storage.tools,
        // One process, one client: nothing to relay.
        updates: tools::Updates::default(),
    };
    let engine = crate::node::engine(
        config,
        catalog,
        store.clone(),
        ring.sealer,
        &metrics,
        services,
    );
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(message) = out_rx.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            output.write_all(line.as_bytes()).await?;
            output.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let outbound: Arc<Outbound> = Arc::default();
    let inflight: Arc<Inflight> = Arc::default();
    let principal = Arc::new(Principal::anonymous());
    let mut session: Option<String> = None;
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = out_tx.send(error_response(
                    None,
                    &RpcError::parse(format!("Parse error: {e}")),
                ));
                continue;
            }
        };
        let message = match Message::from_value(value) {
            Ok(m) => m,
            Err((id, e)) => {
                let _ = out_tx.send(error_response(id.as_ref(), &e));
                continue;
            }
        };
        match message {
            Message::Response { id, outcome } => {
                outbound.answer(&id, outcome);
            }
            Message::Notification { method, params } => inflight.notified(&method, &params),
            Message::Request { id, method, params }
                if method == "initialize" && !ModernMeta::declared(&params) =>
            {
                let reply = match engine.initialize(&params, (*principal).clone()) {
                    Ok((new, result)) => {
                        let new_id = new.id.clone();
                        match engine.sessions().put(new).await {
                            Ok(()) => {
                                session = Some(new_id);
                                response(&id, result.value().clone())
                            }
                            Err(_) => error_response(
                                Some(&id),
                                &RpcError::internal("the session could not be created"),
                            ),
                        }
                    }
                    Err(e) => error_response(Some(&id), &e),
                };
                let _ = out_tx.send(reply);
            }
            Message::Request { id, method, params } => {
                let era = match ModernMeta::parse(&params) {
                    Err(e) => {
                        let _ = out_tx.send(error_response(Some(&id), &e));
                        continue;
                    }
                    Ok(Some(meta)) => Era::Modern(meta),
                    Ok(None) => match session.as_deref().map(|s| engine.sessions().get(s)) {
                        Some(Ok(Some(s))) => Era::Legacy(s),
                        _ => {
                            let _ = out_tx.send(error_response(
                                Some(&id),
                                &RpcError::invalid_request(
                                    "send initialize first, or carry io.modelcontextprotocol/protocolVersion in _meta",
                                ),
                            ));
                            continue;
                        }
                    },
                };
                let cancel = CancellationToken::new();
                inflight.track(&id, cancel.clone());
                let call = Call {
                    principal: principal.clone(),
                    peer: Arc::new(StdioPeer {
                        out: out_tx.clone(),
                        outbound: outbound.clone(),
                        legacy: matches!(era, Era::Legacy(_)),
                        cancel: cancel.clone(),
                    }),
                    era,
                    cancel,
                    // One local user and no bearer token: ctx.token_for reads
                    // [stdio.tokens] instead.
                    caller: Default::default(),
                };
                let engine = engine.clone();
                let out = out_tx.clone();
                let inflight = inflight.clone();
                actix_web::rt::spawn(async move {
                    let answer = reply(&id, engine.handle(&call, &method, params).await);
                    inflight.untrack(&id);
                    let _ = out.send(answer);
                });
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
    if let Some((state_store, _runtime)) = storage.own_store {
        state_store.shutdown().await;
    }
    store.shutdown().await;
    Ok(())
}

/// What `stdio` gives its tools, and the state store it opened, if any.
struct LocalStorage {
    tools: tools::Storage,
    own_store: Option<(Store, crate::raft::Runtime)>,
}

/// The single local user's secrets (`stdio.secrets_file`, then variables named with
/// `stdio.secrets_env_prefix`) and tool state (in `stdio.data_dir`, or in `store`, which
/// lives as long as the process), so tools call `ctx.secret` and `ctx.state` as on a fleet.
async fn local_storage(
    config: &crate::Config,
    store: &Store,
    metrics: &crate::metrics::Metrics,
) -> Result<LocalStorage, Error> {
    let mut secrets = std::collections::BTreeMap::new();
    if let Some(path) = &config.stdio.secrets_file {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            key: "stdio.secrets_file",
            reason: format!("{}: {e}", path.display()),
        })?;
        // Never quote the file in the error: it holds secrets.
        let table: std::collections::BTreeMap<String, String> = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(&text),
        )
        .extract()
        .map_err(|_| Error::Config {
            key: "stdio.secrets_file",
            reason: format!(
                "{}: expected TOML lines of `name = \"value\"`",
                path.display()
            ),
        })?;
        secrets.extend(table);
    }
    if let Some(prefix) = config
        .stdio
        .secrets_env_prefix
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        // The configuration names these variables; the process environment is the source
        // a local MCP client (Claude Desktop's `env`, say) gives a stdio server.
        for (key, value) in std::env::vars() {
            if let Some(name) = key.strip_prefix(prefix).filter(|n| !n.is_empty()) {
                secrets.insert(name.to_owned(), value);
            }
        }
    }
    let limits = metrics.limits().clone();
    let own_store = match &config.stdio.data_dir {
        None => None,
        Some(dir) => {
            let ring = config.encryption_key.clone().ok_or(Error::Config {
                key: "stdio.data_dir",
                reason: "state kept between runs is sealed: set encryption_key too".into(),
            })?;
            std::fs::create_dir_all(dir).map_err(|e| Error::Config {
                key: "stdio.data_dir",
                reason: format!("{}: {e}", dir.display()),
            })?;
            Some(Store::open_single(dir, ring).await?)
        }
    };
    let state_store = own_store.as_ref().map_or(store, |(s, _)| s).clone();
    Ok(LocalStorage {
        tools: tools::Storage {
            secrets: Some(tools::Secrets::local(
                secrets,
                config.secrets.clone(),
                limits.clone(),
            )),
            state: Some(tools::StateStore::new(
                state_store,
                config.tool_state.clone(),
                limits,
            )),
        },
        own_store,
    })
}

/// Reaches the client over stdout; answers to server requests arrive on stdin.
struct StdioPeer {
    out: mpsc::UnboundedSender<Value>,
    outbound: Arc<Outbound>,
    legacy: bool,
    cancel: CancellationToken,
}

impl Peer for StdioPeer {
    fn notify(&self, method: &str, params: Value) {
        let _ = self.out.send(notification(method, params));
    }

    fn request(
        &self,
        method: &str,
        params: Value,
    ) -> BoxFuture<'static, Result<Value, tools::Error>> {
        if !self.legacy {
            // 2026-07-28 questions become input-required results (see the engine).
            return Box::pin(async {
                Err(tools::Error::Client("no live channel to the client".into()))
            });
        }
        let (id, answer) = match self.outbound.register() {
            Ok(registered) => registered,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        let _ = self.out.send(jsonrpc::request(&json!(id), method, params));
        let outbound = self.outbound.clone();
        let cancel = self.cancel.clone();
        Box::pin(async move { outbound.wait(&id, answer, &cancel).await })
    }
}

/// Where `stdio` keeps its single local user's secrets, tool state and tokens for
/// upstream APIs (`[stdio]`), so a tool reads them as it does on a fleet.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A TOML file of `name = "value"` lines: the secrets `ctx.secret` reads. Default none.
    pub secrets_file: Option<std::path::PathBuf>,
    /// Environment variables named with this prefix are secrets too, by the rest of their
    /// name (`ACME_SECRET_crm_key` is `crm_key` with prefix `ACME_SECRET_`); they win over
    /// the file. Default none.
    pub secrets_env_prefix: Option<String>,
    /// Where tool state persists between runs (needs `encryption_key`). Default none: state
    /// lives in memory, in a store of its own, for as long as the process.
    pub data_dir: Option<std::path::PathBuf>,
    /// The token `ctx.token_for(audience)` returns, by audience: the single local user's
    /// own tokens for the team's upstream APIs, named here and kept elsewhere (an
    /// environment variable or a file), so no token sits in a configuration file that may
    /// be committed. Default none: `ctx.token_for` is a tool error naming this key.
    pub tokens: std::collections::BTreeMap<String, TokenSource>,
}

/// Where `stdio` reads the token for one audience (`[stdio.tokens]`): exactly one of
/// `env` and `file`. It is read at each call, so a token refreshed in its file or
/// variable's source is used at once; whitespace around it is ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// An environment variable holding the token.
    pub env: Option<String>,
    /// A file holding the token.
    pub file: Option<std::path::PathBuf>,
}

impl TokenSource {
    /// The token, or why there is none. Errors name the variable or the file, never what
    /// either holds.
    pub(crate) fn read(&self, audience: &str) -> Result<String, String> {
        let (token, source) = match (&self.env, &self.file) {
            (Some(var), _) => (
                std::env::var(var).unwrap_or_default(),
                format!("environment variable {var}"),
            ),
            (None, Some(path)) => {
                let source = format!("file {}", path.display());
                match std::fs::read_to_string(path) {
                    Ok(text) => (text, source),
                    // An I/O error's text says what failed, not what the file holds.
                    Err(e) => {
                        return Err(format!(
                            "the token for audience `{audience}` (stdio.tokens): {source}: {e}"
                        ))
                    }
                }
            }
            (None, None) => (
                String::new(),
                "an entry with neither env nor file".to_owned(),
            ),
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(format!(
                "the token for audience `{audience}` (stdio.tokens): {source} is unset or empty"
            ));
        }
        Ok(token.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::TokenSource;

    #[test]
    fn a_token_file_is_read_trimmed_and_its_errors_name_the_file_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = TokenSource {
            env: None,
            file: Some(path.clone()),
        };
        let missing = source.read("https://api.test").unwrap_err();
        assert!(
            missing.contains("https://api.test") && missing.contains(&path.display().to_string()),
            "{missing}"
        );
        std::fs::write(&path, "  s3cret-token\n").unwrap();
        assert_eq!(source.read("https://api.test").unwrap(), "s3cret-token");
        std::fs::write(&path, "\n").unwrap();
        let empty = source.read("https://api.test").unwrap_err();
        assert!(empty.contains("is unset or empty"), "{empty}");
    }
}
