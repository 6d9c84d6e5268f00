//! `wasmq bench engine|consumer|binary|http|startup|swap`: the command line of
//! [`crate::bench`], which does the measuring and the printing. The hidden `open-backlog` is the
//! fresh process the engine bench starts to time a cold first lease on a large backlog.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::bench::{
    self, BinaryBench, ConsumerBench, DashboardLoad, EngineBench, HttpBench, StartupBench,
    SwapBench,
};
use crate::manifest::Storage;

/// The consumer the benches run unless told otherwise: the `worker` example, as
/// `scripts/build-guests.sh` builds it.
const WORKER_WASM: &str = "guest-examples/target/wasm32-wasip2/release/worker.wasm";

/// `wasmq bench WHAT`.
#[derive(Debug, Args)]
pub(super) struct BenchCommand {
    #[command(subcommand)]
    what: BenchSubcommand,
}

#[derive(Debug, Subcommand)]
enum BenchSubcommand {
    /// The queue engine on a durable redb file.
    Engine {
        /// Messages per throughput run.
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 128)]
        body_bytes: usize,
        /// Messages in the backlog run (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// Folder for the benchmark databases (default: a temporary folder, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The whole host path: engine, dispatcher and a real consumer component.
    Consumer {
        /// The consumer component.
        #[arg(long, default_value = WORKER_WASM)]
        wasm: PathBuf,
        /// Messages in the throughput run.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Messages in the latency run.
        #[arg(long, default_value_t = 1_000)]
        latency_messages: u64,
        /// Batches in flight in the throughput runs (one run per value).
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        concurrency: Vec<u32>,
        /// max_batch_size in the throughput runs.
        #[arg(long, default_value_t = 100)]
        batch_size: u32,
        /// The body of every message (e.g. `sleep:1` with the scripted guest).
        #[arg(long)]
        body: Option<String>,
        /// Use the pooling instance allocator.
        #[arg(long)]
        pooling: bool,
        /// A fresh instance for every batch (`fresh_instance = true`) instead of warm ones.
        #[arg(long)]
        fresh_instance: bool,
        /// `redb`, or a `postgres://user@host:port/db` URL to measure PostgreSQL too (next
        /// to redb; with one host and with two), in a schema of its own dropped afterwards.
        #[arg(long, default_value = "redb", value_parser = parse_storage)]
        storage: Storage,
        /// Also measure the cost of serving the dashboard: each throughput run is repeated
        /// with this many clients polling `/dashboard/api/summary` (as open browsers do), and
        /// the ratio printed.
        #[arg(long, default_value_t = 0)]
        dashboard_pollers: u32,
        /// How often each dashboard poller asks, in ms (the page asks every 2000).
        #[arg(long, default_value_t = 2000)]
        dashboard_interval_ms: u64,
        /// Idle queues added next to the benchmark's in the dashboard runs (the summary has a
        /// row for each).
        #[arg(long, default_value_t = 0)]
        dashboard_queues: u32,
        /// Pairs of runs, without and with the pollers, per max_concurrency.
        #[arg(long, default_value_t = 3)]
        dashboard_rounds: u32,
    },
    /// The real `wasmq run` process (HTTP publish → consumer component → acked) next to the
    /// engine floor, measured in the same run, and their ratio.
    Binary {
        /// The consumer component.
        #[arg(long, default_value = WORKER_WASM)]
        wasm: PathBuf,
        /// Messages per run.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// The consumer's max_concurrency (one run per value).
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        concurrency: Vec<u32>,
        /// Keep-alive connections publishing at once.
        #[arg(long, default_value_t = 4)]
        connections: u64,
    },
    /// Publishing through the HTTP API over loopback, and pull / ack.
    Http {
        /// Messages to publish.
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 8)]
        connections: u64,
        /// The webhook producer component for the producer-route run.
        #[arg(
            long,
            default_value = "guest-examples/target/wasm32-wasip2/release/webhook.wasm"
        )]
        webhook: PathBuf,
        /// Requests in the producer-route run (one message each).
        #[arg(long, default_value_t = 20_000)]
        webhook_requests: u64,
    },
    /// `wasmq run` start time with a cold and a warm compiled-component cache.
    Startup {
        /// The manifest to start (its build commands are skipped).
        #[arg(long, default_value = "examples/manifest.toml")]
        manifest: PathBuf,
        /// Starts per cache state.
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Hot swap latency: from a reload or a file change to the first batch on the new version.
    Swap {
        /// The first version of the consumer.
        #[arg(long, default_value = WORKER_WASM)]
        v1: PathBuf,
        /// The second version; it must forward messages to its `OUT` binding.
        #[arg(
            long,
            default_value = "guest-examples/target/wasm32-wasip2/release/fanout.wasm"
        )]
        v2: PathBuf,
        /// Swaps per trigger.
        #[arg(long, default_value_t = 10)]
        swaps: u32,
    },
    /// Internal: open a backlog database in a fresh process and time the first lease.
    #[command(hide = true)]
    OpenBacklog { path: PathBuf },
}

impl BenchCommand {
    /// Runs the benchmark.
    pub(super) async fn run(self) -> Result<()> {
        match self.what {
            BenchSubcommand::Engine {
                messages,
                body_bytes,
                backlog,
                dir,
            } => {
                bench::run_engine(&EngineBench {
                    dir,
                    messages,
                    body_bytes,
                    backlog,
                })
                .await
            }
            BenchSubcommand::Consumer {
                wasm,
                messages,
                latency_messages,
                concurrency,
                batch_size,
                body,
                pooling,
                fresh_instance,
                storage,
                dashboard_pollers,
                dashboard_interval_ms,
                dashboard_queues,
                dashboard_rounds,
            } => {
                bench::run_consumer(&ConsumerBench {
                    concurrency,
                    wasm,
                    messages,
                    latency_messages,
                    batch_size,
                    body,
                    pooling,
                    fresh_instance,
                    storage,
                    dashboard: (dashboard_pollers > 0).then(|| DashboardLoad {
                        pollers: dashboard_pollers,
                        interval: std::time::Duration::from_millis(dashboard_interval_ms),
                        queues: dashboard_queues,
                        rounds: dashboard_rounds,
                    }),
                })
                .await
            }
            BenchSubcommand::Binary {
                wasm,
                messages,
                concurrency,
                connections,
            } => {
                bench::run_binary(&BinaryBench {
                    wasm,
                    messages,
                    concurrency,
                    connections,
                })
                .await
            }
            BenchSubcommand::Http {
                messages,
                connections,
                webhook,
                webhook_requests,
            } => {
                bench::run_http(&HttpBench {
                    messages,
                    connections,
                    webhook,
                    webhook_requests,
                })
                .await
            }
            BenchSubcommand::Startup { manifest, runs } => {
                bench::run_startup(&StartupBench { manifest, runs }).await
            }
            BenchSubcommand::Swap { v1, v2, swaps } => {
                bench::run_swap(&SwapBench { v1, v2, swaps }).await
            }
            BenchSubcommand::OpenBacklog { path } => bench::open_backlog(&path).await,
        }
    }
}

/// `--storage` of `wasmq bench consumer`: `redb` or a `postgres://` URL.
fn parse_storage(text: &str) -> std::result::Result<Storage, String> {
    Storage::parse(text)
}
