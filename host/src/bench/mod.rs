//! `wasmq bench`: benchmarks that print numbers (throughput, latency percentiles, memory) and
//! assert nothing; the README lists the figures measured and the targets.

mod binary;
mod consumer;
mod dashboard;
mod engine;
mod http;
mod lifecycle;

use std::path::PathBuf;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

pub use self::binary::{BinaryBench, run_binary};
pub use self::consumer::{ConsumerBench, run_consumer};
pub use self::dashboard::DashboardLoad;
pub use self::engine::{EngineBench, open_backlog, run_engine};
pub use self::http::{HttpBench, run_http};
pub use self::lifecycle::{StartupBench, SwapBench, run_startup, run_swap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::{Broker, SendRequest};
use crate::http::{self as api, ProducerRoutes, QueueConsumers};

/// The HTTP API of a bench, served on a free loopback port until [`Served::stop`].
struct Served {
    /// `http://127.0.0.1:PORT`.
    base: String,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Served {
    /// Serves the API over `broker`, with `consumers` and `producers` wired, no token, no
    /// access log, and at most `max_connections` connections at once.
    async fn start(
        broker: Arc<dyn Broker>,
        consumers: QueueConsumers,
        producers: ProducerRoutes,
        max_connections: usize,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = api::router(api::ServeConfig {
            broker,
            consumers,
            token: None,
            producers,
            consumer_stats: Default::default(),
            component_stats: Default::default(),
            reloader: None,
            access_log: false,
        });
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(api::serve(listener, router, max_connections, stopped));
        Ok(Self { base, stop, server })
    }

    /// Stops serving; connections still open (keep-alive clients) are dropped.
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.server.abort();
        let _ = self.server.await;
    }
}

/// Publishes `messages` 64-byte text messages to `queue` through the HTTP API at `base`, in
/// batches of 100 over `connections` keep-alive connections; returns each batch's time.
async fn publish_over_http(
    base: &str,
    queue: &str,
    messages: u64,
    connections: u64,
) -> Result<Histogram<u64>> {
    let batches = messages.div_ceil(100);
    let url = format!("{base}/queues/{queue}/messages/batch");
    let mut clients = Vec::new();
    for c in 0..connections {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut h = histogram();
            let mut b = c;
            while b < batches {
                let first = b * 100;
                let batch: Vec<serde_json::Value> = (first..(first + 100).min(messages))
                    .map(|n| serde_json::json!({ "body": text(64, n), "content_type": "text" }))
                    .collect();
                let t = std::time::Instant::now();
                let response = client
                    .post(&url)
                    .json(&serde_json::json!({ "messages": batch }))
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "publish failed: {}",
                    response.status()
                );
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                b += connections;
            }
            anyhow::Ok(h)
        }));
    }
    let mut h = histogram();
    for client in clients {
        h.add(client.await??)?;
    }
    Ok(h)
}

/// CPU time this process has used so far (user and system, every thread).
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wasmq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A text message of `bytes` bytes starting with `message {n} `.
fn body(bytes: usize, n: u64) -> SendRequest {
    SendRequest::text(text(bytes, n))
}

/// `message {n} ` padded with `x` to `bytes` bytes.
fn text(bytes: usize, n: u64) -> String {
    let mut text = format!("message {n} ");
    text.push_str(&PADDING[..bytes.saturating_sub(text.len()).min(PADDING.len())]);
    text
}

const PADDING: &str = concat!(
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
);

/// Latencies in microseconds, 1 µs to 60 s.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn print_latency(label: &str, h: &Histogram<u64>) {
    println!(
        "    {label} latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}
