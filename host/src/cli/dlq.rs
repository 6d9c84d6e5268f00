//! `wasmq dlq replay`: moves messages from a dead-letter queue back to a queue, oldest first.
//! The API moves at most [`MAX_REPLAY`] a call, so the command calls it until it has moved
//! what was asked or the dead-letter queue is empty, showing progress on stderr.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::client::{ApiArgs, print_json_or};
use crate::http::MAX_REPLAY;
use crate::http::wire::ReplayRequest;

/// `wasmq dlq COMMAND`.
#[derive(Debug, Args)]
pub(super) struct DlqCommand {
    #[command(subcommand)]
    command: DlqSubcommand,
}

#[derive(Debug, Subcommand)]
enum DlqSubcommand {
    /// Move messages from a dead-letter queue back to a queue, oldest first.
    Replay(ReplayCommand),
}

impl DlqCommand {
    /// Runs the subcommand.
    pub(super) async fn run(self) -> Result<()> {
        match self.command {
            DlqSubcommand::Replay(command) => command.run().await,
        }
    }
}

/// `wasmq dlq replay DLQ --to QUEUE [--limit N]`.
#[derive(Debug, Args)]
struct ReplayCommand {
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
}

impl ReplayCommand {
    /// Moves messages in calls of at most [`MAX_REPLAY`], printing progress, until `limit`
    /// moved or the queue has no more.
    async fn run(self) -> Result<()> {
        let Self {
            dlq,
            to,
            limit,
            api,
        } = self;
        let mut moved = 0u64;
        loop {
            let want = limit.map_or(MAX_REPLAY, |l| (l - moved).min(MAX_REPLAY));
            if want == 0 {
                break;
            }
            let request = ReplayRequest {
                to: to.clone(),
                limit: Some(want),
            };
            let result: serde_json::Value = api
                .post_json(&format!("/queues/{dlq}/replay"), &request)
                .await?;
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
        print_json_or(&serde_json::json!({ "moved": moved }), api.json, |_| {
            println!("replayed {moved} message(s) from {dlq} to {to}");
        })
    }
}
