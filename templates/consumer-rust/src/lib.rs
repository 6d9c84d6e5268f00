//! `{{name}}`: a wasmq consumer.
//!
//! The host hands it batches of messages from the queue its manifest entry consumes
//! (`manifest.toml`). For each message it logs one line and acks it; returning `Ok` acks
//! anything left, `Err` (or a panic) retries every message not acked yet.
//!
//! The contract is `wit/queues.wit`, world `consumer`.

wit_bindgen::generate!({ world: "consumer", path: "wit" });

use exports::wasmq::queues::handler::Guest;
use wasmq::queues::batch::MessageBatch;

struct Consumer;

impl Guest for Consumer {
    fn handle(batch: &MessageBatch) -> Result<(), String> {
        for message in batch.messages() {
            let body = String::from_utf8_lossy(&message.body);
            println!(
                "[{{name}}] {} attempt {}: {body}",
                message.id, message.attempts
            );
            batch.ack(&message.id);
        }
        Ok(())
    }
}

export!(Consumer);
