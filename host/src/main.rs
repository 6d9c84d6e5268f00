//! The `host` command.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmq_host::bench::{self, EngineBench};

/// Durable message queues for WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure throughput and latency.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
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
    /// Internal: open a backlog database in a fresh process and time the first lease.
    #[command(hide = true)]
    OpenBacklog { path: PathBuf },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WASMQ_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
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
            BenchCommand::OpenBacklog { path } => bench::open_backlog(&path).await,
        },
    }
}
