//! The `host` command line: `run`, `test`, the API client commands (`send`, `queues`) and
//! `bench`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::bench::{self, ConsumerBench, EngineBench, HttpBench, StartupBench, SwapBench};
use crate::engine::{Backlog, ContentType, QueueInfo};
use crate::http::MAX_REPLAY;
use crate::http::wire::{Envelope, PeekedMessage, PublishMessage, ReplayRequest};
use crate::manifest::Storage;
use crate::{manifest, run};

/// Durable message queues for WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// How the log is written: `text` for people (colour only on a terminal, and never with
    /// `NO_COLOR`) or `json`, one object per line, for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WASMQ_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The log's format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the queues, the consumer components and the HTTP API of a manifest.
    Run {
        /// The manifest.
        #[arg(default_value = "manifest.toml")]
        manifest: PathBuf,
        /// Reload when the manifest or a component file changes (also: SIGHUP, POST /reload).
        #[arg(long)]
        watch: bool,
    },
    /// Run fixture files (TOML) against their consumer components and report per case.
    ///
    /// Exits non-zero if any case fails or a fixture file is malformed. The format is in
    /// docs/fixtures.md.
    Test {
        /// Fixture files, or folders searched for fixture files: `*.toml` files with a
        /// `[[case]]` table (hidden folders, `target` and `node_modules` are skipped).
        #[arg(default_value = "fixtures")]
        paths: Vec<PathBuf>,
        /// Also write the results as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Send one message to a queue of a running host.
    Send {
        /// The queue.
        queue: String,
        /// The body (omit it with --file; `-` reads standard input).
        body: Option<String>,
        /// How the body is encoded.
        #[arg(long, default_value = "text")]
        content_type: ContentType,
        /// Seconds before the message can be delivered.
        #[arg(long)]
        delay: Option<u32>,
        /// Deduplication key.
        #[arg(long)]
        dedup_key: Option<String>,
        /// Read the body from this file.
        #[arg(long, conflicts_with = "body")]
        file: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Inspect the queues of a running host.
    Queues {
        #[command(subcommand)]
        command: QueuesCommand,
    },
    /// Look at messages of a running host.
    Messages {
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// Work with dead-letter queues of a running host.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Measure throughput and latency.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum QueuesCommand {
    /// Every queue with its backlog.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One queue's settings and metrics.
    Info {
        /// The queue.
        queue: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop delivering a queue's messages (sends are still accepted).
    Pause {
        /// The queue.
        queue: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deliver a paused queue's messages again.
    Resume {
        /// The queue.
        queue: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete every message of a queue, delayed and in-flight ones included.
    Purge {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum MessagesCommand {
    /// Show the next messages of a queue without leasing them.
    Peek {
        /// The queue.
        queue: String,
        /// How many (1..=100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Move messages from a dead-letter queue back to a queue, oldest first.
    Replay {
        /// The dead-letter queue.
        dlq: String,
        /// The queue to move them to.
        #[arg(long)]
        to: String,
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
        #[arg(
            long,
            default_value = "guest-examples/target/wasm32-wasip2/release/worker.wasm"
        )]
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
        /// `redb`, or a `postgres://user@host:port/db` URL to measure PostgreSQL too (next
        /// to redb; with one host and with two), in a schema of its own dropped afterwards.
        #[arg(long, default_value = "redb", value_parser = parse_storage)]
        storage: Storage,
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
    /// `host run` start time with a cold and a warm compiled-component cache.
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
        #[arg(
            long,
            default_value = "guest-examples/target/wasm32-wasip2/release/worker.wasm"
        )]
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

/// Where the API of the running host is, and how to get in.
#[derive(Debug, Args)]
struct ApiArgs {
    /// Base URL of the host's API.
    #[arg(long, env = "WASMQ_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The API token, when the host requires one.
    #[arg(long, env = "WASMQ_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ApiArgs {
    /// A request for `path` on the API, with the token if there is one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let request = reqwest::Client::new().request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }
}

impl Cli {
    /// The log level when `WASMQ_LOG` does not say: benchmarks log only problems, so that
    /// guests' output does not distort their figures.
    /// Whether the command serves (`run`): it must survive writes to closed sockets, so it
    /// keeps Rust's default of ignoring SIGPIPE. The other commands print to stdout and should
    /// stop quietly when it closes (`host queues list | head -1`), as Unix tools do.
    pub fn serves(&self) -> bool {
        matches!(self.command, Command::Run { .. })
    }

    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Bench { .. } => "warn",
            // The harness reports guest output and failures itself.
            Command::Test { .. } => "error",
            _ => "info",
        }
    }

    /// Runs the command.
    pub async fn execute(self) -> Result<()> {
        match self.command {
            Command::Run { manifest, watch } => run_manifest(manifest, watch).await,
            Command::Test { paths, junit } => {
                crate::harness::report::run_cli(&paths, junit.as_deref()).await
            }
            Command::Send {
                queue,
                body,
                content_type,
                delay,
                dedup_key,
                file,
                api,
            } => {
                let bytes = match (body, file) {
                    (_, Some(file)) => std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?,
                    (Some(body), None) if body == "-" => {
                        let mut bytes = Vec::new();
                        std::io::stdin().read_to_end(&mut bytes)?;
                        bytes
                    }
                    (Some(body), None) => body.into_bytes(),
                    (None, None) => bail!("give a BODY, `-` for standard input, or --file"),
                };
                let mut message =
                    PublishMessage::from_bytes(&bytes, content_type).map_err(anyhow::Error::msg)?;
                message.delay_seconds = delay;
                message.dedup_key = dedup_key;
                let backlog: Backlog = call(
                    api.post(&format!("/queues/{queue}/messages"))
                        .json(&message),
                )
                .await?;
                println!(
                    "sent to {queue}; backlog {} message(s), {} bytes",
                    backlog.count, backlog.bytes
                );
                Ok(())
            }
            Command::Queues { command } => match command {
                QueuesCommand::List { api, json } => {
                    let queues: Vec<QueueInfo> = call(api.get("/queues")).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&queues)?);
                    } else {
                        print_table(&queues);
                    }
                    Ok(())
                }
                QueuesCommand::Pause { queue, api } => {
                    let info: QueueInfo = call(api.post(&format!("/queues/{queue}/pause"))).await?;
                    println!("queue {} paused", info.name);
                    Ok(())
                }
                QueuesCommand::Resume { queue, api } => {
                    let info: QueueInfo =
                        call(api.post(&format!("/queues/{queue}/resume"))).await?;
                    println!("queue {} resumed", info.name);
                    Ok(())
                }
                QueuesCommand::Purge { queue, force, api } => {
                    if !force && !confirm(&format!("delete every message of queue `{queue}`?"))? {
                        bail!("not purged (pass --force to purge without asking)");
                    }
                    let result: serde_json::Value =
                        call(api.post(&format!("/queues/{queue}/purge"))).await?;
                    println!("purged {} message(s) from {queue}", result["purged"]);
                    Ok(())
                }
                QueuesCommand::Info { queue, api, json } => {
                    let info: QueueInfo = call(api.get(&format!("/queues/{queue}"))).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&info)?);
                    } else {
                        print_info(&info);
                    }
                    Ok(())
                }
            },
            Command::Messages {
                command:
                    MessagesCommand::Peek {
                        queue,
                        limit,
                        api,
                        json,
                    },
            } => {
                let messages: Vec<PeekedMessage> =
                    call(api.get(&format!("/queues/{queue}/messages?limit={limit}"))).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&messages)?);
                } else {
                    for m in &messages {
                        println!(
                            "{} attempts {} {}: {}",
                            m.id, m.attempts, m.content_type, m.body
                        );
                    }
                    println!("{} message(s)", messages.len());
                }
                Ok(())
            }
            Command::Dlq {
                command:
                    DlqCommand::Replay {
                        dlq,
                        to,
                        limit,
                        api,
                    },
            } => replay(&api, &dlq, &to, limit).await,
            Command::Bench { what } => match what {
                BenchCommand::Engine {
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
                BenchCommand::Consumer {
                    wasm,
                    messages,
                    latency_messages,
                    concurrency,
                    batch_size,
                    body,
                    pooling,
                    storage,
                } => {
                    bench::run_consumer(&ConsumerBench {
                        concurrency,
                        wasm,
                        messages,
                        latency_messages,
                        batch_size,
                        body,
                        pooling,
                        storage,
                    })
                    .await
                }
                BenchCommand::Http {
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
                BenchCommand::Startup { manifest, runs } => {
                    bench::run_startup(&StartupBench { manifest, runs }).await
                }
                BenchCommand::Swap { v1, v2, swaps } => {
                    bench::run_swap(&SwapBench { v1, v2, swaps }).await
                }
                BenchCommand::OpenBacklog { path } => bench::open_backlog(&path).await,
            },
        }
    }
}

