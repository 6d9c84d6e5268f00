//! Guest stdout / stderr: forwarded line by line to the host's log under the component's name,
//! and kept (up to a cap) so a batch's output can be inspected afterwards.
//!
//! A guest that prints a line per message would spend a good part of its batch formatting log
//! events (timestamp, span fields, escaping: ~30 % of the host's batch CPU for the `worker`
//! example). So the batch only splits lines, and a thread of its own formats and emits them
//! ([`flush`] waits for it before exit). Lines travel in chunks (up to 64 lines, or those of
//! 20 ms, and whatever is left when the guest's call ends): handing over, and waking that thread,
//! once per line cost as much CPU as formatting the line. The thread formats a chunk into one
//! buffer and hands it to the log's writer in one piece when the writer is a [`LogWriter`] (as
//! in `wasmq`), rather than waking the writer's thread once per line too. The hand-over is
//! bounded: when the log falls behind, guests wait rather than lines being dropped or piling up
//! in memory. Lines of one stream stay in order; stdout and stderr are chunked apart.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
/// Most lines in one chunk.
const CHUNK_LINES: usize = 64;
/// A chunk is handed over at the next line once its first line is this old.
const CHUNK_AGE: Duration = Duration::from_millis(20);
/// Chunks handed to the emitter thread and not yet logged (up to 4096 lines).
const QUEUED_CHUNKS: usize = 64;
/// Longest [`flush`] waits.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Lines of one guest stream on their way to the log, with where they were written: the
/// subscriber and the span (the batch or the request) that were current.
struct Chunk {
    dispatch: tracing::Dispatch,
    span: tracing::Span,
    component: Arc<str>,
    stream: Stream,
    lines: Vec<String>,
    /// When the first line was written.
    since: Instant,
}

enum ToEmitter {
    Chunk(Chunk),
    /// Answer once every line sent before is logged.
    Flush(mpsc::SyncSender<()>),
}

/// The emitter thread's inbox, once it has started.
static EMITTER: OnceLock<mpsc::SyncSender<ToEmitter>> = OnceLock::new();

/// The emitter thread's inbox; the thread starts on first use.
fn emitter() -> &'static mpsc::SyncSender<ToEmitter> {
    EMITTER.get_or_init(|| {
        let (inbox, chunks) = mpsc::sync_channel(QUEUED_CHUNKS);
        std::thread::Builder::new()
            .name("wasmq-guest-log".into())
            .spawn(move || emit_all(&chunks))
            .expect("spawning the guest log thread");
        inbox
    })
}

fn emit_all(chunks: &mpsc::Receiver<ToEmitter>) {
    for message in chunks {
        match message {
            ToEmitter::Chunk(chunk) => {
                let Chunk {
                    dispatch,
                    span,
                    component,
                    stream,
                    lines,
                    ..
                } = chunk;
                let component = &*component;
                tracing::dispatcher::with_default(&dispatch, || {
                    span.in_scope(|| {
                        gathered(|| {
                            for text in &lines {
                                match stream {
                                    Stream::Stdout => {
                                        tracing::info!(target: "guest", component, "{text}");
                                    }
                                    Stream::Stderr => {
                                        tracing::warn!(target: "guest", component, "{text}");
                                    }
                                }
                            }
                        });
                    });
                });
            }
            ToEmitter::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Waits (up to 10 s) until every guest line handed over so far is in the log; call before
/// the process exits. Lines still in a guest's unfinished chunk are handed over when its call
/// ends or its store is dropped.
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
    /// While the emitter formats a chunk: the chunk's formatted events, and the writer they go
    /// to once it is done (set by the first event a [`LogWriter`] is asked to write).
    static GATHERING: RefCell<Option<Gathering>> = const { RefCell::new(None) };
}

struct Gathering {
    bytes: Vec<u8>,
    out: Option<Box<dyn io::Write>>,
}

/// Runs `emit` with every event a [`LogWriter`] writes on this thread gathered, then writes
/// them to it in one piece.
fn gathered(emit: impl FnOnce()) {
    GATHERING.set(Some(Gathering {
        bytes: Vec::new(),
        out: None,
    }));
    emit();
    if let Some(Gathering {
        bytes,
        out: Some(mut out),
    }) = GATHERING.take()
    {
        // A log that cannot be written has nowhere to say so.
        let _ = out.write_all(&bytes);
    }
}

/// The host's log writer, for the fmt subscriber: each event goes to `out` as it is
/// formatted, except on the guest-log thread, where a chunk's events are written to `out`
/// together, in one write.
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
        let gathering = GATHERING.with_borrow_mut(|gathering| match gathering {
            Some(gathering) => {
                gathering
                    .out
                    .get_or_insert_with(|| Box::new(self.out.clone()));
                true
            }
            None => false,
        });
        match gathering {
            true => EitherWriter::A(Gathered),
            false => EitherWriter::B(self.out.clone()),
        }
    }
}

