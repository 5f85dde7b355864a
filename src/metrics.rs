//! Prometheus metrics of one node, served on the internal listener's `/metrics`.
//!
//! HTTP requests and tool calls are counted as they happen. Authentication tiers and the
//! fleet store are read from their owners when Prometheus scrapes, so their figures cost
//! nothing between scrapes and stay exactly what those owners report.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::auth::Authenticator;
use crate::raft::{Store, Table};

/// The `Content-Type` of [`Metrics::render`]: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Prefix of every metric name.
const PREFIX: &str = "mcp_fleet";

/// Upper bounds, in seconds, of the request and tool call duration buckets.
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How a tool call ended, as `mcp_fleet_tool_calls_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolOutcome {
    /// The tool returned a result (an `isError` result it chose to return included).
    Ok,
    /// The tool failed: bad arguments, a failure it reported, an overloaded actor.
    Error,
    /// The tool ran past its timeout.
    Timeout,
    /// The client cancelled the call or went away.
    Cancelled,
    /// The tool panicked.
    Panic,
    /// The tool needs the client's answers first (a 2026-07-28 input-required round);
    /// neither a success nor a failure yet.
    InputRequired,
}

impl ToolOutcome {
    /// Every outcome, in label order.
    pub const ALL: [ToolOutcome; 6] = [
        ToolOutcome::Ok,
        ToolOutcome::Error,
        ToolOutcome::Timeout,
        ToolOutcome::Cancelled,
        ToolOutcome::Panic,
        ToolOutcome::InputRequired,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::Error => "error",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::Cancelled => "cancelled",
            ToolOutcome::Panic => "panic",
            ToolOutcome::InputRequired => "input_required",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolCallLabels {
    tool: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The metrics of one node; cheap to clone, every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    // Registering needs `&mut`; scrapes are rare, so one lock is enough.
    registry: Mutex<Registry>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<MethodLabel>,
    tool_calls: Family<ToolCallLabels, Counter>,
    tool_duration: Histograms<ToolLabel>,
    limits: crate::limits::Limits,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with the request and tool metrics; add the store and authentication
    /// with [`Metrics::observe_store`] and [`Metrics::observe_auth`].
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests on the public listener, by method and status",
            http_requests.clone(),
        );
        let http_duration: Histograms<MethodLabel> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a public request's arrival to its response head (a stream's body may \
             flow on afterwards)",
            http_duration.clone(),
        );
        let tool_calls = Family::<ToolCallLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls, by tool and outcome",
            tool_calls.clone(),
        );
        let tool_duration: Histograms<ToolLabel> = Family::new_with_constructor(duration_histogram);
        registry.register(
            "tool_call_duration_seconds",
            "Duration of tool calls, waiting for a free slot included",
            tool_duration.clone(),
        );
        let limits = crate::limits::Limits::register(&mut registry);
        Self(Arc::new(Inner {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            tool_calls,
            tool_duration,
            limits,
        }))
    }

    /// Reports `store` at each scrape: term, leader, log indexes, records per table, and
    /// the commit latency it measures.
    pub fn observe_store(&self, store: &Store) {
        let mut registry = self.registry();
        registry.register(
            "raft_commit_seconds",
            "Time of a fleet store write, from proposal to committed and applied",
            store.commit_seconds().clone(),
        );
        store.append_metrics().register(&mut registry);
        store.write_metrics().register(&mut registry);
        store.register_election_metrics(&mut registry);
        registry.register_collector(Box::new(StoreCollector(store.clone())));
    }

    /// Reports the tiers of `authenticator` at each scrape.
    pub fn observe_auth(&self, authenticator: &Authenticator) {
        self.registry()
            .register_collector(Box::new(AuthCollector(authenticator.clone())));
    }

    /// Exports `exchanger`'s counters: `mcp_fleet_token_exchanges_total{result}`.
    pub fn observe_exchanges(&self, exchanger: &crate::auth::Exchanger) {
        self.registry()
            .register_collector(Box::new(ExchangeCollector(exchanger.clone())));
    }

    /// The refusal counters and in-use gauges of this node's caps.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.0.limits
    }

    /// Counts one public HTTP request answered with `status` after `elapsed`.
    pub fn http_request(&self, method: &'static str, status: u16, elapsed: Duration) {
        self.0
            .http_requests
            .get_or_create(&HttpLabels { method, status })
            .inc();
        self.0
            .http_duration
            .get_or_create(&MethodLabel { method })
            .observe(elapsed.as_secs_f64());
    }

    /// The handles of tool `name`, resolved once so that each call only bumps atomics.
    /// Every outcome is exported from the start, at zero.
    pub fn tool(&self, name: &str) -> ToolMetrics {
        let calls = ToolOutcome::ALL.map(|outcome| {
            self.0.tool_calls.get_or_create_owned(&ToolCallLabels {
                tool: name.to_owned(),
                outcome: outcome.as_str(),
            })
        });
        let duration = self.0.tool_duration.get_or_create_owned(&ToolLabel {
            tool: name.to_owned(),
        });
        ToolMetrics { calls, duration }
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry())
        {
            tracing::error!(error = %e, "could not render the metrics");
        }
        out
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering leaves nothing half-done that a scrape could trip on.
        self.0
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The metrics of one tool; see [`Metrics::tool`].
#[derive(Clone, Debug)]
pub struct ToolMetrics {
    calls: [Counter; 6],
    duration: Histogram,
}

impl ToolMetrics {
    /// Records one call that ended with `outcome` after `elapsed`.
    pub fn record(&self, outcome: ToolOutcome, elapsed: Duration) {
        // `ALL` lists the outcomes in declaration order.
        self.calls[outcome as usize].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Writes one metric with no labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Reads the fleet store's state at scrape time.
struct StoreCollector(Store);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreCollector").field(&self.0.id()).finish()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.status();
        single(
            &mut encoder,
            "raft_term",
            "The current Raft term as this node sees it",
            &ConstGauge::new(status.term as i64),
        )?;
        single(
            &mut encoder,
            "raft_leader_changes",
            "Changes of the known leader seen by this node since it started",
            &ConstCounter::new(self.0.leader_changes()),
        )?;
        single(
            &mut encoder,
            "raft_applied_index",
            "Index of the last log entry applied to this replica",
            &ConstGauge::new(status.applied_index.unwrap_or(0) as i64),
        )?;
        single(
            &mut encoder,
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            &ConstGauge::new(status.last_log_index.unwrap_or(0) as i64),
        )?;
        single(
            &mut encoder,
            "raft_is_leader",
            "1 while this node leads the group, else 0",
            &ConstGauge::new(i64::from(status.leader_id == Some(status.node_id))),
        )?;
        single(
            &mut encoder,
            "keys_verified",
            "1 once this node's key ring passed the fleet's key check (it serves), else 0",
            &ConstGauge::new(i64::from(self.0.key_problem().is_none())),
        )?;
        single(
            &mut encoder,
            "keys_active",
            "The id of the key this node seals new records with",
            &ConstGauge::new(i64::from(self.0.key_report().active_key)),
        )?;
        let mut records = encoder.encode_descriptor(
            "store_records",
            "Records on this replica by table, expired ones not yet removed included",
            None,
            MetricType::Gauge,
        )?;
        for table in Table::ALL {
            let labels = [("table", table.name())];
            ConstGauge::new(self.0.count(table) as i64).encode(records.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Reads the authentication tiers' counters at scrape time.
struct AuthCollector(Authenticator);

impl std::fmt::Debug for AuthCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuthCollector").finish_non_exhaustive()
    }
}

impl Collector for AuthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let mut auth = encoder.encode_descriptor(
            "auth",
            "Bearer token checks by the tier that answered them, and refusals",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("memory_hit", stats.memory_hits),
            ("replica_hit", stats.replica_hits),
            ("verified", stats.verified),
            ("introspected", stats.introspected),
            ("negative_hit", stats.negative_hits),
            ("refused", stats.refused),
        ] {
            let labels = [("result", result)];
            ConstCounter::new(count).encode(auth.encode_family(&labels)?)?;
        }
        single(
            &mut encoder,
            "jwks_fetches",
            "Key set fetches started",
            &ConstCounter::new(stats.jwks_fetches),
        )
    }
}

#[derive(Debug)]
struct ExchangeCollector(crate::auth::Exchanger);

impl Collector for ExchangeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let mut family = encoder.encode_descriptor(
            "token_exchanges",
            "Tokens tools asked for with ctx.token_for: exchanged at an issuer, reused from \
             the fleet store, or failed",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("exchanged", stats.sent),
            ("reused", stats.reused),
            ("failed", stats.failed),
        ] {
            ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_recorded_series() {
        let metrics = Metrics::new();
        metrics.http_request("POST", 200, Duration::from_millis(3));
        let echo = metrics.tool("echo");
        echo.record(ToolOutcome::Ok, Duration::from_millis(2));
        echo.record(ToolOutcome::Timeout, Duration::from_secs(1));
        let text = metrics.render();
        for line in [
            "# TYPE mcp_fleet_http_requests_total counter",
            "mcp_fleet_http_requests_total{method=\"POST\",status=\"200\"} 1",
            "# TYPE mcp_fleet_http_request_duration_seconds histogram",
            "mcp_fleet_http_request_duration_seconds_count{method=\"POST\"} 1",
            "# TYPE mcp_fleet_tool_calls_total counter",
            "mcp_fleet_tool_calls_total{tool=\"echo\",outcome=\"ok\"} 1",
            "mcp_fleet_tool_calls_total{tool=\"echo\",outcome=\"timeout\"} 1",
            "mcp_fleet_tool_calls_total{tool=\"echo\",outcome=\"panic\"} 0",
            "mcp_fleet_tool_call_duration_seconds_count{tool=\"echo\"} 2",
            "mcp_fleet_tool_call_duration_seconds_bucket{tool=\"echo\",le=\"0.0025\"} 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[tokio::test]
    async fn the_store_is_read_at_scrape_time() {
        let dir = tempfile::tempdir().unwrap();
        let ring = crate::crypto::Ring::single(crate::crypto::Key::generate());
        let (store, _runtime) = Store::open_single(dir.path(), ring).await.unwrap();
        let metrics = Metrics::new();
        metrics.observe_store(&store);
        store
            .put(Table::McpSessions, b"one", &1u8, None)
            .await
            .unwrap();
        // The leader watcher runs on the Raft runtime: it may see the election a moment later.
        assert!(
            crate::raft::tests_support::eventually(|| store.leader_changes() == 1).await,
            "one leader change"
        );
        let text = metrics.render();
        for line in [
            "mcp_fleet_raft_is_leader 1",
            "mcp_fleet_raft_leader_changes_total 1",
            "mcp_fleet_store_records{table=\"mcp_sessions\"} 1",
            "mcp_fleet_raft_commit_seconds_count 1",
            "# TYPE mcp_fleet_raft_term gauge",
            "# TYPE mcp_fleet_raft_applied_index gauge",
            "# TYPE mcp_fleet_raft_last_log_index gauge",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        store.shutdown().await;
    }
}
