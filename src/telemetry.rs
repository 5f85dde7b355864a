//! Logging setup: `tracing` to standard error, human-readable or JSON, written in batches.
//!
//! In JSON every line is one object: the event's own fields at the top level (`message`,
//! `level`, `target`, `timestamp`, …), the innermost span's fields under `span` and every
//! enclosing span's under `spans`. A public request's span carries `request_id`, `method`
//! and `path`, and its access line the tool call it carried (see [`AccessNote`]); a tool
//! call outside a request has a span of its own with `tool` and `subject`.
//!
//! The lines are formatted without colour work when colours are off ([`format`]) and
//! written by [`writer`]: `WARN` and `ERROR` at once, the rest within
//! `log.flush_interval`, everything by the time [`Logs`] is dropped.

mod access;
mod format;
mod writer;

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub(crate) use access::{AccessNote, ToolCall};

use crate::config::{LogConfig, LogFormat};

/// Keeps the log writer going; dropping it writes every line still held. Hold it until
/// the process has nothing more to log.
#[must_use = "dropping it stops the batching at once"]
pub struct Logs {
    _flush: writer::Flush,
}

/// Which lines are written: directives in `EnvFilter`'s syntax (`RUST_LOG`, `log.filter`).
// Built once at start and moved into the subscriber: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum LogFilter {
    /// Directives of levels and `target=level` only, matched as `EnvFilter` matches them,
    /// without the lock `EnvFilter` takes on every span enter and exit to look for span
    /// directives (several times per request).
    Targets(Targets),
    /// Any other directives (span or field directives, bare targets, numeric levels).
    Env(EnvFilter),
}

impl LogFilter {
    /// The filter for `spec`, refused where `EnvFilter` refuses it.
    pub fn parse(spec: &str) -> Result<Self, ParseError> {
        let env = EnvFilter::try_new(spec)?;
        if only_levels_and_targets(spec) {
            if let Ok(targets) = spec.parse::<Targets>() {
                return Ok(Self::Targets(targets));
            }
        }
        Ok(Self::Env(env))
    }
}

impl From<EnvFilter> for LogFilter {
    fn from(filter: EnvFilter) -> Self {
        Self::Env(filter)
    }
}

/// Whether every directive of `spec` is a level name or `target=level` with a plain
/// target: the directives `Targets` takes exactly as `EnvFilter` does.
fn only_levels_and_targets(spec: &str) -> bool {
    let level = |l: &str| {
        ["trace", "debug", "info", "warn", "error", "off"]
            .iter()
            .any(|name| name.eq_ignore_ascii_case(l))
    };
    let target = |t: &str| {
        t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
    };
    !spec.is_empty()
        && spec
            .split(',')
            .all(|directive| match directive.split_once('=') {
                None => level(directive),
                Some((t, l)) => target(t) && level(l),
            })
}

/// A boxed subscriber from a `fmt` builder and a [`LogFilter`].
macro_rules! filtered {
    ($builder:expr, $filter:expr) => {
        match $filter {
            LogFilter::Targets(targets) => Box::new(
                $builder
                    // The subscriber's level hint: the most verbose level `targets` lets
                    // through. `log` records (sled's, actix-cors's) are dropped below it
                    // by `log::max_level()` before they are built; a hint of TRACE sent
                    // every one through the filter (about 17k instructions per
                    // `initialize`).
                    .with_max_level(most_verbose(&targets))
                    .finish()
                    .with(targets),
            ) as Box<dyn tracing::Subscriber + Send + Sync>,
            LogFilter::Env(env) => Box::new($builder.with_env_filter(env).finish()),
        }
    };
}

/// The most verbose level `targets` enables for any target.
fn most_verbose(targets: &Targets) -> LevelFilter {
    targets
        .iter()
        .map(|(_, level)| level)
        .chain(targets.default_level())
        .max()
        .unwrap_or(LevelFilter::OFF)
}

