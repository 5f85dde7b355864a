//! The two line formats without colours, written straight into the line.
//!
//! `tracing-subscriber`'s own formatters run their styling code even with colours off
//! (every span name, field name and `=` goes through `nu_ansi_term`'s `Display`), format
//! the timestamp with a `write!` per part, and, in JSON, parse every enclosing span's
//! stored fields back into `serde_json::Value`s for each line. These write the same text:
//! [`Plain`] the stock `pretty` line with colours off, [`Json`] the stock JSON line with
//! `flatten_event`, the current span and the span list. Lines bridged from the `log` crate
//! go to the stock formatters, which know how to name their real target.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The timestamp of every line: UTC, RFC 3339, microseconds, as `2026-12-01T04:00:00.123456Z`
/// (what `tracing-subscriber`'s `SystemTime` writes), digits put in place by hand.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timestamp;

impl Timestamp {
    /// `now` as text; a time before 1970 or after 9999 is written as the epoch's bounds.
    fn text(now: SystemTime) -> [u8; 27] {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        // Up to 9999-12-31T23:59:59: wider years do not fit the layout.
        let secs = since.as_secs().min(253_402_300_799);
        let micros = since.subsec_micros();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        put(&mut out[0..4], year as u32);
        put(&mut out[5..7], month);
        put(&mut out[8..10], day);
        put(&mut out[11..13], (rem / 3600) as u32);
        put(&mut out[14..16], (rem / 60 % 60) as u32);
        put(&mut out[17..19], (rem % 60) as u32);
        put(&mut out[20..26], micros);
        out
    }
}

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let text = Self::text(SystemTime::now());
        // Only ASCII digits and separators were written.
        w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// Writes `value` as decimal digits filling `into`, zero-padded on the left.
fn put(into: &mut [u8], mut value: u32) {
    for slot in into.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `event` came from the `log` crate through `tracing-log` (target `log`, its real
/// target in a `log.target` field).
fn from_log_crate(event: &Event<'_>) -> bool {
    event.metadata().target() == "log"
}

/// Span and event fields as the `pretty` format writes them with colours off:
/// `name=value` separated by spaces, the message first and bare, strings quoted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn separate(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            // What `{:?}` writes for text it would not escape, without its check of
            // every character for an escape: names, subjects and outcomes on every line.
            self.record_debug(field, &format_args!("\"{value}\""));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let shown = Shown(value);
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!("{shown} {}.sources={}", field.name(), Sources(source)),
            ),
            None => self.record_debug(field, &format_args!("{shown}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // What `log` records carry besides their message is said in the line's prefix.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = self.separate().and_then(|()| match name {
            // A message cannot move the cursor or recolour a terminal that shows the log.
            "message" => write!(Escaping(&mut self.writer), "{value:?}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{name}={value:?}")
            }
        });
    }
}

/// An error's message with control characters spelt out, as `tracing-subscriber` shows it.
struct Shown<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// An error's causes as `[first, second]`.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&format_args!("{}", Shown(error)));
            next = error.source();
        }
        list.finish()
    }
}

/// Writes through to `.0`, spelling out the control characters that terminals act on, as
/// `tracing-subscriber` does for messages.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Nearly every message has none of them: one scan, one write.
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                ch if ('\u{80}'..='\u{9f}').contains(&ch) => {
                    write!(self.0, "\\u{{{:x}}}", ch as u32)?
                }
                ch => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// The `pretty` line with colours off:
/// `2026-12-01T04:00:00.123456Z  INFO request{request_id=…}: mcp_fleet::http::observe: request status=200`.
pub(crate) struct Plain {
    /// Lines from the `log` crate.
    stock: format::Format<format::Full, Timestamp>,
}

impl Plain {
    /// The formatter.
    pub(crate) fn new() -> Self {
        Self {
            stock: format::format().with_timer(Timestamp).with_ansi(false),
        }
    }
}

