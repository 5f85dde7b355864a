//! Log lines gathered in memory and written to standard error in batches.
//!
//! Written one by one, every `info` line is a `write(2)` on the thread serving the request
//! (and file-system time when standard error is a file). Here a line at `info` or below is
//! appended to a buffer; a flusher thread writes the buffer `log.flush_interval` after the
//! first line landed in it, so under load one write carries hundreds of lines and the
//! flusher wakes at most once per interval (never while nothing is logged). A `WARN` or
//! `ERROR` line is written at once by the thread that logs it, after everything buffered
//! before it, so an operator sees it when it happens and in order.
//!
//! Memory is bounded by `log.max_buffered_bytes`: a line that would take the buffer past
//! it makes its own thread write the buffer and the line, waiting for standard error as
//! every line did before batching. When standard error is slow the node slows down
//! rather than drop lines: an access log with holes cannot be trusted, and a reader that
//! stopped reading is a fault to see, not to hide. Nothing is counted as dropped because
//! nothing is.
//!
//! [`Flush`], held by the command line until it ends, writes what is left when it is
//! dropped: a clean stop loses no line. A SIGKILL loses what is buffered, at most one
//! interval's lines.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The buffer shared by every thread that logs and the flusher.
struct Shared<W> {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The destination, and the buffer being written; holding it orders the writes.
    out: Mutex<(W, Vec<u8>)>,
    max_bytes: usize,
    /// Set once the flusher is gone: from then on every line is written at once.
    stopped: AtomicBool,
    flusher: OnceLock<Thread>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock left at worst some bytes unwritten; carry on.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Shared<W> {
    /// Queues `line`, or writes it with the backlog when it is urgent or does not fit.
    fn push(&self, line: &[u8], urgent: bool) {
        if !urgent && !self.stopped.load(Ordering::Acquire) {
            let mut pending = lock(&self.pending);
            if pending.len() + line.len() <= self.max_bytes {
                let first = pending.is_empty();
                pending.extend_from_slice(line);
                drop(pending);
                if first {
                    self.wake_flusher();
                }
                return;
            }
        }
        self.write_out(line);
    }

    /// Writes everything pending, then `line`, in one write.
    fn write_out(&self, line: &[u8]) {
        let mut out = lock(&self.out);
        let (sink, batch) = &mut *out;
        std::mem::swap(&mut *lock(&self.pending), batch);
        batch.extend_from_slice(line);
        if !batch.is_empty() {
            // Standard error closed or full: nothing better to do with a log line.
            let _ = sink.write_all(batch).and_then(|()| sink.flush());
        }
        batch.clear();
        // A batch that once grew past the cap gives its memory back.
        batch.shrink_to(self.max_bytes);
    }

    fn wake_flusher(&self) {
        if let Some(thread) = self.flusher.get() {
            thread.unpark();
        }
    }
}

/// The `MakeWriter` of the subscriber: each line goes to the shared buffer.
pub(crate) struct Batched<W> {
    shared: Arc<Shared<W>>,
}

/// Writes what is buffered when dropped, and stops the flusher.
pub(crate) struct Flush {
    stop: Box<dyn FnOnce() + Send>,
}

impl Drop for Flush {
    fn drop(&mut self) {
        let stop = std::mem::replace(&mut self.stop, Box::new(|| ()));
        stop();
    }
}

impl<W: Write + Send + 'static> Batched<W> {
    /// A buffer of at most `max_bytes` in front of `sink`, written `interval` after its
    /// first line by a thread of its own (a zero `interval`: no buffer, each line written
    /// at once). Dropping the [`Flush`] writes what is left.
    pub(crate) fn start(sink: W, interval: Duration, max_bytes: usize) -> (Self, Flush) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(max_bytes.min(64 * 1024))),
            out: Mutex::new((sink, Vec::with_capacity(max_bytes.min(64 * 1024)))),
            max_bytes,
            stopped: AtomicBool::new(false),
            flusher: OnceLock::new(),
        });
        let flusher = if interval.is_zero() {
            None
        } else {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-flush".into())
                .spawn(move || flush_loop(&shared, interval))
                .ok()
        };
        match &flusher {
            Some(handle) => {
                let _ = shared.flusher.set(handle.thread().clone());
            }
            // No interval, or no thread for it: every line is written at once.
            None => shared.stopped.store(true, Ordering::Release),
        }
        let stopping = shared.clone();
        let stop = Box::new(move || {
            stopping.stopped.store(true, Ordering::Release);
            if let Some(handle) = flusher {
                handle.thread().unpark();
                let _ = handle.join();
            }
            stopping.write_out(&[]);
        });
        (Self { shared }, Flush { stop })
    }
}

