//! Tool calls: each tool has a concurrency limit and a timeout, and its calls run on the
//! task of the request that makes them. Every call is counted and timed by outcome, and
//! logged with the tool and the caller.
//!
//! Calls used to go to one actor per tool on an arbiter thread of its own, so each call
//! crossed threads twice (an `eventfd` wake-up and two context switches, about a fifth of
//! a call's CPU). A tool is a future like the request around it; running it where the
//! request runs keeps every guarantee the actor gave: the tool's semaphore still limits
//! its calls in flight across the node's workers, the timeout, the panic catch and the
//! cancellation wrap the same future, and one slow tool still never holds up another
//! (it waits at an await point; nothing waits for it). What a tool must not do is block
//! its thread, as no async code may; [`Tool`](crate::tools::Tool) says so.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::metrics::{Metrics, ToolMetrics, ToolOutcome};
use crate::tools::{self, Context, DynTool, Error, Output, Registry};

/// The typed handle of one tool: its limits and its metrics.
#[derive(Clone)]
pub struct ToolHandle {
    tool: Arc<dyn DynTool>,
    /// Calls in flight, shared by every worker of the node.
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: ToolMetrics,
}

impl ToolHandle {
    /// Runs one call of the tool; `args` is the call's `arguments` object. The call is
    /// counted by outcome, timed, and logged once with the tool's name and the caller.
    pub async fn call(&self, ctx: Context, args: Value) -> Result<Output, Error> {
        // Inside a request its span names the call, and its access line carries the call's
        // tool, caller and outcome; a call outside one (a task, stdio) gets its own span.
        let note = crate::telemetry::AccessNote::current()
            .map(|note| (note, ctx.principal().subject.clone()));
        let span = match note {
            Some(_) => tracing::Span::current(),
            None => tracing::info_span!(
                "tool_call",
                tool = %self.name(),
                subject = %ctx.principal().subject,
            ),
        };
        let started = Instant::now();
        let result = self.run(ctx, args).instrument(span.clone()).await;
        let elapsed = started.elapsed();
        let outcome = outcome(&result);
        self.metrics.record(outcome, elapsed);
        let latency_ms = elapsed.as_micros() as f64 / 1000.0;
        match note {
            Some((note, subject)) => {
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
            None => span
                .in_scope(|| tracing::info!(outcome = outcome.as_str(), latency_ms, "tool call")),
        }
        result
    }

    /// The call itself: under a permit, within the timeout, with a panic caught, until
    /// the call is cancelled.
    async fn run(&self, ctx: Context, args: Value) -> Result<Output, Error> {
        let cancel = ctx.cancel_token().clone();
        let timeout = self.timeout;
        let run = async move {
            let _permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Overloaded)?;
            let name = &self.tool.info().name;
            match tokio::time::timeout(
                timeout,
                AssertUnwindSafe(self.tool.clone().call(ctx, args)).catch_unwind(),
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

/// The tools of one node, by name and in listing order.
#[derive(Clone)]
pub struct ToolPool {
    by_name: Arc<HashMap<String, ToolHandle>>,
    ordered: Arc<Vec<ToolHandle>>,
}

impl ToolPool {
    /// A handle per registered tool with its limits from `config`, recording calls into
    /// `metrics`.
    pub fn start(registry: &Registry, config: &tools::Config, metrics: &Metrics) -> Self {
        let ordered: Vec<ToolHandle> = registry
            .tools
            .iter()
            .map(|tool| {
                let limits = config.limits(&tool.info().name);
                ToolHandle {
                    tool: tool.clone(),
                    permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
                    timeout: limits.timeout,
                    metrics: metrics.tool(&tool.info().name),
                }
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::tools::Silent;
    use crate::tools::{FnTool, NoArgs, ToolInfo};

    fn context() -> Context {
        Context::for_test(Arc::new(Silent), json!({}), None, None)
    }

    /// A tool that counts its calls as they start, then waits for a permit of `gate`.
    fn gated(name: &str, started: &Arc<AtomicUsize>, gate: &Arc<Semaphore>) -> impl tools::Tool {
        let (started, gate) = (started.clone(), gate.clone());
        FnTool::new(
            ToolInfo::new(name, "Waits at the gate."),
            move |_, _: NoArgs| {
                let (started, gate) = (started.clone(), gate.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.expect("gate open").forget();
                    Ok(Output::text("through"))
                }
            },
        )
    }

    fn pool(registry: &Registry, limits: &[(&str, usize, Duration)]) -> ToolPool {
        let mut config = tools::Config::default();
        for (name, concurrency, timeout) in limits {
            let limits = tools::Limits {
                concurrency: *concurrency,
                timeout: *timeout,
            };
            config.per_tool.insert((*name).to_owned(), limits);
        }
        ToolPool::start(registry, &config, &Metrics::new())
    }

    /// Lets every task of this (single-threaded) runtime run until it waits.
    async fn settle() {
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_call_runs_on_the_thread_that_makes_it() {
        let mut registry = Registry::new();
        registry.tool(FnTool::new(
            ToolInfo::new("where", "Names its thread."),
            |_, _: NoArgs| async { Ok(Output::text(format!("{:?}", std::thread::current().id()))) },
        ));
        let pool = pool(&registry, &[]);
        let output = pool.get("where").unwrap().call(context(), json!({})).await;
        let here = format!("{:?}", std::thread::current().id());
        assert_eq!(output.unwrap().to_value()["content"][0]["text"], here);
    }

    #[tokio::test]
    async fn a_tool_at_its_concurrency_limit_starts_the_next_call_when_one_ends() {
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let (other_started, other_gate) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let mut registry = Registry::new();
        registry.tool(gated("one_at_a_time", &started, &gate));
        registry.tool(gated("other", &other_started, &other_gate));
        let pool = pool(&registry, &[("one_at_a_time", 1, Duration::from_secs(60))]);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let calls: Vec<_> = (0..2)
                    .map(|_| {
                        let tool = pool.get("one_at_a_time").unwrap().clone();
                        tokio::task::spawn_local(
                            async move { tool.call(context(), json!({})).await },
                        )
                    })
                    .collect();
                settle().await;
                assert_eq!(started.load(Ordering::SeqCst), 1, "the second call waits");
                // Another tool's calls do not wait for this one's permit.
                let other = pool.get("other").unwrap().clone();
                let other_call =
                    tokio::task::spawn_local(async move { other.call(context(), json!({})).await });
                settle().await;
                assert_eq!(other_started.load(Ordering::SeqCst), 1);
                other_gate.add_permits(1);
                other_call.await.unwrap().expect("the other tool answers");
                gate.add_permits(1);
                settle().await;
                assert_eq!(
                    started.load(Ordering::SeqCst),
                    2,
                    "the first ended, the second runs"
                );
                gate.add_permits(1);
                for call in calls {
                    call.await.unwrap().expect("both calls answer");
                }
            })
            .await;
    }

    #[tokio::test]
    async fn a_call_past_its_timeout_ends_as_timed_out_and_gives_its_permit_back() {
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let mut registry = Registry::new();
        registry.tool(gated("stuck", &started, &gate));
        let timeout = Duration::from_millis(50);
        let pool = pool(&registry, &[("stuck", 1, timeout)]);
        let tool = pool.get("stuck").unwrap();
        for _ in 0..2 {
            let result = tool.call(context(), json!({})).await;
            assert!(
                matches!(result, Err(Error::Timeout(t)) if t == timeout),
                "{result:?}"
            );
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_call_is_contained_and_the_tool_answers_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut registry = Registry::new();
        registry.tool(FnTool::new(
            ToolInfo::new("flaky", "Panics on its first call."),
            move |_, _: NoArgs| {
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        panic!("the first call panics");
                    }
                    Ok(Output::text("fine"))
                }
            },
        ));
        let pool = pool(&registry, &[("flaky", 1, Duration::from_secs(60))]);
        let tool = pool.get("flaky").unwrap();
        let result = tool.call(context(), json!({})).await;
        assert!(matches!(result, Err(Error::Panicked)), "{result:?}");
        tool.call(context(), json!({}))
            .await
            .expect("the permit came back and the tool answers");
    }

    #[tokio::test]
    async fn cancelling_a_call_stops_the_tool_and_gives_its_permit_back() {
        let (started, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let mut registry = Registry::new();
        registry.tool(gated("waits", &started, &gate));
        let pool = pool(&registry, &[("waits", 1, Duration::from_secs(60))]);
        let tool = pool.get("waits").unwrap();
        let ctx = context();
        let cancel = ctx.cancel_token().clone();
        let call = tool.call(ctx, json!({}));
        let (result, ()) = tokio::join!(call, async {
            settle().await;
            cancel.cancel();
        });
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert_eq!(started.load(Ordering::SeqCst), 1);
        gate.add_permits(1);
        tool.call(context(), json!({}))
            .await
            .expect("the permit came back and the tool answers");
    }
}
