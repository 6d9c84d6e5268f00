//! `host bench consumer`: the real host path end to end: messages sent through the engine
//! API, batched by the dispatcher, handled by a real component in wasmtime, settled durably.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tokio::sync::{mpsc, watch};

use super::{body, histogram, print_latency, tempdir};
use crate::dispatch::Dispatcher;
use crate::engine::{
    Broker, ConsumerSettings, QueueSettings, RedbBroker, RedbOptions, SendRequest,
};
use crate::runtime::{ComponentOptions, ConsumerComponent, Runtime, RuntimeConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ConsumerBench {
    /// Batches in flight at once in the throughput run.
    pub concurrency: Vec<u32>,
    /// The consumer component (e.g. the `worker` example).
    pub wasm: PathBuf,
    /// Messages in the throughput run.
    pub messages: u64,
    /// Messages in the latency run (sent one at a time).
    pub latency_messages: u64,
    /// `max_batch_size` in the throughput runs.
    pub batch_size: u32,
    /// The body of every message (default: 64 bytes of text); e.g. `sleep:1` with the
    /// `scripted` guest makes each message take 1 ms.
    pub body: Option<String>,
    /// Use the pooling instance allocator.
    pub pooling: bool,
}

/// Runs the throughput and the latency benchmark and prints a report.
pub async fn run_consumer(bench: &ConsumerBench) -> Result<()> {
    let wasm = std::fs::read(&bench.wasm)
        .with_context(|| format!("reading {} (build the guests first)", bench.wasm.display()))?;
    let runtime = Runtime::with_config(&RuntimeConfig {
        cache_dir: None,
        pooling_allocator: bench.pooling,
    })?;
    let started = Instant::now();
    let component = ConsumerComponent::new(&runtime, "bench", &wasm, ComponentOptions::default())?;
    println!(
        "wasmq consumer bench: component {} ({} KB) compiled in {:.0} ms; {} allocator",
        bench.wasm.display(),
        wasm.len() / 1000,
        started.elapsed().as_secs_f64() * 1000.0,
        if runtime.pooling() {
            "pooling"
        } else {
            "on-demand"
        }
    );
    let dir = tempdir()?;
    for &concurrency in &bench.concurrency {
        throughput(&dir, bench, &component, concurrency).await?;
    }
    latency(&dir, bench, &component).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn open(dir: &Path, name: &str, consumer: &ConsumerSettings) -> Result<Arc<dyn Broker>> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let broker = RedbBroker::open(&path, RedbOptions::default())?;
    let settings = QueueSettings {
        consumer: consumer.clone(),
        ..QueueSettings::default()
    };
    broker.create_queue("bench", settings).await?;
    Ok(Arc::new(broker))
}

/// The `n`th message of a run.
fn message(bench: &ConsumerBench, n: u64) -> SendRequest {
    match &bench.body {
        Some(text) => SendRequest::text(text.clone()),
        None => body(64, n),
    }
}

/// 4 producers send batches of 100 while the consumer (batches of `batch_size`) keeps up.
async fn throughput(
    dir: &Path,
    bench: &ConsumerBench,
    component: &ConsumerComponent,
    concurrency: u32,
) -> Result<()> {
    let batch_size = bench.batch_size;
    let consumer = ConsumerSettings {
        max_batch_size: batch_size,
        max_batch_timeout: 1,
        ..ConsumerSettings::default()
    };
    let broker = open(dir, "throughput.redb", &consumer).await?;
    let (stop, stopped) = watch::channel(false);
    let dispatcher = Dispatcher::new(broker.clone(), "bench", consumer, component.clone())
        .with_concurrency(concurrency);
    let running = tokio::spawn(dispatcher.run(stopped));

    let batches = bench.messages.div_ceil(100);
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let broker = broker.clone();
        let bench = bench.clone();
        producers.push(tokio::spawn(async move {
            let mut b = p;
            while b < batches {
                let batch = (0..100).map(|i| message(&bench, b * 100 + i)).collect();
                broker.send_batch("bench", batch, None).await?;
                b += 4;
            }
            anyhow::Ok(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    let sent = started.elapsed();
    let total = batches * 100;
    let deadline = Instant::now() + Duration::from_secs(600);
    while broker.metrics("bench").await?.acked < total {
        ensure!(
            Instant::now() < deadline,
            "the consumer did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop.send(true)?;
    running.await?;
    println!(
        "end to end, max_batch_size {batch_size}, max_concurrency {concurrency}: {:.0} msgs/s ({total} messages sent, handled and acked durably in {:.2} s; sending alone took {:.2} s)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        sent.as_secs_f64()
    );
    Ok(())
}

/// One message at a time at light load, `max_batch_timeout = 0`: time from the send being
/// acknowledged to the component being called with it.
async fn latency(dir: &Path, bench: &ConsumerBench, component: &ConsumerComponent) -> Result<()> {
    let consumer = ConsumerSettings {
        max_batch_size: 10,
        max_batch_timeout: 0,
        ..ConsumerSettings::default()
    };
    let broker = open(dir, "latency.redb", &consumer).await?;
    let (stop, stopped) = watch::channel(false);
    let (observe, mut started_batches) = mpsc::unbounded_channel();
    let dispatcher =
        Dispatcher::new(broker.clone(), "bench", consumer, component.clone()).observe(observe);
    let running = tokio::spawn(dispatcher.run(stopped));

    let mut h = histogram();
    for n in 0..bench.latency_messages {
        let sent = Instant::now();
        broker.send("bench", message(bench, n)).await?;
        let batch = tokio::time::timeout(Duration::from_secs(10), started_batches.recv())
            .await
            .context("no batch started within 10 s")?
            .context("the dispatcher stopped")?;
        ensure!(
            batch.messages.len() == 1,
            "expected one message per batch at light load"
        );
        h.record(batch.at.saturating_duration_since(sent).as_micros().max(1) as u64)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.send(true)?;
    running.await?;
    println!(
        "send to handler, max_batch_timeout 0, one message at a time ({} messages):",
        bench.latency_messages
    );
    print_latency("send-to-handler", &h);
    Ok(())
}
