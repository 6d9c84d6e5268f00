//! `worker`: the simplest wasmq consumer.
//!
//! For every message of the batch it prints one line to stdout,
//!
//! ```text
//! [worker] <queue> <id> attempt <n>: <body as text, truncated>
//! ```
//!
//! and then returns `ok`, which acks every message (the implicit ack of DESIGN.md §2).
//! The body is shown as UTF-8 (invalid bytes replaced), with control characters escaped so a
//! message is always exactly one line, and cut after [`MAX_BODY_CHARS`] characters.

wit_bindgen::generate!({
    world: "consumer",
    path: "../../wit",
});

use exports::wasmq::queues::handler::Guest;
use wasmq::queues::batch::MessageBatch;

/// Characters of a body shown before it is cut with `…`.
const MAX_BODY_CHARS: usize = 200;

struct Worker;

impl Guest for Worker {
    fn handle(batch: &MessageBatch) -> Result<(), String> {
        let queue = batch.queue();
        for message in batch.messages() {
            println!(
                "[worker] {queue} {} attempt {}: {}",
                message.id,
                message.attempts,
                preview(&message.body, MAX_BODY_CHARS)
            );
        }
        Ok(())
    }
}

/// The body as one line of text: lossy UTF-8, control characters escaped, at most `max`
/// characters of the body followed by `…` when it was cut.
fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len().min(max * 2) + 3);
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

export!(Worker);

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn preview_escapes_and_truncates() {
        assert_eq!(preview(b"hello", 10), "hello");
        assert_eq!(preview(b"a\nb\tc", 10), "a\\nb\\tc");
        assert_eq!(preview(b"abcdef", 3), "abc…");
        assert_eq!(preview(b"abc", 3), "abc");
        assert_eq!(preview(&[0x61, 0xff, 0x62], 10), "a\u{fffd}b");
    }
}
