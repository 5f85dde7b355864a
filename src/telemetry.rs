//! Logging setup: `tracing` to standard error, human-readable or JSON.
//!
//! In JSON every line is one object: the event's own fields at the top level (`message`,
//! `level`, `target`, `timestamp`, …), the innermost span's fields under `span` and every
//! enclosing span's under `spans`. A public request's span carries `request_id`, `method`
//! and `path`; a tool call's carries `tool` and `subject`.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, replaces the configured filter.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Standard output may be the protocol channel (stdio), so logs never go there.
    let _ = match log.format {
        LogFormat::Json => json_subscriber(filter, std::io::stderr).try_init(),
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .finish()
            .try_init(),
    };
}

/// The JSON subscriber writing to `writer`: what `log.format = "json"` installs, and what
/// tests capture.
pub fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        // Span fields on every line: the request id follows everything a request logs.
        .with_current_span(true)
        .with_span_list(true)
        .finish()
}