impl<S> FormatEvent<S, PlainFields> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, PlainFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if from_log_crate(event) {
            return self.stock.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        Timestamp.format_time(&mut writer)?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<PlainFields>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{}}}", fields.fields)?;
                    }
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        PlainFields.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// Span fields as the JSON object `tracing-subscriber`'s `JsonFields` stores (keys sorted,
/// the last value of a repeated key), written without building `serde_json::Value`s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonSpanFields;

impl JsonSpanFields {
    /// Each field's name and its value as JSON text.
    fn collect<R: RecordFields>(fields: R) -> Result<Vec<(&'static str, Vec<u8>)>, fmt::Error> {
        let mut collect = Collect {
            entries: Vec::new(),
            scratch: String::new(),
            failed: false,
        };
        fields.record(&mut collect);
        if collect.failed {
            return Err(fmt::Error);
        }
        let mut entries = collect.entries;
        entries.sort_by_key(|(name, _)| *name);
        // Of a repeated key the last one recorded stands (sort_by_key is stable).
        let mut kept: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        Ok(kept)
    }
}

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        for (i, (name, value)) in Self::collect(fields)?.iter().enumerate() {
            if i > 0 {
                writer.write_char(',')?;
            }
            json_str(&mut writer, name)?;
            writer.write_char(':')?;
            writer.write_str(std::str::from_utf8(value).map_err(|_| fmt::Error)?)?;
        }
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // Rare (a span recording a field after it began): merge the way `JsonFields` does.
        let mut map: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&current.fields).map_err(|_| fmt::Error)?;
        for (name, value) in Self::collect(fields)? {
            let value = serde_json::from_slice(&value).map_err(|_| fmt::Error)?;
            map.insert(name.to_owned(), value);
        }
        current.fields = serde_json::to_string(&map).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// Gathers fields as JSON text, typed as `JsonFields` types them.
struct Collect {
    entries: Vec<(&'static str, Vec<u8>)>,
    scratch: String,
    failed: bool,
}

impl Collect {
    fn entry(&mut self, field: &Field, value: impl serde::Serialize) {
        match serde_json::to_vec(&value) {
            Ok(bytes) => self.entries.push((field.name(), bytes)),
            Err(_) => self.failed = true,
        }
    }
}

/// `Visit` for a JSON field gatherer: every value goes through its `entry`; a `Debug`
/// value is formatted into its `scratch` first, and one that fails to format runs
/// `$failed` (with `$this` the gatherer).
macro_rules! visit_by_entry {
    ($ty:ty, |$this:ident| $failed:expr) => {
        impl Visit for $ty {
            fn record_bool(&mut self, field: &Field, value: bool) {
                self.entry(field, value);
            }

            fn record_i64(&mut self, field: &Field, value: i64) {
                self.entry(field, value);
            }

            fn record_u64(&mut self, field: &Field, value: u64) {
                self.entry(field, value);
            }

            fn record_f64(&mut self, field: &Field, value: f64) {
                self.entry(field, value);
            }

            fn record_str(&mut self, field: &Field, value: &str) {
                self.entry(field, value);
            }

            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                if write!(scratch, "{value:?}").is_ok() {
                    self.entry(field, scratch.as_str());
                } else {
                    let $this = &mut *self;
                    $failed;
                }
                self.scratch = scratch;
            }
        }
    };
}

visit_by_entry!(Collect, |this| this.failed = true);

/// The JSON line: `timestamp`, `level`, the event's fields, `target`, then the current
/// span under `span` and every span from the root under `spans`, each with its `name`.
/// Span fields are stored as JSON objects by [`JsonSpanFields`] and copied into the line
/// as they are.
pub(crate) struct Json {
    /// Lines from the `log` crate.
    stock: format::Format<format::Json, Timestamp>,
}

impl Json {
    /// The formatter.
    pub(crate) fn new() -> Self {
        Self {
            stock: format::format()
                .with_timer(Timestamp)
                .with_ansi(false)
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true),
        }
    }
}

