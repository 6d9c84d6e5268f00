//! `wasmq messages peek`: shows the next messages of a queue of a running host without leasing
//! them, so looking does not change what consumers get.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::client::{ApiArgs, print_json_or};
use crate::http::wire::PeekedMessage;

/// `wasmq messages COMMAND`.
#[derive(Debug, Args)]
pub(super) struct MessagesCommand {
    #[command(subcommand)]
    command: MessagesSubcommand,
}

#[derive(Debug, Subcommand)]
enum MessagesSubcommand {
    /// Show the next messages of a queue without leasing them.
    Peek(PeekCommand),
}

impl MessagesCommand {
    /// Runs the subcommand.
    pub(super) async fn run(self) -> Result<()> {
        match self.command {
            MessagesSubcommand::Peek(command) => command.run().await,
        }
    }
}

/// `wasmq messages peek QUEUE [--limit N]`.
#[derive(Debug, Args)]
struct PeekCommand {
    /// The queue.
    queue: String,
    /// How many (1..=100).
    #[arg(long, default_value_t = 10)]
    limit: u32,
    #[command(flatten)]
    api: ApiArgs,
}

impl PeekCommand {
    async fn run(self) -> Result<()> {
        let messages: Vec<PeekedMessage> = self
            .api
            .get(&format!(
                "/queues/{}/messages?limit={}",
                self.queue, self.limit
            ))
            .await?;
        print_json_or(messages.as_slice(), self.api.json, print_messages)
    }
}

/// A line a message, then how many.
fn print_messages(messages: &[PeekedMessage]) {
    for m in messages {
        println!(
            "{} attempts {} {}: {}",
            m.id, m.attempts, m.content_type, m.body
        );
    }
    println!("{} message(s)", messages.len());
}
