//! `wasmq bench consumer`: the real host path end to end: messages sent through the engine
//! API, batched by the dispatcher, handled by a real component in wasmtime, settled durably.
//!
//! On redb by default. With `--storage postgres://…` the same runs are made on PostgreSQL too
//! (in a schema of their own, `wasmq_bench_<pid>`, dropped afterwards), with one host and with
//! two: two independent brokers (two connection pools, two notification listeners) with a
//! dispatcher each, in this one process, sharing the queue through the database exactly as
//! two `wasmq run` processes would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tokio::sync::{mpsc, watch};

use super::dashboard::{self, DashboardLoad};
use super::{body, cpu_time, histogram, print_latency, tempdir};
use crate::dispatch::Dispatcher;
use crate::engine::{
    self, Broker, ConsumerSettings, PostgresOptions, QueueSettings, RedbOptions, SendRequest,
};
use crate::manifest::Storage;
use crate::runtime::{ComponentOptions, ConsumerComponent, InstanceReuse, Runtime, RuntimeConfig};

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
    /// A fresh instance per batch rather than warm ones.
    pub fresh_instance: bool,
    /// Redb only, or PostgreSQL as well (measured after redb, with one and with two hosts).
    pub storage: Storage,
    /// Also measure each redb throughput run while the dashboard is served to pollers.
    pub dashboard: Option<DashboardLoad>,
}

/// Where one run keeps its queue.
#[derive(Debug, Clone, Copy)]
enum Store<'a> {
    /// A fresh redb file in this folder.
    Redb(&'a Path),
    /// A fresh schema in the PostgreSQL database at this URL.
    Postgres(&'a str),
}

impl Store<'_> {
    fn label(&self, hosts: usize) -> String {
        match (self, hosts) {
            (Store::Redb(_), _) => "redb".into(),
            (Store::Postgres(_), 1) => "PostgreSQL, 1 host".into(),
            (Store::Postgres(_), n) => format!("PostgreSQL, {n} hosts"),
        }
    }
}

/// The brokers of one run: one per host, all on the same queue `bench`.
struct Opened {
    brokers: Vec<Arc<dyn Broker>>,
    /// PostgreSQL: the URL and the schema to drop when the run is over.
    schema: Option<(String, String)>,
}

impl Opened {
    /// Creates the queue `bench` with `consumer` settings in a fresh store and connects
    /// `hosts` brokers to it (only PostgreSQL can have more than one).
    async fn open(
        store: Store<'_>,
        name: &str,
        consumer: &ConsumerSettings,
        hosts: usize,
    ) -> Result<Self> {
        let settings = QueueSettings {
            consumer: consumer.clone(),
            ..QueueSettings::default()
        };
        match store {
            Store::Redb(dir) => {
                ensure!(hosts == 1, "a redb file belongs to one host");
                let path = dir.join(format!("{name}.redb"));
                let _ = std::fs::remove_file(&path);
                let broker =
                    engine::open(engine::Storage::redb(path, RedbOptions::default())).await?;
                broker.create_queue("bench", settings).await?;
                Ok(Self {
                    brokers: vec![broker],
                    schema: None,
                })
            }
            Store::Postgres(url) => {
                let schema = format!("wasmq_bench_{}_{name}", std::process::id());
                drop_schema(url, &schema).await?;
                let mut brokers: Vec<Arc<dyn Broker>> = Vec::with_capacity(hosts);
                for _ in 0..hosts {
                    let options = PostgresOptions::default().schema(schema.clone());
                    brokers.push(engine::open(engine::Storage::postgres(url, options)).await?);
                }
                brokers[0].create_queue("bench", settings).await?;
                Ok(Self {
                    brokers,
                    schema: Some((url.to_owned(), schema)),
                })
            }
        }
    }

    /// Disconnects and drops the run's schema.
    async fn close(self) -> Result<()> {
        for broker in self.brokers {
            broker.close().await?;
        }
        if let Some((url, schema)) = self.schema {
            drop_schema(&url, &schema).await?;
        }
        Ok(())
    }
}

