//! Guest stdout / stderr: forwarded line by line to the host's log under the component's name,
//! and kept (up to a cap) so a batch's output can be inspected afterwards.
//!
//! A guest that prints a line per message would spend a good part of its batch formatting log
//! events (timestamp, span fields, escaping: ~30 % of the host's batch CPU for the `worker`
//! example). So the batch only splits lines and hands each, with the span it was written in,
//! to a thread of its own that formats and emits it ([`flush`] waits for it before exit).
//!
//! That thread takes lines in bursts: woken by a line, it waits [`GATHER`] before taking every
//! line waiting, so that while guests print it is woken a few hundred times a second, not once
//! per line (each wake-up of it, and of the log writer's thread for each formatted line, cost as
//! much CPU as formatting the line). A burst's events are formatted into one buffer and handed
//! to the log's writer in one write when that writer is a [`LogWriter`] (as in `wasmq`). So a
//! line reaches the log a few milliseconds after it is written, whatever the guest does next.
//! The hand-over is bounded: when the log falls behind, guests wait rather than lines being
//! dropped or piling up in memory.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::EitherWriter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Most bytes of output kept per store; more is still logged but not kept.
const KEPT_BYTES: usize = 64 * 1024;
/// How much a guest may write in one call: the stream is always ready.
const WRITE_BUDGET: usize = 64 * 1024;
/// Longest line logged as one; a longer one is split into lines of this size.
pub(super) const MAX_LINE: usize = 64 * 1024;
/// Lines handed to the emitter thread and not yet logged.
const QUEUED_LINES: usize = 4096;
/// How long the emitter thread, woken by a line, lets more gather before it takes them.
const GATHER: Duration = Duration::from_millis(2);
/// Longest [`flush`] waits.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// A guest's line on its way to the log, with where it was written: the subscriber and the
/// span (the batch or the request) that were current.
struct Line {
    dispatch: tracing::Dispatch,
    span: tracing::Span,
    component: Arc<str>,
    stream: Stream,
    text: String,
}

enum ToEmitter {
    Line(Line),
    /// Answer once every line sent before is logged.
    Flush(mpsc::SyncSender<()>),
}

/// The emitter thread's inbox, once it has started.
static EMITTER: OnceLock<mpsc::SyncSender<ToEmitter>> = OnceLock::new();

/// The emitter thread's inbox; the thread starts on first use.
fn emitter() -> &'static mpsc::SyncSender<ToEmitter> {
    EMITTER.get_or_init(|| {
        let (inbox, lines) = mpsc::sync_channel(QUEUED_LINES);
        std::thread::Builder::new()
            .name("wasmq-guest-log".into())
            .spawn(move || {
                yield_to_batches();
                emit_all(&lines);
            })
            .expect("spawning the guest log thread");
        inbox
    })
}

/// The nice value of the emitter thread (0 is the default, 19 the lowest priority).
#[cfg(target_os = "linux")]
const EMITTER_NICE: libc::c_int = 10;

/// Lowers the calling (emitter) thread's priority: when the cores are busy, the batches' work
/// (the guests, the storage writer) runs first and the log catches up in between. Every line is
/// still logged: when the log falls a queue's worth behind, guests wait for it.
fn yield_to_batches() {
    // On Linux the nice value is per thread, and `who = 0` names the calling thread.
    // SAFETY: setpriority reads no memory of ours; failing (say, a sandbox that forbids it)
    // leaves the priority as it was, which is harmless.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, EMITTER_NICE);
    }
}

fn emit_all(inbox: &mpsc::Receiver<ToEmitter>) {
    while let Ok(first) = inbox.recv() {
        if matches!(first, ToEmitter::Line(_)) {
            std::thread::sleep(GATHER);
        }
        // At most a queue's worth per burst: a guest that never stops printing still gets its
        // lines written, burst by burst.
        let waiting = std::iter::once(first)
            .chain(inbox.try_iter())
            .take(QUEUED_LINES + 1);
        // The burst's subscribers stay alive until it is written: a [`LogWriter`] is told apart
        // by its address, which must not be reused within the burst.
        let mut subscribers = Vec::new();
        gathered(|| {
            for message in waiting {
                match message {
                    ToEmitter::Line(line) => {
                        subscribers.push(line.dispatch.clone());
                        emit(line);
                    }
                    ToEmitter::Flush(done) => {
                        write_gathered();
                        let _ = done.send(());
                    }
                }
            }
        });
        drop(subscribers);
    }
}

