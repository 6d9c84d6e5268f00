//! `wasmq send`: publishes one message to a queue of a running host and prints the queue's
//! backlog after it. The body is an argument, standard input (`-`) or a file (`--file`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::client::{ApiArgs, print_json_or};
use crate::engine::{Backlog, ContentType};
use crate::http::wire::PublishMessage;

/// `wasmq send QUEUE [BODY]`.
#[derive(Debug, Args)]
pub(super) struct SendCommand {
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
}

impl SendCommand {
    /// Sends the message.
    pub(super) async fn run(self) -> Result<()> {
        let bytes = match (self.body, self.file) {
            (_, Some(file)) => {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            }
            (Some(body), None) if body == "-" => {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes)?;
                bytes
            }
            (Some(body), None) => body.into_bytes(),
            (None, None) => bail!("give a BODY, `-` for standard input, or --file"),
        };
        let mut message =
            PublishMessage::from_bytes(&bytes, self.content_type).map_err(anyhow::Error::msg)?;
        message.delay_seconds = self.delay;
        message.dedup_key = self.dedup_key;
        let queue = self.queue;
        let backlog: Backlog = self
            .api
            .post_json(&format!("/queues/{queue}/messages"), &message)
            .await?;
        let json = self.api.json;
        print_json_or(&backlog, json, |backlog| {
            println!(
                "sent to {queue}; backlog {} message(s), {} bytes",
                backlog.count, backlog.bytes
            );
        })
    }
}