/// Installs the global subscriber. `RUST_LOG`, when set, replaces the configured filter.
pub fn init(log: &LogConfig) -> Logs {
    let filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|spec| LogFilter::parse(&spec).ok())
        .or_else(|| LogFilter::parse(&log.filter).ok())
        .unwrap_or_else(|| LogFilter::Targets(Targets::new().with_default(LevelFilter::INFO)));
    // Standard output may be the protocol channel (stdio), so logs never go there.
    let (writer, flush) = writer::Batched::start(
        std::io::stderr(),
        log.flush_interval,
        log.max_buffered_bytes,
    );
    let _ = match log.format {
        LogFormat::Json => json_subscriber(filter, writer).try_init(),
        // Colours for a person at a terminal: the stock formatter, only the clock replaced.
        LogFormat::Pretty if std::io::stderr().is_terminal() => filtered!(
            tracing_subscriber::fmt()
                .with_timer(format::Timestamp)
                .with_ansi(true)
                .with_writer(writer),
            filter
        )
        .try_init(),
        LogFormat::Pretty => plain_subscriber(filter, writer).try_init(),
    };
    Logs { _flush: flush }
}

/// The JSON subscriber writing to `writer`: what `log.format = "json"` installs, and what
/// tests capture.
pub fn json_subscriber<W>(
    filter: impl Into<LogFilter>,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Span fields on every line: the request id follows everything a request logs.
    filtered!(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .fmt_fields(format::JsonSpanFields)
            .event_format(format::Json::new()),
        filter.into()
    )
}

