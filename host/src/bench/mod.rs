//! `wasmq bench`: benchmarks that print numbers (throughput, latency percentiles, memory) and
//! assert nothing; the README lists the figures measured and the targets.

mod consumer;
mod dashboard;
mod engine;
mod http;
mod lifecycle;

use std::path::PathBuf;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

pub use self::consumer::{ConsumerBench, run_consumer};
pub use self::dashboard::DashboardLoad;
pub use self::engine::{EngineBench, open_backlog, run_engine};
pub use self::http::{HttpBench, run_http};
pub use self::lifecycle::{StartupBench, SwapBench, run_startup, run_swap};
use crate::engine::SendRequest;

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wasmq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A text message of `bytes` bytes starting with `message {n} `.
fn body(bytes: usize, n: u64) -> SendRequest {
    let mut text = format!("message {n} ");
    text.push_str(&PADDING[..bytes.saturating_sub(text.len()).min(PADDING.len())]);
    SendRequest::text(text)
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
