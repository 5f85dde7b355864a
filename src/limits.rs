//! Caps on what a caller can make a node hold, and what a refusal looks like.
//!
//! Every cap is a configuration key with a stated default. A refusal names that key and
//! the cap, is counted in `mcp_fleet_limit_refusals_total{limit="<key>"}`, and answers the
//! caller in one of two ways:
//! - a field over its size cap is JSON-RPC `-32602` (invalid params) naming the field,
//!   its size and the cap ([`Limits::too_large`]);
//! - a count cap reached is HTTP 429 with JSON-RPC [`LIMIT_EXCEEDED`] naming the cap
//!   ([`Limits::exhausted`]). Nothing already held is evicted to make room: under
//!   `--auth none` every caller is one principal, and eviction would let anyone end
//!   everyone's state.
//!
//! What is held against a count cap is exported as `mcp_fleet_limit_in_use{limit="<key>"}`
//! (this node's total); [`Held`] keeps that gauge right by releasing on drop.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::mcp::RpcError;

/// JSON-RPC error code of a count cap reached (implementation-defined range); sent with
/// HTTP 429.
pub const LIMIT_EXCEEDED: i64 = -32010;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// Refusal counters and in-use gauges of one node; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Limits(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    refusals: Family<LimitLabel, Counter>,
    in_use: Family<LimitLabel, Gauge>,
}

impl Limits {
    /// Counters and gauges registered in `registry` (see [`crate::metrics::Metrics`]).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let limits = Self::default();
        registry.register(
            "limit_refusals",
            "Requests refused because a cap was reached, by the cap's configuration key",
            limits.0.refusals.clone(),
        );
        registry.register(
            "limit_in_use",
            "What this node holds against a cap, by the cap's configuration key",
            limits.0.in_use.clone(),
        );
        limits
    }

    /// Exports `key` at zero, so a dashboard sees the cap before the first refusal.
    pub fn declare(&self, key: &'static str) {
        drop(self.0.refusals.get_or_create(&LimitLabel { limit: key }));
    }

    /// Counts one refusal by the cap `key`.
    pub fn refused(&self, key: &'static str) {
        self.0
            .refusals
            .get_or_create(&LimitLabel { limit: key })
            .inc();
    }

    /// Refusals counted so far by the cap `key`.
    pub fn refusals(&self, key: &'static str) -> u64 {
        self.0
            .refusals
            .get_or_create(&LimitLabel { limit: key })
            .get()
    }

    /// The in-use gauge of the cap `key`, for figures kept by their owner.
    pub fn gauge(&self, key: &'static str) -> Gauge {
        self.0
            .in_use
            .get_or_create(&LimitLabel { limit: key })
            .clone()
    }

    /// Takes one unit against the cap `key` when fewer than `cap` are held by this node in
    /// `count` (the caller's own tally, e.g. per principal); the unit is returned when the
    /// [`Held`] is dropped. Refuses (and counts the refusal) when the cap is reached.
    pub fn hold(
        &self,
        key: &'static str,
        count: &Arc<std::sync::atomic::AtomicUsize>,
        cap: usize,
        what: &str,
    ) -> Result<Held, RpcError> {
        use std::sync::atomic::Ordering;
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        });
        if taken.is_err() {
            return Err(self.exhausted(key, what, cap));
        }
        let gauge = self.gauge(key);
        gauge.inc();
        Ok(Held {
            count: count.clone(),
            gauge,
        })
    }

    /// The refusal of a field over its size cap, counted: `-32602` naming the field, its
    /// size and the cap.
    pub fn too_large(&self, key: &'static str, field: &str, size: usize, cap: usize) -> RpcError {
        self.refused(key);
        tracing::info!(
            limit = key,
            field,
            size,
            cap,
            "refused: field over its size cap"
        );
        RpcError::invalid_params(format!(
            "{field} is {size} bytes; the limit is {cap} bytes ({key})"
        ))
        .with_data(json!({ "limit": key, "field": field, "size": size, "max": cap }))
    }

    /// The refusal of a count cap reached, counted: [`LIMIT_EXCEEDED`] naming the cap. Send
    /// it with HTTP 429.
    pub fn exhausted(&self, key: &'static str, what: &str, cap: usize) -> RpcError {
        self.refused(key);
        tracing::info!(limit = key, cap, "refused: {what}");
        RpcError::new(
            LIMIT_EXCEEDED,
            format!("too many {what}: the limit is {cap} ({key})"),
        )
        .with_data(json!({ "limit": key, "max": cap }))
    }
}

/// One unit held against a count cap; dropping it gives the unit back.
#[derive(Debug)]
pub struct Held {
    count: Arc<std::sync::atomic::AtomicUsize>,
    gauge: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_cap_refuses_once_reached_and_frees_on_drop() {
        let limits = Limits::default();
        let count = Arc::new(AtomicUsize::new(0));
        let a = limits.hold("http.max_x", &count, 2, "x").unwrap();
        let _b = limits.hold("http.max_x", &count, 2, "x").unwrap();
        let refused = limits.hold("http.max_x", &count, 2, "x").unwrap_err();
        assert_eq!(refused.code, LIMIT_EXCEEDED);
        assert!(
            refused.message.contains("http.max_x"),
            "{}",
            refused.message
        );
        assert_eq!(limits.refusals("http.max_x"), 1);
        assert_eq!(limits.gauge("http.max_x").get(), 2);
        drop(a);
        assert_eq!(limits.gauge("http.max_x").get(), 1);
        limits.hold("http.max_x", &count, 2, "x").unwrap();
    }

    #[test]
    fn a_field_over_its_cap_is_invalid_params_naming_it() {
        let limits = Limits::default();
        let e = limits.too_large("sessions.max_client_bytes", "params.clientInfo", 20, 16);
        assert_eq!(e.code, crate::mcp::jsonrpc::INVALID_PARAMS);
        assert!(e.message.contains("params.clientInfo"), "{}", e.message);
        assert!(e.message.contains("16"), "{}", e.message);
        assert_eq!(limits.refusals("sessions.max_client_bytes"), 1);
    }
}