/// Runs `sql` on a connection of its own; returns the rows' first columns as text.
async fn admin(url: &str, sql: &str) -> Result<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    let driver = tokio::spawn(connection);
    let result = client.simple_query(sql).await;
    drop(client);
    let _ = driver.await;
    let rows = result.with_context(|| format!("running `{sql}`"))?;
    Ok(rows
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect())
}

async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    admin(url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map(drop)
}

/// The server's version and whether its commits are durable, for the report.
async fn describe_server(url: &str) -> Result<String> {
    let show = |setting: &'static str| async move {
        admin(url, &format!("SHOW {setting}"))
            .await
            .map(|rows| rows.into_iter().next().unwrap_or_default())
    };
    Ok(format!(
        "PostgreSQL {} (fsync {}, synchronous_commit {}, full_page_writes {})",
        show("server_version").await?,
        show("fsync").await?,
        show("synchronous_commit").await?,
        show("full_page_writes").await?,
    ))
}

/// Runs the throughput and the latency benchmark and prints a report.
pub async fn run_consumer(bench: &ConsumerBench) -> Result<()> {
    let wasm = std::fs::read(&bench.wasm)
        .with_context(|| format!("reading {} (build the guests first)", bench.wasm.display()))?;
    let runtime = Runtime::with_config(&RuntimeConfig {
        cache_dir: None,
        pooling_allocator: bench.pooling,
        ..RuntimeConfig::default()
    })?;
    let started = Instant::now();
    let options = ComponentOptions {
        reuse: if bench.fresh_instance {
            InstanceReuse::FRESH
        } else {
            InstanceReuse::default()
        },
        ..ComponentOptions::default()
    };
    let component = ConsumerComponent::new(&runtime, "bench", &wasm, options)?;
    println!(
        "wasmq consumer bench: component {} ({} KB) compiled in {:.0} ms; {} allocator; {} instances",
        bench.wasm.display(),
        wasm.len() / 1000,
        started.elapsed().as_secs_f64() * 1000.0,
        if runtime.pooling() {
            "pooling"
        } else {
            "on-demand"
        },
        if bench.fresh_instance {
            "fresh"
        } else {
            "warm"
        }
    );
    let dir = tempdir()?;
    let postgres = match &bench.storage {
        Storage::Redb => None,
        Storage::Postgres(url) => {
            println!("and on {}", describe_server(url).await?);
            Some(url.as_str())
        }
    };
    let mut figures = Vec::new();
    for &concurrency in &bench.concurrency {
        if let Some(load) = &bench.dashboard {
            dashboard_cost(&dir, bench, &component, concurrency, load).await?;
            continue;
        }
        let redb = Store::Redb(&dir);
        let mut row = vec![
            throughput(redb, bench, &component, concurrency, 1, None)
                .await?
                .rate,
        ];
        if let Some(url) = postgres {
            for hosts in [1, 2] {
                let store = Store::Postgres(url);
                let run = throughput(store, bench, &component, concurrency, hosts, None).await?;
                row.push(run.rate);
            }
        }
        figures.push((concurrency, row));
    }
    latency(Store::Redb(&dir), bench, &component, false).await?;
    if let Some(url) = postgres {
        latency(Store::Postgres(url), bench, &component, false).await?;
        latency(Store::Postgres(url), bench, &component, true).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if postgres.is_some() {
        println!(
            "summary, end to end msgs/s, max_batch_size {}:",
            bench.batch_size
        );
        println!("    max_concurrency   redb   PostgreSQL 1 host   PostgreSQL 2 hosts");
        for (concurrency, row) in figures {
            println!(
                "    {concurrency:>15} {:>6.0} {:>19.0} {:>20.0}",
                row[0], row[1], row[2]
            );
        }
    }
    Ok(())
}

/// Throughput without and with the dashboard served, in `load.rounds` pairs whose order
/// alternates (without, with, with, without, …) so that drift (page cache, the other core's
/// load) falls on both; prints the ratio of the means.
async fn dashboard_cost(
    dir: &Path,
    bench: &ConsumerBench,
    component: &ConsumerComponent,
    concurrency: u32,
    load: &DashboardLoad,
) -> Result<()> {
    let store = Store::Redb(dir);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..load.rounds.max(1) {
        // Without first in even rounds, with first in odd ones: a drift from one run to the
        // next falls on both sides.
        for serve in [round % 2 == 1, round % 2 == 0] {
            let run = throughput(store, bench, component, concurrency, 1, Some((load, serve)));
            let run = run.await?;
            if serve { &mut with } else { &mut without }.push(run);
        }
    }
    let mean =
        |runs: &[Run], of: fn(&Run) -> f64| runs.iter().map(of).sum::<f64>() / runs.len() as f64;
    let rate = |run: &Run| run.rate;
    // CPU time per message: what serving the dashboard adds, however busy the machine is.
    let cpu = |run: &Run| run.cpu_per_message.as_secs_f64() * 1e6;
    // Each pair ran back to back: its ratio is the least disturbed by drift over the runs.
    let mut pairs: Vec<f64> = with
        .iter()
        .zip(&without)
        .map(|(w, o)| w.rate / o.rate)
        .collect();
    pairs.sort_by(f64::total_cmp);
    let median = match pairs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => pairs[n / 2],
        n => (pairs[n / 2 - 1] + pairs[n / 2]) / 2.0,
    };
    println!(
        "dashboard cost, max_concurrency {concurrency}, {} pollers of the summary every {} ms, {} idle queues besides: {:.0} msgs/s without, {:.0} msgs/s with (means of {} runs each, ratio {:.3}); pairs' ratios {}, median {median:.3}; CPU per message {:.2} µs without, {:.2} µs with (ratio {:.3})",
        load.pollers,
        load.interval.as_millis(),
        load.queues,
        mean(&without, rate),
        mean(&with, rate),
        without.len(),
        mean(&with, rate) / mean(&without, rate),
        pairs
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        mean(&without, cpu),
        mean(&with, cpu),
        mean(&with, cpu) / mean(&without, cpu),
    );
    Ok(())
}

