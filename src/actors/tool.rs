//! Tool actors: each tool runs in its own actor with a concurrency limit and a timeout.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, Context as ActorContext, Handler, Message, ResponseFuture};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::tools::{self, Context, DynTool, Error, Output, Registry};

struct ToolActor {
    tool: Arc<dyn DynTool>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl Actor for ToolActor {
    type Context = ActorContext<Self>;
}

struct Call {
    ctx: Context,
    args: Value,
}

impl Message for Call {
    type Result = Result<Output, Error>;
}

impl Handler<Call> for ToolActor {
    type Result = ResponseFuture<Result<Output, Error>>;

    fn handle(&mut self, msg: Call, _: &mut Self::Context) -> Self::Result {
        let tool = self.tool.clone();
        let permits = self.permits.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let cancel = msg.ctx.cancel_token().clone();
            let run = async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Overloaded)?;
                let name = tool.info().name.clone();
                match tokio::time::timeout(
                    timeout,
                    AssertUnwindSafe(tool.call(msg.ctx, msg.args)).catch_unwind(),
                )
                .await
                {
                    Err(_) => {
                        tracing::warn!(tool = %name, ?timeout, "tool call timed out");
                        Err(Error::Timeout(timeout))
                    }
                    Ok(Err(_)) => {
                        tracing::error!(tool = %name, "tool call panicked");
                        Err(Error::Panicked)
                    }
                    Ok(Ok(result)) => result,
                }
            };
            // Dropping the tool's future at its next await point is the cooperative stop.
            tokio::select! {
                result = run => result,
                () = cancel.cancelled() => Err(Error::Cancelled),
            }
        })
    }
}

/// The typed handle of one tool's actor.
#[derive(Clone)]
pub struct ToolHandle {
    addr: Addr<ToolActor>,
    tool: Arc<dyn DynTool>,
}

impl ToolHandle {
    /// Runs one call of the tool; `args` is the call's `arguments` object.
    pub async fn call(&self, ctx: Context, args: Value) -> Result<Output, Error> {
        self.addr
            .send(Call { ctx, args })
            .await
            .unwrap_or(Err(Error::Overloaded))
    }

    /// The tool's `tools/list` entry.
    pub fn listing(&self) -> &Value {
        self.tool.listing()
    }

    /// Parameters the tool mirrors into `Mcp-Param-*` headers.
    pub fn header_params(&self) -> &[crate::tools::HeaderParam] {
        self.tool.header_params()
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.tool.info().name
    }
}

/// The tool actors of one node, spread over a few arbiter threads.
#[derive(Clone)]
pub struct ToolPool {
    by_name: Arc<HashMap<String, ToolHandle>>,
    ordered: Arc<Vec<ToolHandle>>,
}

impl ToolPool {
    /// Starts one actor per registered tool. Must be called inside an actix system.
    pub fn start(registry: &Registry, config: &tools::Config, threads: usize) -> Self {
        let arbiters: Vec<Arbiter> = (0..threads.max(1)).map(|_| Arbiter::new()).collect();
        let ordered: Vec<ToolHandle> = registry
            .tools
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                let limits = config.limits(&tool.info().name);
                let actor = ToolActor {
                    tool: tool.clone(),
                    permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
                    timeout: limits.timeout,
                };
                let addr =
                    ToolActor::start_in_arbiter(&arbiters[i % arbiters.len()].handle(), |_| actor);
                ToolHandle {
                    addr,
                    tool: tool.clone(),
                }
            })
            .collect();
        // The arbiters live as long as the system; their handles keep the threads running.
        for arbiter in arbiters {
            std::mem::forget(arbiter);
        }
        let by_name = ordered
            .iter()
            .map(|h| (h.name().to_owned(), h.clone()))
            .collect();
        Self {
            by_name: Arc::new(by_name),
            ordered: Arc::new(ordered),
        }
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&ToolHandle> {
        self.by_name.get(name)
    }

    /// Every tool in listing order.
    pub fn all(&self) -> &[ToolHandle] {
        &self.ordered
    }
}
