//! The `wasmq` command line: the parser, the global flags and the dispatch to one module per
//! command.
//!
//! - `run`: `wasmq run`, the host itself.
//! - `test`: `wasmq test`, fixture files through the [harness](crate::harness).
//! - `new`: `wasmq new`, a project folder for a new component, from embedded templates.
//! - `send`, `queues`, `messages`, `dlq`: clients of a running host's API; what they share
//!   (where the API is, its envelope, output, closed pipes) is in `client`.
//! - `bench`: `wasmq bench`, the front of [`crate::bench`].
//!
//! Each command is a clap [`Args`](clap::Args) struct whose `run` method is the command.

mod bench;
mod build;
mod client;
mod compact;
mod completions;
mod dlq;
mod messages;
mod new;
mod queues;
mod run;
mod schema;
mod send;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Durable message queues for WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "wasmq", version, about)]
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
    Run(run::RunCommand),
    /// Run the build command of each component of a manifest, output streamed.
    Build(build::BuildCommand),
    /// Run fixture files (TOML) against their consumer components and report per case.
    ///
    /// Exits non-zero if any case fails or a fixture file is malformed. The format is in
    /// docs/fixtures.md.
    Test(test::TestCommand),
    /// Create a project folder for a consumer or producer component in Rust, Python or
    /// JavaScript, ready to build, run and test.
    New(new::NewCommand),
    /// Send one message to a queue of a running host.
    Send(send::SendCommand),
    /// Inspect the queues of a running host.
    Queues(queues::QueuesCommand),
    /// Look at messages of a running host.
    Messages(messages::MessagesCommand),
    /// Work with dead-letter queues of a running host.
    Dlq(dlq::DlqCommand),
    /// Measure throughput and latency.
    Bench(bench::BenchCommand),
    /// Shrink a stopped host's queue file after a large backlog drained (a running host
    /// compacts on its own when idle).
    Compact(compact::CompactCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsCommand),
    /// Print the JSON Schema of manifest.toml, for editors.
    Schema(schema::SchemaCommand),
}

impl Cli {
    /// Sets the process up for the command, before anything else runs. The command that
    /// serves (`run`) must survive writes to closed sockets, so it keeps Rust's default of
    /// ignoring SIGPIPE; the others print to stdout and stop quietly when it closes
    /// (`wasmq queues list | head -1`), as Unix tools do.
    pub fn prepare_process(&self) {
        if !matches!(self.command, Command::Run(_)) {
            client::stop_quietly_on_closed_pipe();
        }
    }

    /// The log level when `WASMQ_LOG` does not say: benchmarks log only problems, so that
    /// guests' output does not distort their figures.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Bench(_) => "warn",
            // The harness reports guest output and failures itself.
            Command::Test(_) => "error",
            _ => "info",
        }
    }

    /// Runs the command.
    pub async fn execute(self) -> Result<()> {
        match self.command {
            Command::Run(command) => command.run().await,
            Command::Build(command) => command.run().await,
            Command::Test(command) => command.run().await,
            Command::New(command) => command.run().await,
            Command::Send(command) => command.run().await,
            Command::Queues(command) => command.run().await,
            Command::Messages(command) => command.run().await,
            Command::Dlq(command) => command.run().await,
            Command::Bench(command) => command.run().await,
            Command::Compact(command) => command.run().await,
            Command::Completions(command) => command.run(),
            Command::Schema(command) => command.run(),
        }
    }
}
