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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::DEFAULT_LOG_FILTER;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn the_default_filter_drops_openraft_stale_message_notices_and_keeps_real_warnings() {
        let buffer = Buffer::default();
        let subscriber = json_subscriber(EnvFilter::new(DEFAULT_LOG_FILTER), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "openraft::core::raft_core",
                "A message will be ignored because vote changed: when (VoteResponse)"
            );
            tracing::error!(target: "openraft::core::raft_core", "core error");
            tracing::warn!(target: "openraft::replication", "replication warning");
            tracing::info!(target: "openraft::engine", "vote narration");
            tracing::warn!(target: "mcp_fleet::raft", "our warning");
        });
        let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!output.contains("vote changed"), "{output}");
        assert!(!output.contains("vote narration"), "{output}");
        for kept in ["core error", "replication warning", "our warning"] {
            assert!(output.contains(kept), "{kept} missing:\n{output}");
        }
    }
}
