//! Guest stdout / stderr: forwarded line by line to the host's log under the component's name,
//! and kept (up to a cap) so a batch's output can be inspected afterwards.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Most bytes of output kept per store; more is still logged but not kept.
const KEPT_BYTES: usize = 64 * 1024;
/// How much a guest may write in one call: the stream is always ready.
const WRITE_BUDGET: usize = 64 * 1024;
/// Longest line logged as one; a longer one is split into lines of this size.
pub(super) const MAX_LINE: usize = 64 * 1024;

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
            buffer.emit(&self.component, self.stream, &line);
        }
    }
}

impl LogBuffer {
    fn emit(&mut self, component: &str, stream: Stream, line: &[u8]) {
        let line = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_owned();
        match stream {
            Stream::Stdout => tracing::info!(target: "guest", component, "{line}"),
            Stream::Stderr => tracing::warn!(target: "guest", component, "{line}"),
        }
        if self.kept_bytes + line.len() <= KEPT_BYTES {
            self.kept_bytes += line.len();
            self.kept.push(line);
        }
    }

    fn flush_partial(&mut self, component: &str, stream: Stream) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(component, stream, &line);
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