/// Where a [`LogWriter`] writes an event formatted while a chunk is gathered.
#[derive(Debug)]
pub struct Gathered;

impl io::Write for Gathered {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        GATHERING.with_borrow_mut(|gathering| {
            if let Some(gathering) = gathering {
                gathering.bytes.extend_from_slice(bytes);
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

#[derive(Default)]
struct LogBuffer {
    partial: Vec<u8>,
    kept: Vec<String>,
    kept_bytes: usize,
    /// Lines logged but not yet handed to the emitter thread.
    chunk: Option<Chunk>,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer")
            .field("partial", &self.partial.len())
            .field("kept", &self.kept.len())
            .field("chunk", &self.chunk.as_ref().map_or(0, |c| c.lines.len()))
            .finish()
    }
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
    /// Every line written so far is handed to the log.
    pub fn take_lines(&self) -> Vec<String> {
        let mut buffer = self.inner.lock().expect("guest log lock");
        buffer.flush_partial(&self.component, self.stream);
        buffer.hand_over();
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
            buffer.emit(&self.component, self.stream, &line);
        }
    }
}

impl LogBuffer {
    fn emit(&mut self, component: &Arc<str>, stream: Stream, line: &[u8]) {
        let line = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_owned();
        let logged = match stream {
            Stream::Stdout => tracing::enabled!(target: "guest", tracing::Level::INFO),
            Stream::Stderr => tracing::enabled!(target: "guest", tracing::Level::WARN),
        };
        if self.kept_bytes + line.len() <= KEPT_BYTES {
            self.kept_bytes += line.len();
            self.kept.push(line.clone());
        }
        if logged {
            self.log(component, stream, line);
        }
    }

    /// Adds `line` to the chunk, handing the chunk over first if the line belongs to another
    /// span, and after if it is full or old.
    fn log(&mut self, component: &Arc<str>, stream: Stream, line: String) {
        let span = tracing::Span::current();
        if self
            .chunk
            .as_ref()
            .is_some_and(|c| c.span.id() != span.id())
        {
            self.hand_over();
        }
        let chunk = self.chunk.get_or_insert_with(|| Chunk {
            dispatch: tracing::dispatcher::get_default(Clone::clone),
            span,
            component: component.clone(),
            stream,
            lines: Vec::with_capacity(CHUNK_LINES),
            since: Instant::now(),
        });
        chunk.lines.push(line);
        if chunk.lines.len() >= CHUNK_LINES || chunk.since.elapsed() >= CHUNK_AGE {
            self.hand_over();
        }
    }

    /// Sends the chunk, if any, to the emitter thread.
    fn hand_over(&mut self) {
        if let Some(chunk) = self.chunk.take() {
            // Only fails if the emitter thread is gone, and then there is no log to write to.
            let _ = emitter().send(ToEmitter::Chunk(chunk));
        }
    }

    fn flush_partial(&mut self, component: &Arc<str>, stream: Stream) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(component, stream, &line);
        }
    }
}

impl Drop for LogBuffer {
    /// A store dropped without [`GuestLog::take_lines`] still gets its lines logged.
    fn drop(&mut self) {
        self.hand_over();
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
    }

    /// A writer for a test subscriber that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_log_in_order_within_their_span_once_flushed() {
        let captured = Captured::default();
        let writer = captured.clone();
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
            // The end of the guest's call: what is left of each stream is handed over.
            out.take_lines();
            err.take_lines();
        });
        flush();
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
    fn a_log_writer_gets_a_chunk_of_lines_in_one_write_and_host_events_as_they_come() {
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
            out.take_lines();
            flush();
            tracing::info!("host event");
            // A store dropped mid-chunk still logs its lines.
            let dropped = log();
            dropped.write(b"last words\n");
            drop(dropped);
            flush();
        });
        let writes = writes.0.lock().unwrap().clone();
        let writes: Vec<String> = writes
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect();
        // 100 lines come in chunks (64, then the 36 left when the call ended, unless a chunk
        // grew old on a slow machine), each chunk in one write, not a write per line.
        let host = writes
            .iter()
            .position(|w| w.ends_with("host event\n"))
            .expect("the host event is written");
        assert!((2..=10).contains(&host), "{writes:#?}");
        let lines: Vec<&str> = writes[..host].iter().flat_map(|w| w.lines()).collect();
        assert_eq!(lines.len(), 100);
        for (n, line) in lines.iter().enumerate() {
            assert!(
                line.ends_with(&format!("guest: line {n} component=\"test\"")),
                "{line}"
            );
        }
        assert_eq!(writes.len(), host + 2, "{writes:#?}");
        assert!(
            writes[host + 1].contains("guest: last words"),
            "{}",
            writes[host + 1]
        );
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