/// What one throughput run measured.
struct Run {
    /// Messages per second, end to end.
    rate: f64,
    /// CPU time the process used during the run, per message.
    cpu_per_message: Duration,
}

/// The `n`th message of a run.
fn message(bench: &ConsumerBench, n: u64) -> SendRequest {
    match &bench.body {
        Some(text) => SendRequest::text(text.clone()),
        None => body(64, n),
    }
}

/// 4 producers send batches of 100 while the consumer (batches of `batch_size`) keeps up.
/// With several hosts, each has its own broker and dispatcher, and the producers are spread
/// over them. With `dashboard`, the store also has its idle queues, and the dashboard is
/// served to its pollers during the run when the flag says so.
async fn throughput(
    store: Store<'_>,
    bench: &ConsumerBench,
    component: &ConsumerComponent,
    concurrency: u32,
    hosts: usize,
    dashboard: Option<(&DashboardLoad, bool)>,
) -> Result<Run> {
    let batch_size = bench.batch_size;
    let consumer = ConsumerSettings {
        max_batch_size: batch_size,
        max_batch_timeout: 1,
        ..ConsumerSettings::default()
    };
    let opened = Opened::open(store, "throughput", &consumer, hosts).await?;
    let brokers = opened.brokers.clone();
    let serving = dashboard::prepare(&brokers[0], dashboard).await?;
    let (stop, stopped) = watch::channel(false);
    let mut running = Vec::new();
    for broker in &brokers {
        let dispatcher =
            Dispatcher::new(broker.clone(), "bench", consumer.clone(), component.clone())
                .with_concurrency(concurrency);
        running.push(tokio::spawn(dispatcher.run(stopped.clone())));
    }

    let batches = bench.messages.div_ceil(100);
    let started = Instant::now();
    let cpu_started = cpu_time();
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let broker = brokers[p as usize % brokers.len()].clone();
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
    // Polling PostgreSQL costs the server a query: not too often.
    let poll = match store {
        Store::Redb(_) => Duration::from_millis(5),
        Store::Postgres(_) => Duration::from_millis(20),
    };
    while brokers[0].metrics("bench").await?.acked < total {
        ensure!(
            Instant::now() < deadline,
            "the consumer did not finish in time"
        );
        tokio::time::sleep(poll).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_started);
    let polled = match serving {
        Some(serving) => {
            let (requests, bytes) = serving.stop().await?;
            format!(
                " while serving {requests} dashboard summaries ({} kB)",
                bytes / 1000
            )
        }
        None => String::new(),
    };
    stop.send(true)?;
    for task in running {
        task.await?;
    }
    drop(brokers);
    opened.close().await?;
    let rate = total as f64 / elapsed.as_secs_f64();
    let how = if hosts > 1 {
        format!(
            " ({hosts} brokers, i.e. {hosts} connection pools and {hosts} dispatchers, in this process)"
        )
    } else {
        String::new()
    };
    let cpu_per_message = cpu / total as u32;
    println!(
        "end to end, {}{how}, max_batch_size {batch_size}, max_concurrency {concurrency}{}: {rate:.0} msgs/s ({total} messages sent, handled and acked durably in {:.2} s; sending alone took {:.2} s; process CPU {:.1} µs per message, sends included){polled}",
        store.label(hosts),
        if hosts > 1 { " each" } else { "" },
        elapsed.as_secs_f64(),
        sent.as_secs_f64(),
        cpu_per_message.as_secs_f64() * 1e6
    );
    Ok(Run {
        rate,
        cpu_per_message,
    })
}

