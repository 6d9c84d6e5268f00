//! `fanout`: a consumer that forwards every message to another queue.
//!
//! For each message of the batch, in order, it sends the body (same content type) to the queue
//! bound to the binding name [`OUT`] with `producer::send`, using the message id as the
//! dedup key, and acks the message once the send succeeded. If a send fails, `handle` stops
//! and returns `err` with a description of the send error: the messages not forwarded yet are
//! retried, and the ones already forwarded stay acked. Should the wasmq run the batch again
//! anyway (a crash, a lost ack), the dedup key keeps the copy from being stored twice inside
//! the target queue's dedup window.
//!
//! Manifest example:
//!
//! ```toml
//! [components.fanout]
//! source = "guest-examples/target/wasm32-wasip2/release/fanout.wasm"
//! consumer = { queue = "jobs" }
//! producers = { OUT = "jobs-copy" }
//! ```

wit_bindgen::generate!({
    world: "consumer",
    path: "../../wit",
});

use exports::wasmq::queues::handler::Guest;
use wasmq::queues::batch::MessageBatch;
use wasmq::queues::producer;
use wasmq::queues::types::{SendError, SendRequest};

/// The binding the messages are forwarded to.
pub const OUT: &str = "OUT";

struct Fanout;

impl Guest for Fanout {
    fn handle(batch: &MessageBatch) -> Result<(), String> {
        let queue = batch.queue();
        for message in batch.messages() {
            let request = SendRequest {
                body: message.body,
                content_type: message.content_type,
                delay_seconds: None,
                dedup_key: Some(message.id.clone()),
            };
            match producer::send(OUT, &request) {
                Ok(_) => {
                    println!("[fanout] {queue} {} -> {OUT}", message.id);
                    batch.ack(&message.id);
                }
                Err(e) => {
                    let description = describe(&e);
                    eprintln!(
                        "[fanout] {queue} {} -> {OUT} failed: {description}",
                        message.id
                    );
                    return Err(description);
                }
            }
        }
        Ok(())
    }
}

/// A readable description of a send error (wit-bindgen's `Display` is only the `Debug` text).
pub fn describe(error: &SendError) -> String {
    match error {
        SendError::UnknownBinding(name) => format!("unknown binding `{name}`"),
        SendError::MessageTooLarge(n) => {
            format!("message too large: {n} bytes (limit 128000)")
        }
        SendError::BatchTooLarge(n) => format!("batch too large: {n} bytes (limit 256000)"),
        SendError::TooManyMessages(n) => format!("too many messages: {n} (limit 100)"),
        SendError::EmptyBatch => "empty batch".to_string(),
        SendError::InvalidDelay(n) => format!("invalid delay: {n} s (limit 86400)"),
        SendError::InvalidBody(why) => format!("invalid body: {why}"),
        SendError::Unavailable(why) => format!("queue storage unavailable: {why}"),
    }
}

export!(Fanout);