impl<S> FormatEvent<S, JsonSpanFields> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if from_log_crate(event) {
            return self.stock.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        Timestamp.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut visitor = JsonVisitor::new(&mut writer);
        event.record(&mut visitor);
        visitor.finish()?;
        writer.write_str(",\"target\":")?;
        json_str(&mut writer, meta.target())?;
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &current {
            writer.write_str(",\"span\":")?;
            json_span(&mut writer, span)?;
            writer.write_str(",\"spans\":[")?;
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        writer.write_char(',')?;
                    }
                    json_span(&mut writer, &span)?;
                }
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// One span as `{…its fields…,"name":"…"}`.
fn json_span<S>(
    writer: &mut Writer<'_>,
    span: &tracing_subscriber::registry::SpanRef<'_, S>,
) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let ext = span.extensions();
    let fields = ext
        .get::<FormattedFields<JsonSpanFields>>()
        .map(|f| f.fields.as_str())
        .and_then(|f| f.strip_prefix('{'))
        .and_then(|f| f.strip_suffix('}'))
        .unwrap_or("");
    writer.write_char('{')?;
    if !fields.is_empty() {
        writer.write_str(fields)?;
        writer.write_char(',')?;
    }
    writer.write_str("\"name\":")?;
    json_str(writer, span.metadata().name())?;
    writer.write_char('}')
}

/// `text` as a JSON string.
fn json_str(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    // Targets and span names need no escaping; anything else goes through serde_json.
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        writer.write_char('"')?;
        writer.write_str(text)?;
        return writer.write_char('"');
    }
    let mut bytes = Vec::new();
    serde_json::to_writer(&mut bytes, text).map_err(|_| fmt::Error)?;
    writer.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
}

/// An event's fields as `,"name":value` pairs, typed as `tracing-serde` types them.
struct JsonVisitor<'a, 'w> {
    out: Utf8<'a, 'w>,
    /// Where a `Debug` value is formatted before it is escaped.
    scratch: String,
    result: Result<(), serde_json::Error>,
}

/// `serde_json`'s output into a line: it writes whole UTF-8 pieces (text between
/// escapes, escapes, numbers), so each piece is checked and passed on.
struct Utf8<'a, 'w>(&'a mut Writer<'w>);

impl std::io::Write for Utf8<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(bytes).map_err(std::io::Error::other)?;
        self.0.write_str(text).map_err(std::io::Error::other)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, 'w> JsonVisitor<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>) -> Self {
        Self {
            out: Utf8(writer),
            scratch: String::new(),
            result: Ok(()),
        }
    }

    fn entry(&mut self, field: &Field, value: impl serde::Serialize) {
        if self.result.is_err() {
            return;
        }
        let out = &mut self.out;
        self.result = out
            .write_all(b",")
            .map_err(serde_json::Error::io)
            .and_then(|()| serde_json::to_writer(&mut *out, field.name()))
            .and_then(|()| out.write_all(b":").map_err(serde_json::Error::io))
            .and_then(|()| serde_json::to_writer(&mut *out, &value));
    }

    fn finish(self) -> fmt::Result {
        self.result.map_err(|_| fmt::Error)
    }
}

visit_by_entry!(JsonVisitor<'_, '_>, |this| this.result =
    Err(serde::ser::Error::custom("a field failed to format")));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timestamp_reads_as_tracing_subscribers_own() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 123_456, "2000-02-29T00:00:00.123456Z"),
            (1_798_691_696, 999_999, "2026-12-31T04:34:56.999999Z"),
            (4_107_542_399, 7, "2100-02-28T23:59:59.000007Z"),
        ];
        for (secs, micros, text) in cases {
            let at = UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000);
            assert_eq!(std::str::from_utf8(&Timestamp::text(at)).unwrap(), text);
        }
    }
}
