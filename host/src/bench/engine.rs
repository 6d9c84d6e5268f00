//! `wasmq bench engine`: throughput and latency of the queue engine on a real, durable redb
//! file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::{body, histogram, print_latency, tempdir};
use crate::engine::{self, Broker, LeaseOptions, Outcome, QueueSettings, RedbOptions, Storage};

/// What to measure.
#[derive(Debug, Clone)]
pub struct EngineBench {
    /// Folder for the benchmark databases (a temporary one if `None`).
    pub dir: Option<PathBuf>,
    /// Messages per throughput run.
    pub messages: u64,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Messages in the backlog run (0 skips it).
    pub backlog: u64,
}

/// Runs every engine benchmark and prints a report.
pub async fn run_engine(bench: &EngineBench) -> Result<()> {
    let tmp;
    let dir = match &bench.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    println!(
        "wasmq engine bench: {} messages of {} bytes per run, durable commits, {} cores",
        bench.messages,
        bench.body_bytes,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for pipelines in [1, 4] {
        let separate = cycle(&dir, bench, pipelines, Cycle::Separate).await?;
        let fused = full_cycle(&dir, bench, pipelines).await?;
        println!(
            "    settle + lease in one commit: {:.2}× the separate commits",
            fused / separate
        );
    }
    concurrent_senders(&dir, bench, 64).await?;
    if bench.backlog > 0 {
        backlog(&dir, bench).await?;
    }
    if bench.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn fresh_broker(dir: &Path, name: &str) -> Result<Arc<dyn Broker>> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let broker = engine::open(Storage::redb(path, RedbOptions::default())).await?;
    broker
        .create_queue("bench", QueueSettings::default())
        .await?;
    Ok(broker)
}

/// How a benchmark cycle moves its batch through the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cycle {
    /// Send, lease and settle each in a transaction of its own.
    Separate,
    /// Send, then settle the previous batch and lease this one in one transaction
    /// ([`Broker::settle_and_lease`]), as the push dispatcher does while a backlog lasts.
    Fused,
}

/// The engine floor end-to-end runs are compared with: `pipelines` tasks each send a batch of
/// 100, then settle the previous batch (all acked) and lease this one in one commit. Returns
/// messages per second.
pub(super) async fn full_cycle(dir: &Path, bench: &EngineBench, pipelines: u64) -> Result<f64> {
    cycle(dir, bench, pipelines, Cycle::Fused).await
}

/// `pipelines` tasks each loop through `cycles` batches of 100 (`how`: with separate or fused
/// settle and lease), acking every message; returns messages per second.
async fn cycle(dir: &Path, bench: &EngineBench, pipelines: u64, how: Cycle) -> Result<f64> {
    let broker = fresh_broker(dir, "cycle.redb").await?;
    let cycles = (bench.messages / 100 / pipelines).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..pipelines {
        let broker = broker.clone();
        let body_bytes = bench.body_bytes;
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut delivered = 0u64;
            let mut acks = Vec::new();
            for c in 0..cycles {
                let t = Instant::now();
                let batch = (0..100)
                    .map(|i| body(body_bytes, (p << 40) | (c * 100 + i)))
                    .collect();
                broker.send_batch("bench", batch, None).await?;
                let options = LeaseOptions::new(100, 30_000);
                let leased = match how {
                    Cycle::Separate => broker.lease("bench", options).await?,
                    Cycle::Fused => {
                        let settled = std::mem::take(&mut acks);
                        broker
                            .settle_and_lease("bench", settled, options)
                            .await?
                            .1
                            .messages
                    }
                };
                delivered += leased.len() as u64;
                acks = leased.iter().map(|m| (m.lease, Outcome::Ack)).collect();
                if how == Cycle::Separate {
                    broker.settle("bench", std::mem::take(&mut acks)).await?;
                }
                h.record(t.elapsed().as_micros() as u64)?;
            }
            broker.settle("bench", acks).await?;
            anyhow::Ok((h, delivered))
        }));
    }
    let mut h = histogram();
    let mut delivered = 0;
    for task in tasks {
        let (task_h, task_delivered) = task.await??;
        h.add(task_h)?;
        delivered += task_delivered;
    }
    let elapsed = started.elapsed();
    let metrics = broker.metrics("bench").await?;
    ensure!(
        metrics.acked == delivered && metrics.backlog.count == 0,
        "full cycle lost track of messages: {metrics:?}"
    );
    let rate = delivered as f64 / elapsed.as_secs_f64();
    let steps = match how {
        Cycle::Separate => "send 100 → lease 100 → ack 100",
        Cycle::Fused => "send 100 → ack previous 100 + lease 100",
    };
    println!(
        "full cycle ({steps}), {pipelines} pipeline(s): {rate:.0} msgs/s ({delivered} messages in {:.2} s)",
        elapsed.as_secs_f64()
    );
    print_latency("cycle", &h);
    broker.close().await?;
    Ok(rate)
}