/// One message at a time at light load, `max_batch_timeout = 0`: how long the send takes to be
/// acknowledged (its commit is durable), and the time from that acknowledgement to the batch
/// being handed to the component (lease, backlog read, instance ready). When the dispatcher
/// is woken and leases before the sender's future has returned, the second is 0. `across`: the message is sent through
/// one broker and consumed through another (PostgreSQL: the wake-up is a `NOTIFY`).
async fn latency(
    store: Store<'_>,
    bench: &ConsumerBench,
    component: &ConsumerComponent,
    across: bool,
) -> Result<()> {
    let consumer = ConsumerSettings {
        max_batch_size: 10,
        max_batch_timeout: 0,
        ..ConsumerSettings::default()
    };
    let hosts = if across { 2 } else { 1 };
    let opened = Opened::open(store, "latency", &consumer, hosts).await?;
    let sender = opened.brokers[0].clone();
    let receiver = opened.brokers[hosts - 1].clone();
    let (stop, stopped) = watch::channel(false);
    let (observe, mut started_batches) = mpsc::unbounded_channel();
    let dispatcher =
        Dispatcher::new(receiver.clone(), "bench", consumer, component.clone()).observe(observe);
    let running = tokio::spawn(dispatcher.run(stopped));

    let (mut sends, mut handed) = (histogram(), histogram());
    for n in 0..bench.latency_messages {
        let sending = Instant::now();
        sender.send("bench", message(bench, n)).await?;
        let sent = Instant::now();
        sends.record(sent.duration_since(sending).as_micros().max(1) as u64)?;
        let batch = tokio::time::timeout(Duration::from_secs(10), started_batches.recv())
            .await
            .context("no batch started within 10 s")?
            .context("the dispatcher stopped")?;
        ensure!(
            batch.messages.len() == 1,
            "expected one message per batch at light load"
        );
        handed.record(batch.at.saturating_duration_since(sent).as_micros().max(1) as u64)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.send(true)?;
    running.await?;
    drop((sender, receiver));
    opened.close().await?;
    let route = if across {
        ", sent through one host and handled by another"
    } else {
        ""
    };
    println!(
        "send to handler, {}{route}, max_batch_timeout 0, one message at a time ({} messages):",
        store.label(1).replace(", 1 host", ""),
        bench.latency_messages
    );
    print_latency("send (until acknowledged)", &sends);
    print_latency("acknowledged-to-handler", &handed);
    Ok(())
}