fn emit(line: Line) {
    let Line {
        dispatch,
        span,
        component,
        stream,
        text,
    } = line;
    let component = &*component;
    tracing::dispatcher::with_default(&dispatch, || {
        span.in_scope(|| match stream {
            Stream::Stdout => tracing::info!(target: "guest", component, "{text}"),
            Stream::Stderr => tracing::warn!(target: "guest", component, "{text}"),
        });
    });
}

/// Waits (up to 10 s) until every guest line written so far is in the log; call before the
/// process exits.
pub fn flush() {
    let Some(inbox) = EMITTER.get() else {
        return;
    };
    let (done, flushed) = mpsc::sync_channel(1);
    if inbox.send(ToEmitter::Flush(done)).is_ok() {
        let _ = flushed.recv_timeout(FLUSH_WAIT);
    }
}

thread_local! {
    /// While the emitter formats a burst: the events formatted so far, by [`LogWriter`].
    static GATHERING: RefCell<Option<Gathering>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Gathering {
    /// For each [`LogWriter`] written to in this burst (one, unless tests run their own
    /// subscribers side by side): its address, its writer and what was formatted for it.
    outs: Vec<(usize, Box<dyn io::Write>, Vec<u8>)>,
    /// The entry the event being formatted goes to.
    current: usize,
}

/// Runs `emit` with the events a [`LogWriter`] writes on this thread gathered, then writes them
/// in one piece per writer.
fn gathered(emit: impl FnOnce()) {
    GATHERING.set(Some(Gathering::default()));
    emit();
    write_gathered();
    GATHERING.set(None);
}

/// Writes what was gathered so far.
fn write_gathered() {
    GATHERING.with_borrow_mut(|gathering| {
        for (_, out, bytes) in gathering.iter_mut().flat_map(|g| g.outs.iter_mut()) {
            if !bytes.is_empty() {
                // A log that cannot be written has nowhere to say so.
                let _ = out.write_all(bytes);
                bytes.clear();
            }
        }
    });
}

/// The host's log writer, for the fmt subscriber: each event goes to `out` as it is
/// formatted, except on the guest-log thread, where a burst of guests' lines is written to
/// `out` in one write.
#[derive(Debug, Clone)]
pub struct LogWriter<W> {
    out: W,
}

impl<W> LogWriter<W> {
    /// Writes the log to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<'a, W> MakeWriter<'a> for LogWriter<W>
where
    W: io::Write + Clone + 'static,
{
    type Writer = EitherWriter<Gathered, W>;

    fn make_writer(&'a self) -> Self::Writer {
        let owner = std::ptr::from_ref(self) as usize;
        let gathering = GATHERING.with_borrow_mut(|gathering| {
            let Some(gathering) = gathering else {
                return false;
            };
            gathering.current = match gathering.outs.iter().position(|o| o.0 == owner) {
                Some(at) => at,
                None => {
                    let out: Box<dyn io::Write> = Box::new(self.out.clone());
                    gathering.outs.push((owner, out, Vec::new()));
                    gathering.outs.len() - 1
                }
            };
            true
        });
        match gathering {
            true => EitherWriter::A(Gathered),
            false => EitherWriter::B(self.out.clone()),
        }
    }
}

/// Where a [`LogWriter`] writes an event formatted while a burst is gathered.
#[derive(Debug)]
pub struct Gathered;

impl io::Write for Gathered {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        GATHERING.with_borrow_mut(|gathering| {
            if let Some(g) = gathering
                && let Some((_, _, gathered)) = g.outs.get_mut(g.current)
            {
                gathered.extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One output stream of one guest store.
#[derive(Debug, Clone)]
pub struct GuestLog {
    component: Arc<str>,
    stream: Stream,
    inner: Arc<Mutex<LogBuffer>>,
}

#[derive(Debug, Default)]
struct LogBuffer {
    partial: Vec<u8>,
    kept: Vec<String>,
    kept_bytes: usize,
}

impl GuestLog {
    /// A stream for `component`.
    pub fn new(component: Arc<str>, stream: Stream) -> Self {
        Self {
            component,
            stream,
            inner: Arc::default(),
        }
    }

    /// The lines written since the last call (and the unterminated last one), up to the cap;
    /// a warm instance's next batch starts afresh.
    pub fn take_lines(&self) -> Vec<String> {
        let mut buffer = self.inner.lock().expect("guest log lock");
        buffer.flush_partial(&self.component, self.stream);
        buffer.kept_bytes = 0;
        std::mem::take(&mut buffer.kept)
    }

    /// Appends `bytes`: each complete line is logged once, found by scanning only the new
    /// bytes; a line longer than [`MAX_LINE`] is split, so an unterminated flood costs linear
    /// time and bounded memory.
    fn write(&self, mut bytes: &[u8]) {
        let mut buffer = self.inner.lock().expect("guest log lock");
        while !bytes.is_empty() {
            let room = MAX_LINE - buffer.partial.len();
            let (take, ends_line) = match bytes[..bytes.len().min(room)]
                .iter()
                .position(|&b| b == b'\n')
            {
                Some(at) => (at + 1, true),
                None if bytes.len() >= room => (room, true),
                None => (bytes.len(), false),
            };
            let (chunk, rest) = bytes.split_at(take);
            bytes = rest;
            if !ends_line {
                buffer.partial.extend_from_slice(chunk);
                break;
            }
            let chunk = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            let line = if buffer.partial.is_empty() {
                chunk.to_vec()
            } else {
                let mut line = std::mem::take(&mut buffer.partial);
                line.extend_from_slice(chunk);
                line
            };
            buffer.emit(&self.component, self.stream, line);
        }
    }
}

impl LogBuffer {
    fn emit(&mut self, component: &Arc<str>, stream: Stream, line: Vec<u8>) {
        // Valid UTF-8 (the usual case) keeps its buffer.
        let mut line = String::from_utf8(line)
            .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned());
        line.truncate(line.trim_end_matches('\r').len());
        let logged = match stream {
            Stream::Stdout => tracing::enabled!(target: "guest", tracing::Level::INFO),
            Stream::Stderr => tracing::enabled!(target: "guest", tracing::Level::WARN),
        };
        if self.kept_bytes + line.len() <= KEPT_BYTES {
            self.kept_bytes += line.len();
            self.kept.push(line.clone());
        }
        if logged {
            let line = Line {
                dispatch: tracing::dispatcher::get_default(Clone::clone),
                span: tracing::Span::current(),
                component: component.clone(),
                stream,
                text: line,
            };
            // Only fails if the emitter thread is gone, and then there is no log to write to.
            let _ = emitter().send(ToEmitter::Line(line));
        }
    }

    fn flush_partial(&mut self, component: &Arc<str>, stream: Stream) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(component, stream, line);
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Writes synchronously: the default adapter hands every write to an async task, which
    /// costs a thread switch per `println!` in the guest.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestLog::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> GuestLog {
        GuestLog::new("test".into(), Stream::Stdout)
    }

    #[test]
    fn lines_are_split_on_newlines_across_writes() {
        let out = log();
        out.write(b"a\nb");
        out.write(b"c\n\nd");
        assert_eq!(out.take_lines(), ["a", "bc", "", "d"]);
        // Windows line ends lose their `\r`; bytes that are not UTF-8 show as U+FFFD.
        out.write(b"e\r\n\xffg\r\r\nh\r");
        assert_eq!(out.take_lines(), ["e", "\u{fffd}g", "h"]);
    }

    /// A writer for a test subscriber that keeps each write apart.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl io::Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_log_in_order_within_their_span_once_flushed() {
        let writes = Writes::default();
        let writer = writes.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("batch", queue = "jobs");
            let _entered = span.enter();
            let out = log();
            let err = GuestLog::new("test".into(), Stream::Stderr);
            for n in 0..1000 {
                out.write(format!("line {n}\n").as_bytes());
            }
            err.write(b"trouble\n");
        });
        flush();
        let text = String::from_utf8(writes.0.lock().unwrap().concat()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1001, "{text}");
        for (n, line) in lines[..1000].iter().enumerate() {
            assert!(
                line.contains(" INFO batch{queue=\"jobs\"}: guest:"),
                "{line}"
            );
            assert!(
                line.ends_with(&format!("line {n} component=\"test\"")),
                "{line}"
            );
        }
        assert!(
            lines[1000].contains(" WARN batch{queue=\"jobs\"}: guest: trouble"),
            "{}",
            lines[1000]
        );
    }

    /// The writes `writes` got, as text.
    fn texts(writes: &Writes) -> Vec<String> {
        let writes = writes.0.lock().unwrap().clone();
        writes
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn a_log_writer_gets_a_burst_of_lines_in_few_writes_and_host_events_as_they_come() {
        let writes = Writes::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(LogWriter::new(writes.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let out = log();
            for n in 0..100 {
                out.write(format!("line {n}\n").as_bytes());
            }
            flush();
            tracing::info!("host event");
        });
        let writes = texts(&writes);
        // 100 lines in a burst or a few (a slow machine may wake the thread between lines),
        // not a write per line.
        let host = writes
            .iter()
            .position(|w| w.ends_with("host event\n"))
            .expect("the host event is written");
        assert_eq!(writes.len(), host + 1, "{writes:#?}");
        assert!((1..=10).contains(&host), "{writes:#?}");
        let lines: Vec<&str> = writes[..host].iter().flat_map(|w| w.lines()).collect();
        assert_eq!(lines.len(), 100);
        for (n, line) in lines.iter().enumerate() {
            assert!(
                line.ends_with(&format!("guest: line {n} component=\"test\"")),
                "{line}"
            );
        }
    }

    #[test]
    fn a_line_is_logged_while_the_guest_goes_on_and_each_subscriber_gets_its_own() {
        let (first, second) = (Writes::default(), Writes::default());
        let subscriber = |writes: &Writes| {
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(LogWriter::new(writes.clone()))
                    .with_ansi(false)
                    .finish(),
            )
        };
        let (one, two) = (subscriber(&first), subscriber(&second));
        let out = log();
        for n in 0..20 {
            let dispatch = if n % 2 == 0 { &one } else { &two };
            tracing::dispatcher::with_default(dispatch, || {
                out.write(format!("line {n}\n").as_bytes());
            });
        }
        // No flush, no end of the call: the thread writes the lines on its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while texts(&first).concat().lines().count() + texts(&second).concat().lines().count() < 20
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the lines were not logged"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for (writes, parity) in [(&first, 0), (&second, 1)] {
            let text = texts(writes).concat();
            let numbers: Vec<u32> = text
                .lines()
                .map(|l| {
                    l.split("line ")
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            assert_eq!(
                numbers,
                (0..20).filter(|n| n % 2 == parity).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn an_unterminated_flood_is_split_into_bounded_lines() {
        let out = log();
        let chunk = vec![b'x'; 10_000];
        for _ in 0..20 {
            out.write(&chunk);
        }
        let buffer = out.inner.lock().unwrap();
        assert!(buffer.partial.len() < MAX_LINE);
        // 200 000 bytes: three full lines were emitted, the rest waits for its newline.
        assert_eq!(buffer.partial.len(), 200_000 - 3 * MAX_LINE);
        drop(buffer);
        let lines = out.take_lines();
        assert_eq!(
            lines.len(),
            1,
            "only the first full line fits the kept bytes"
        );
        assert_eq!(lines[0].len(), MAX_LINE);
    }
}