fn flush_loop<W: Write>(shared: &Shared<W>, interval: Duration) {
    loop {
        // Woken by the first line into an empty buffer, or by the stop.
        std::thread::park();
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        // The lines that follow within the interval share one write. Woken early (the
        // stop, or a line after an urgent write emptied the buffer): write sooner.
        std::thread::park_timeout(interval);
        shared.write_out(&[]);
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
    }
}

/// One line's writer: the fmt layer formats a line, then writes it with one `write_all`.
pub(crate) struct Line<'a, W> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.push(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            shared: &self.shared,
            // WARN and ERROR (tracing orders levels by verbosity: ERROR is the least).
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each write separately.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    fn line(batched: &Batched<Sink>, level: Level, text: &str) {
        let mut w = Line {
            shared: &batched.shared,
            urgent: level <= Level::WARN,
        };
        w.write_all(text.as_bytes()).unwrap();
    }

    /// Waits, within a generous bound, for `probe`.
    fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !probe() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn info_lines_wait_for_one_write_and_a_warning_takes_them_out_in_order() {
        let sink = Sink::default();
        // An interval no test run reaches: only a warning or the stop writes.
        let (batched, flush) = Batched::start(sink.clone(), Duration::from_secs(3600), 4096);
        line(&batched, Level::INFO, "one\n");
        line(&batched, Level::INFO, "two\n");
        assert_eq!(sink.writes(), 0, "info lines are held");
        line(&batched, Level::WARN, "three\n");
        assert_eq!(sink.text(), "one\ntwo\nthree\n");
        assert_eq!(
            sink.writes(),
            1,
            "the backlog and the warning go out together"
        );
        line(&batched, Level::INFO, "four\n");
        drop(flush);
        assert_eq!(
            sink.text(),
            "one\ntwo\nthree\nfour\n",
            "the stop writes the rest"
        );
        line(&batched, Level::INFO, "after\n");
        assert!(sink.text().ends_with("after\n"), "after the stop, at once");
    }

    #[test]
    fn the_flusher_writes_what_waited_one_interval() {
        let sink = Sink::default();
        let (batched, _flush) = Batched::start(sink.clone(), Duration::from_millis(20), 4096);
        for i in 0..3 {
            line(&batched, Level::INFO, &format!("line {i}\n"));
        }
        eventually("the flusher to write", || sink.text().contains("line 2"));
        assert_eq!(sink.text(), "line 0\nline 1\nline 2\n");
        line(&batched, Level::INFO, "later\n");
        eventually("the flusher to wake again", || {
            sink.text().contains("later")
        });
    }

    #[test]
    fn a_full_buffer_is_written_by_the_thread_that_fills_it_and_nothing_is_dropped() {
        let sink = Sink::default();
        let (batched, flush) = Batched::start(sink.clone(), Duration::from_secs(3600), 64);
        let mut expected = String::new();
        for i in 0..40 {
            let text = format!("line number {i:02}\n");
            line(&batched, Level::INFO, &text);
            expected.push_str(&text);
            let held = expected.len() - sink.text().len();
            assert!(held <= 64, "{held} bytes held past the cap");
        }
        assert!(sink.writes() > 1, "the cap forced writes before the stop");
        drop(flush);
        assert_eq!(sink.text(), expected, "every line, in order");
    }
}
