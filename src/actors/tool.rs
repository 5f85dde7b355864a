//! Tool actors: each tool runs in its own actor with a concurrency limit and a timeout.
//! Every call is counted and timed by outcome, and logged with the tool and the caller.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Context as ActorContext, Handler, Message, ResponseFuture};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::metrics::{Metrics, ToolMetrics, ToolOutcome};
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
    /// The call's span, so that what the tool logs on its actor's thread names the call.
    span: tracing::Span,
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
        let span = msg.span.clone();
        let call = async move {
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
        };
        Box::pin(call.instrument(span))
    }
}

/// The typed handle of one tool's actor.
#[derive(Clone)]
pub struct ToolHandle {
    addr: Addr<ToolActor>,
    tool: Arc<dyn DynTool>,
    metrics: ToolMetrics,
}

impl ToolHandle {
    /// Runs one call of the tool; `args` is the call's `arguments` object. The call is
    /// counted by outcome, timed, and logged once with the tool's name and the caller.
    pub async fn call(&self, ctx: Context, args: Value) -> Result<Output, Error> {
        // Inside a request its span names the call, and its access line carries the call's
        // tool, caller and outcome; a call outside one (a task, stdio) gets its own span.
        let note = crate::telemetry::AccessNote::current();
        let subject = note.as_ref().map(|_| ctx.principal().subject.clone());
        let span = match note {
            Some(_) => tracing::Span::current(),
            None => tracing::info_span!(
                "tool_call",
                tool = %self.name(),
                subject = %ctx.principal().subject,
            ),
        };
        let started = Instant::now();
        let result = self
            .addr
            .send(Call {
                ctx,
                args,
                span: span.clone(),
            })
            .await
            .unwrap_or(Err(Error::Overloaded));
        let elapsed = started.elapsed();
        let outcome = outcome(&result);
        self.metrics.record(outcome, elapsed);
        let latency_ms = elapsed.as_micros() as f64 / 1000.0;
        match (note, subject) {
            (Some(note), Some(subject)) => {
                let call = crate::telemetry::ToolCall {
                    tool: self.name().to_owned(),
                    subject,
                    outcome: outcome.as_str(),
                };
                if let Err(call) = note.leave(call) {
                    // The request's line is written (a stream outlived its head): this one.
                    tracing::info!(
                        tool = call.tool.as_str(),
                        subject = call.subject.as_str(),
                        outcome = call.outcome,
                        latency_ms,
                        "tool call"
                    );
                } else {
                    tracing::debug!(outcome = outcome.as_str(), latency_ms, "tool call");
                }
            }
            _ => span
                .in_scope(|| tracing::info!(outcome = outcome.as_str(), latency_ms, "tool call")),
        }
        result
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

    /// The tool's listing and how it runs (task support, whether it may run again).
    pub fn info(&self) -> &crate::tools::ToolInfo {
        self.tool.info()
    }
}

/// How `result` counts in `mcp_fleet_tool_calls_total`.
fn outcome(result: &Result<Output, Error>) -> ToolOutcome {
    match result {
        Ok(_) => ToolOutcome::Ok,
        Err(Error::Timeout(_)) => ToolOutcome::Timeout,
        Err(Error::Cancelled) => ToolOutcome::Cancelled,
        Err(Error::Panicked) => ToolOutcome::Panic,
        // Both end this round and hand the call on: to the client's answers, or to a task.
        Err(Error::InputRequired(_) | Error::BecomeTask) => ToolOutcome::InputRequired,
        Err(_) => ToolOutcome::Error,
    }
}

/// The tool actors of one node, spread over a few arbiter threads.
#[derive(Clone)]
pub struct ToolPool {
    by_name: Arc<HashMap<String, ToolHandle>>,
    ordered: Arc<Vec<ToolHandle>>,
}

impl ToolPool {
    /// Starts one actor per registered tool, recording calls into `metrics`. Must be called
    /// inside an actix system.
    pub fn start(
        registry: &Registry,
        config: &tools::Config,
        threads: usize,
        metrics: &Metrics,
    ) -> Self {
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
                    metrics: metrics.tool(&tool.info().name),
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
