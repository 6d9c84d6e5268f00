//! `wasmq queues list|info|pause|resume|purge`: looks at and operates the queues of a running
//! host. `purge` asks first, and without a terminal to ask on it refuses unless `--force`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::client::{ApiArgs, print_json_or};
use crate::engine::QueueInfo;

/// `wasmq queues COMMAND`.
#[derive(Debug, Args)]
pub(super) struct QueuesCommand {
    #[command(subcommand)]
    command: QueuesSubcommand,
}

#[derive(Debug, Subcommand)]
enum QueuesSubcommand {
    /// Every queue with its backlog.
    List(ListCommand),
    /// One queue's settings and metrics.
    Info(InfoCommand),
    /// Stop delivering a queue's messages (sends are still accepted).
    Pause(QueueArgs),
    /// Deliver a paused queue's messages again.
    Resume(QueueArgs),
    /// Delete every message of a queue, delayed and in-flight ones included.
    Purge(PurgeCommand),
}

impl QueuesCommand {
    /// Runs the subcommand.
    pub(super) async fn run(self) -> Result<()> {
        match self.command {
            QueuesSubcommand::List(command) => command.run().await,
            QueuesSubcommand::Info(command) => command.run().await,
            QueuesSubcommand::Pause(queue) => queue.switch("pause", "paused").await,
            QueuesSubcommand::Resume(queue) => queue.switch("resume", "resumed").await,
            QueuesSubcommand::Purge(command) => command.run().await,
        }
    }
}

/// `wasmq queues list`.
#[derive(Debug, Args)]
struct ListCommand {
    #[command(flatten)]
    api: ApiArgs,
}

impl ListCommand {
    async fn run(self) -> Result<()> {
        let queues: Vec<QueueInfo> = self.api.get("/queues").await?;
        print_json_or(queues.as_slice(), self.api.json, print_table)
    }
}

/// `wasmq queues info QUEUE`.
#[derive(Debug, Args)]
struct InfoCommand {
    /// The queue.
    queue: String,
    #[command(flatten)]
    api: ApiArgs,
}

impl InfoCommand {
    async fn run(self) -> Result<()> {
        let info: QueueInfo = self.api.get(&format!("/queues/{}", self.queue)).await?;
        print_json_or(&info, self.api.json, print_info)
    }
}

/// The queue of `wasmq queues pause` and `resume`.
#[derive(Debug, Args)]
struct QueueArgs {
    /// The queue.
    queue: String,
    #[command(flatten)]
    api: ApiArgs,
}

impl QueueArgs {
    /// Calls `POST /queues/QUEUE/{action}` and says the queue is `done`.
    async fn switch(self, action: &str, done: &str) -> Result<()> {
        let info: QueueInfo = self
            .api
            .post(&format!("/queues/{}/{action}", self.queue))
            .await?;
        print_json_or(&info, self.api.json, |info| {
            println!("queue {} {done}", info.name);
        })
    }
}

/// `wasmq queues purge QUEUE [--force]`.
#[derive(Debug, Args)]
struct PurgeCommand {
    /// The queue.
    queue: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    api: ApiArgs,
}

impl PurgeCommand {
    async fn run(self) -> Result<()> {
        let queue = self.queue;
        if !self.force && !confirm(&format!("delete every message of queue `{queue}`?"))? {
            bail!("not purged (pass --force to purge without asking)");
        }
        let result: serde_json::Value = self.api.post(&format!("/queues/{queue}/purge")).await?;
        print_json_or(&result, self.api.json, |result| {
            println!("purged {} message(s) from {queue}", result["purged"]);
        })
    }
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

/// The queues as a table, a row each, columns as wide as their content.
fn print_table(queues: &[QueueInfo]) {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header([
            "QUEUE",
            "BACKLOG",
            "BYTES",
            "IN FLIGHT",
            "DELAYED",
            "ACKED",
            "PAUSED",
        ]);
    for q in queues {
        let m = &q.metrics;
        table.add_row([
            q.name.clone(),
            m.backlog.count.to_string(),
            m.backlog.bytes.to_string(),
            m.in_flight.to_string(),
            m.delayed.to_string(),
            m.acked.to_string(),
            if q.paused { "yes" } else { "no" }.to_owned(),
        ]);
    }
    for column in 1..6 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    println!("{table}");
}

/// One queue's settings and metrics, a line a group.
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