/// The `pretty` subscriber without colours, writing to `writer`.
fn plain_subscriber<W>(
    filter: impl Into<LogFilter>,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    filtered!(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .fmt_fields(format::PlainFields)
            .event_format(format::Plain::new()),
        filter.into()
    )
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
        let subscriber = json_subscriber(
            LogFilter::parse(DEFAULT_LOG_FILTER).unwrap(),
            buffer.clone(),
        );
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

    #[test]
    fn the_level_hint_is_the_most_verbose_level_the_filter_lets_through() {
        // `try_init` hands the hint to `log::set_max_level`: below it, `log` records are
        // dropped before they are built, not sent through the filter one by one.
        for (spec, hint) in [
            ("info", LevelFilter::INFO),
            (DEFAULT_LOG_FILTER, LevelFilter::INFO),
            ("warn,mcp_fleet=debug", LevelFilter::DEBUG),
            ("mcp_fleet=trace", LevelFilter::TRACE),
            ("error", LevelFilter::ERROR),
            ("off", LevelFilter::OFF),
            // Through EnvFilter (a span directive): its own hint.
            ("[request]=debug,info", LevelFilter::DEBUG),
        ] {
            for subscriber in [
                json_subscriber(LogFilter::parse(spec).unwrap(), Buffer::default()),
                plain_subscriber(LogFilter::parse(spec).unwrap(), Buffer::default()),
            ] {
                assert_eq!(subscriber.max_level_hint(), Some(hint), "{spec}");
            }
        }
    }

    #[test]
    fn filters_of_levels_and_targets_skip_env_filter_and_others_keep_it() {
        for spec in [
            DEFAULT_LOG_FILTER,
            "info",
            "WARN,mcp_fleet::http=debug",
            "off",
        ] {
            assert!(
                matches!(LogFilter::parse(spec), Ok(LogFilter::Targets(_))),
                "{spec}"
            );
        }
        for spec in [
            "",
            "mcp_fleet",
            "3",
            "mcp_fleet[request]=debug",
            "[{request_id=x}]=trace",
            "info,openraft=warn,mcp_fleet",
            "info,",
        ] {
            assert!(
                matches!(LogFilter::parse(spec), Ok(LogFilter::Env(_))),
                "{spec}"
            );
        }
        for bad in ["mcp_fleet=loud", "=info"] {
            assert_eq!(
                LogFilter::parse(bad).is_err(),
                EnvFilter::try_new(bad).is_err(),
                "{bad}"
            );
        }
    }

    /// Events at every level and a span with an event inside, at several targets.
    fn emit_everywhere() {
        macro_rules! at {
            ($($target:literal),*) => {$(
                tracing::trace!(target: $target, "trace at {}", $target);
                tracing::debug!(target: $target, "debug at {}", $target);
                tracing::info!(target: $target, "info at {}", $target);
                tracing::warn!(target: $target, "warn at {}", $target);
                tracing::error!(target: $target, "error at {}", $target);
                tracing::info_span!(target: $target, "s", at = $target)
                    .in_scope(|| tracing::warn!(target: "mcp_fleet::inner", "inside"));
            )*};
        }
        at!(
            "mcp_fleet",
            "mcp_fleet::http",
            "mcp_fleet_other",
            "openraft",
            "openraft::core::raft_core",
            "openraft::engine",
            "actix_server::worker",
            "other"
        );
    }

    #[test]
    fn a_targets_filter_keeps_the_lines_env_filter_keeps() {
        let strip = |line: &str| line[27..].to_owned();
        for spec in [
            DEFAULT_LOG_FILTER,
            "info",
            "warn",
            "trace",
            "off",
            "debug,openraft=off",
            "mcp_fleet=trace,error",
            "openraft::core=debug,openraft=error,info",
            "mcp_fleet::http=debug",
        ] {
            let lines = |filter: LogFilter| {
                let buffer = Buffer::default();
                tracing::subscriber::with_default(
                    plain_subscriber(filter, buffer.clone()),
                    emit_everywhere,
                );
                buffer.text().lines().map(strip).collect::<Vec<_>>()
            };
            let ours = lines(LogFilter::parse(spec).unwrap());
            let env = lines(LogFilter::from(EnvFilter::new(spec)));
            assert_eq!(ours, env, "{spec}");
            assert_eq!(ours.is_empty(), spec == "off", "{spec}: {ours:#?}");
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// An error with a cause.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("could not write")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Logs what the node logs, in each way a line can look.
    fn emit() {
        let request =
            tracing::info_span!("request", request_id = %"4f2a", method = "POST", path = %"/mcp");
        let _request = request.enter();
        let call = tracing::info_span!("tool_call", tool = %"echo", subject = %"dev-user");
        let _call = call.enter();
        tracing::info!(
            status = 200u16,
            latency_ms = 1.5,
            whole = 2.0,
            ok = true,
            delta = -3i64,
            text = "q\"uote\n",
            list = ?vec![1, 2],
            r#type = "raw",
            "request \x1b[31m\u{85} done"
        );
        drop(_call);
        let cause = std::io::Error::other("disk \x07full");
        let error = std::io::Error::other(Wrapped(cause));
        tracing::warn!(
            error = &error as &(dyn std::error::Error + 'static),
            "with a cause"
        );
        tracing::warn!(reason = %"no \"leader\"", "plain warning");
        drop(_request);
        tracing::error!("outside any span");
    }

    /// What `subscriber` writes for [`emit`], each line without its leading timestamp.
    fn lines_of<S>(make: impl FnOnce(Buffer) -> S, strip: impl Fn(&str) -> String) -> Vec<String>
    where
        S: tracing::Subscriber + Send + Sync + 'static,
    {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(make(buffer.clone()), emit);
        buffer.text().lines().map(strip).collect()
    }

    #[test]
    fn plain_lines_read_as_tracing_subscribers_own_without_colours() {
        let strip = |line: &str| line[27..].to_owned();
        let stock = lines_of(
            |b| {
                tracing_subscriber::fmt()
                    .with_env_filter(EnvFilter::new("info"))
                    .with_ansi(false)
                    .with_writer(b)
                    .finish()
            },
            strip,
        );
        let ours = lines_of(
            |b| plain_subscriber(LogFilter::parse("info").unwrap(), b),
            strip,
        );
        assert_eq!(stock.len(), 4, "{stock:#?}");
        assert_eq!(ours, stock);
        assert!(
            ours[0].contains("\\x1b[31m"),
            "control characters are spelt out: {ours:?}"
        );
    }

    #[test]
    fn json_lines_read_as_tracing_subscribers_own() {
        // The timestamp is the first key of both: compare from the level on.
        let strip = |line: &str| line[line.find("\"level\"").unwrap()..].to_owned();
        let stock = lines_of(
            |b| {
                tracing_subscriber::fmt()
                    .with_env_filter(EnvFilter::new("info"))
                    .with_ansi(false)
                    .with_writer(b)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .finish()
            },
            strip,
        );
        let ours = lines_of(
            |b| json_subscriber(LogFilter::parse("info").unwrap(), b),
            strip,
        );
        assert_eq!(stock.len(), 4, "{stock:#?}");
        assert_eq!(ours, stock);
    }

    #[test]
    fn both_formats_stamp_lines_as_tracing_subscriber_does() {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(
            plain_subscriber(EnvFilter::new("info"), buffer.clone()),
            || {
                tracing::info!("now");
            },
        );
        let text = buffer.text();
        let stamp = &text[..27];
        let parsed = humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp}: {e}"));
        let age = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(
            age < std::time::Duration::from_secs(600),
            "{stamp} is not now"
        );
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{stamp}"
        );
    }
}