async fn run_manifest(path: PathBuf, watch: bool) -> Result<()> {
    let manifest = manifest::load(&path)?;
    // Listen for signals before announcing the host, so a signal right after the
    // announcement is a clean stop rather than the default (immediate) death.
    let mut signals = StopSignals::install()?;
    let mut host = run::start(&manifest).await?;
    if watch {
        host.watch()?;
    }
    println!(
        "wasmq host listening on http://{} (Ctrl-C stops)",
        host.addr()
    );
    signals.next().await;
    println!("stopping: finishing running batches");
    tokio::select! {
        result = host.shutdown() => result,
        _ = signals.next() => bail!("stopped at once on a second signal"),
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Moves messages in calls of at most [`MAX_REPLAY`], printing progress, until `limit` moved
/// or the queue has no more.
async fn replay(api: &ApiArgs, dlq: &str, to: &str, limit: Option<u64>) -> Result<()> {
    let mut moved = 0u64;
    loop {
        let want = limit.map_or(MAX_REPLAY, |l| (l - moved).min(MAX_REPLAY));
        if want == 0 {
            break;
        }
        let request = ReplayRequest {
            to: to.to_owned(),
            limit: Some(want),
        };
        let result: serde_json::Value =
            call(api.post(&format!("/queues/{dlq}/replay")).json(&request)).await?;
        let step = result["moved"].as_u64().unwrap_or(0);
        moved += step;
        if step > 0 {
            eprint!("\rreplayed {moved} message(s) from {dlq} to {to}");
        }
        if step < want {
            break;
        }
    }
    eprintln!();
    println!("replayed {moved} message(s) from {dlq} to {to}");
    Ok(())
}

/// `--storage` of `host bench consumer`: `redb` or a `postgres://` URL.
fn parse_storage(text: &str) -> std::result::Result<Storage, String> {
    Storage::parse(text)
}

/// Asks a yes/no question on the terminal; `false` when standard input is not a terminal.
fn confirm(question: &str) -> Result<bool> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Sends an API request and unwraps its envelope; API errors become one readable line.
async fn call<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<T> {
    let response = request
        .send()
        .await
        .context("the host's API did not answer (is `host run` running? see --url)")?;
    let status = response.status();
    let envelope: Envelope<T> = response
        .json()
        .await
        .with_context(|| format!("the host answered {status} with an unexpected body"))?;
    match (envelope.success, envelope.result) {
        (true, Some(result)) => Ok(result),
        _ => {
            let errors: Vec<_> = envelope
                .errors
                .iter()
                .map(|e| format!("{} ({})", e.message, e.code))
                .collect();
            bail!("{}", errors.join("; "))
        }
    }
}

fn print_table(queues: &[QueueInfo]) {
    println!(
        "{:<24} {:>10} {:>12} {:>10} {:>9} {:>10} {:>8}",
        "QUEUE", "BACKLOG", "BYTES", "IN FLIGHT", "DELAYED", "ACKED", "PAUSED"
    );
    for q in queues {
        let m = &q.metrics;
        println!(
            "{:<24} {:>10} {:>12} {:>10} {:>9} {:>10} {:>8}",
            q.name,
            m.backlog.count,
            m.backlog.bytes,
            m.in_flight,
            m.delayed,
            m.acked,
            if q.paused { "yes" } else { "no" }
        );
    }
}

fn print_info(q: &QueueInfo) {
    let m = &q.metrics;
    let c = &q.settings.consumer;
    println!(
        "queue {}{}",
        q.name,
        if q.paused { " (paused)" } else { "" }
    );
    println!(
        "  backlog        {} message(s), {} bytes, oldest {}",
        m.backlog.count,
        m.backlog.bytes,
        m.backlog
            .oldest_timestamp_ms
            .map_or("-".into(), |t| t.to_string())
    );
    println!("  in flight      {}", m.in_flight);
    println!("  delayed        {}", m.delayed);
    println!(
        "  totals         sent {}, acked {}, retried {}, dead-lettered {}, dropped {}, expired {}",
        m.sent, m.acked, m.retried, m.dead_lettered, m.dropped, m.expired
    );
    println!(
        "  consumer       max_batch_size {}, max_batch_timeout {} s, max_retries {}, retry_delay {} s, dead_letter_queue {}",
        c.max_batch_size,
        c.max_batch_timeout,
        c.max_retries,
        c.retry_delay,
        c.dead_letter_queue.as_deref().unwrap_or("-")
    );
    println!(
        "  queue          delivery_delay {} s, message_retention_period {} s, dedup_window {} s",
        q.settings.delivery_delay, q.settings.message_retention_period, q.settings.dedup_window
    );
}