/// `senders` tasks each send single messages as fast as they are acknowledged.
async fn concurrent_senders(dir: &Path, bench: &EngineBench, senders: u64) -> Result<()> {
    let broker = fresh_broker(dir, "senders.redb").await?;
    let per_sender = (bench.messages / senders).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let broker = broker.clone();
        let body_bytes = bench.body_bytes;
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            for i in 0..per_sender {
                let t = Instant::now();
                broker
                    .send("bench", body(body_bytes, (s << 40) | i))
                    .await?;
                h.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(h)
        }));
    }
    let mut h = histogram();
    for task in tasks {
        h.add(task.await??)?;
    }
    let elapsed = started.elapsed();
    let sent = broker.metrics("bench").await?.sent;
    ensure!(
        sent == senders * per_sender,
        "expected {} sends, counted {sent}",
        senders * per_sender
    );
    println!(
        "{senders} concurrent single-message senders: {:.0} msgs/s ({sent} messages in {:.2} s)",
        sent as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    print_latency("send", &h);
    Ok(broker.close().await?)
}

/// Fills a backlog, then measures in a fresh process how long opening it and serving the
/// first lease take, and the memory that needs.
async fn backlog(dir: &Path, bench: &EngineBench) -> Result<()> {
    let path = dir.join("backlog.redb");
    let broker = fresh_broker(dir, "backlog.redb").await?;
    let started = Instant::now();
    let batches = bench.backlog.div_ceil(100);
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        let broker = broker.clone();
        let body_bytes = bench.body_bytes;
        tasks.push(tokio::spawn(async move {
            let mut b = worker;
            while b < batches {
                let batch = (0..100).map(|i| body(body_bytes, b * 100 + i)).collect();
                broker.send_batch("bench", batch, None).await?;
                b += 4;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let count = broker.metrics("bench").await?.backlog.count;
    let full_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "backlog: filled {count} messages in {:.1} s ({:.0} msgs/s, 4 senders, batches of 100); database {} MB",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64(),
        full_bytes / 1_000_000
    );
    broker.close().await?;

    let exe = std::env::current_exe().context("finding the host binary")?;
    let output = tokio::process::Command::new(exe)
        .args(["bench", "open-backlog"])
        .arg(&path)
        .output()
        .await
        .context("running the backlog open probe")?;
    ensure!(
        output.status.success(),
        "backlog open probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    drain_and_compact(&path, count, full_bytes).await
}

/// Drains the backlog of `count` at `path`, a file of `full_bytes` (acking every message,
/// settle and lease in one commit), printing the rate of each tenth, then compacts the file
/// and prints how much of its full size it kept.
async fn drain_and_compact(path: &Path, count: u64, full_bytes: u64) -> Result<()> {
    let never = engine::Compaction {
        min_file_bytes: u64::MAX,
        ..engine::Compaction::default()
    };
    let options = RedbOptions {
        compaction: never,
        ..RedbOptions::default()
    };
    let broker = engine::open(Storage::redb(path, options)).await?;
    let tenth = (count / 10).max(1);
    let (mut drained, mut acks, mut rates) = (0u64, Vec::new(), Vec::new());
    // The current tenth: when it began, and how many had drained then.
    let (started, mut slice, mut slice_from) = (Instant::now(), Instant::now(), 0);
    loop {
        let (_, leased) = broker
            .settle_and_lease("bench", acks, LeaseOptions::new(100, 30_000))
            .await?;
        if leased.messages.is_empty() {
            break;
        }
        drained += leased.messages.len() as u64;
        acks = leased
            .messages
            .iter()
            .map(|m| (m.lease, Outcome::Ack))
            .collect();
        if drained - slice_from >= tenth {
            let rate = (drained - slice_from) as f64 / slice.elapsed().as_secs_f64();
            rates.push(format!("{rate:.0}"));
            (slice, slice_from) = (Instant::now(), drained);
        }
    }
    broker.close().await?;
    ensure!(drained == count, "drained {drained} of {count} messages");
    println!(
        "backlog drain: {drained} messages in {:.1} s ({:.0} msgs/s); msgs/s by tenth: {}",
        started.elapsed().as_secs_f64(),
        drained as f64 / started.elapsed().as_secs_f64(),
        rates.join(" ")
    );
    let path = path.to_owned();
    let done = tokio::task::spawn_blocking(move || engine::compact_file(&path)).await??;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "compaction: the drained file {:.1} MB → {:.2} MB in {:.2} s ({:.2} % of its full {:.1} MB)",
        mb(done.before_bytes),
        mb(done.after_bytes),
        done.took.as_secs_f64(),
        100.0 * done.after_bytes as f64 / full_bytes as f64,
        mb(full_bytes)
    );
    Ok(())
}

/// In a fresh process: opens the backlog database at `path`, leases one batch and prints the
/// timings and the process's peak memory.
pub async fn open_backlog(path: &Path) -> Result<()> {
    let started = Instant::now();
    let broker = engine::open(Storage::redb(path, RedbOptions::default())).await?;
    let opened = started.elapsed();
    let leased = broker
        .lease("bench", LeaseOptions::new(100, 30_000))
        .await?;
    let first_lease = started.elapsed();
    ensure!(
        leased.len() == 100,
        "expected a full first lease, got {}",
        leased.len()
    );
    let backlog = broker.metrics("bench").await?.backlog.count;
    println!(
        "backlog of {backlog}: open {:.0} ms, open + first lease of 100 {:.0} ms, peak RSS {} MB",
        ms(opened),
        ms(first_lease),
        peak_rss_kb().map_or("?".into(), |kb| (kb / 1024).to_string())
    );
    Ok(broker.close().await?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The process's peak resident set size (Linux), in KiB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
