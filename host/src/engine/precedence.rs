//! The batch precedence rules of DESIGN §2, as a pure function.
//!
//! A consumer calls `ack`, `retry`, `ack-all` and `retry-all` on its batch in any order, then
//! returns `ok` or fails. [`resolve`] turns that record into one [`Outcome`] per message:
//!
//! - the first call on a message wins; later calls on it are ignored;
//! - a call on a single message beats `ack-all` / `retry-all`, whichever came first;
//! - the first of `ack-all` / `retry-all` wins;
//! - messages with no call are acked if the handler returned `ok` and retried if it failed
//!   (returned `err`, trapped or timed out);
//! - retry delay: `retry(id, delay)` > `retry-all(delay)` > the consumer's `retry_delay`
//!   (the last one is applied by the broker, signalled here by `None`).
//!
//! [`fate`] then decides what a retried message comes to: redelivery after its delay, or the
//! dead-letter queue (or deletion) once its retries are used up. The engine settles with it and
//! the fixture harness predicts with it, so the two cannot disagree.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::types::{ConsumerSettings, MessageId, Outcome};

/// One call a consumer made on its batch, in the order made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCall {
    /// `ack(id)`.
    Ack(MessageId),
    /// `retry(id, delay-seconds)`.
    Retry(MessageId, Option<u32>),
    /// `ack-all()`.
    AckAll,
    /// `retry-all(delay-seconds)`.
    RetryAll(Option<u32>),
}

/// How the handler finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerResult {
    /// It returned `ok`.
    Ok,
    /// It returned `err`, trapped, ran out of memory or time.
    Failed,
}

/// A call that had no effect, and why (the host logs these as warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredCall {
    /// The call.
    pub call: BatchCall,
    /// Why it was ignored.
    pub reason: &'static str,
}

/// The per-message outcomes, in the batch's order, and the ignored calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// One outcome for every message of the batch.
    pub outcomes: Vec<(MessageId, Outcome)>,
    /// Calls that changed nothing.
    pub ignored: Vec<IgnoredCall>,
}

/// Applies the precedence rules to a batch of `ids` given the consumer's `calls` and how its
/// handler finished.
pub fn resolve(ids: &[MessageId], calls: &[BatchCall], result: HandlerResult) -> Resolution {
    let mut per_message: HashMap<MessageId, BatchCall> = HashMap::with_capacity(ids.len());
    let mut batch_wide: Option<BatchCall> = None;
    let mut ignored = Vec::new();
    let in_batch: HashSet<&MessageId> = ids.iter().collect();

    for &call in calls {
        match call {
            BatchCall::Ack(id) | BatchCall::Retry(id, _) => {
                if !in_batch.contains(&id) {
                    ignored.push(IgnoredCall {
                        call,
                        reason: "the message is not in this batch",
                    });
                } else if let Entry::Vacant(first) = per_message.entry(id) {
                    first.insert(call);
                } else {
                    ignored.push(IgnoredCall {
                        call,
                        reason: "an earlier call already settled this message",
                    });
                }
            }
            BatchCall::AckAll | BatchCall::RetryAll(_) => {
                if batch_wide.is_some() {
                    ignored.push(IgnoredCall {
                        call,
                        reason: "an earlier ack-all or retry-all already settled the batch",
                    });
                } else {
                    batch_wide = Some(call);
                }
            }
        }
    }

    let batch_retry_delay = match batch_wide {
        Some(BatchCall::RetryAll(delay)) => delay,
        _ => None,
    };
    let outcomes = ids
        .iter()
        .map(|id| {
            let outcome = match per_message.get(id).copied().or(batch_wide) {
                Some(BatchCall::Ack(_) | BatchCall::AckAll) => Outcome::Ack,
                Some(BatchCall::Retry(_, delay)) => Outcome::Retry {
                    delay_seconds: delay.or(batch_retry_delay),
                },
                Some(BatchCall::RetryAll(delay)) => Outcome::Retry {
                    delay_seconds: delay,
                },
                None => match result {
                    HandlerResult::Ok => Outcome::Ack,
                    HandlerResult::Failed => Outcome::Retry {
                        delay_seconds: None,
                    },
                },
            };
            (*id, outcome)
        })
        .collect();
    Resolution { outcomes, ignored }
}

/// What becomes of a message whose attempt failed (an [`Outcome::Retry`], an expired lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered again after this many seconds.
    Retry {
        /// The delay actually applied: the explicit one, else the consumer's `retry_delay`.
        delay_seconds: u32,
    },
    /// Retries exhausted: moved to the consumer's `dead_letter_queue`.
    DeadLetter,
    /// Retries exhausted and no `dead_letter_queue`: deleted (and logged).
    Drop,
}

/// The fate of a message that failed its `attempts`-th delivery (DESIGN §2 "Retries
/// exhausted"): retried while `attempts <= max_retries`, after `delay_seconds` or the
/// consumer's `retry_delay`; then dead-lettered if a `dead_letter_queue` is set, else dropped.
pub fn fate(attempts: u32, settings: &ConsumerSettings, delay_seconds: Option<u32>) -> Fate {
    if attempts <= settings.max_retries {
        Fate::Retry {
            delay_seconds: delay_seconds.unwrap_or(settings.retry_delay),
        }
    } else if settings.dead_letter_queue.is_some() {
        Fate::DeadLetter
    } else {
        Fate::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::BatchCall::*;
    use super::HandlerResult::{Failed, Ok as Done};
    use super::*;

    const ACK: Outcome = Outcome::Ack;
    const RETRY: Outcome = Outcome::Retry {
        delay_seconds: None,
    };

    fn retry_in(secs: u32) -> Outcome {
        Outcome::Retry {
            delay_seconds: Some(secs),
        }
    }

    fn ids(n: u8) -> Vec<MessageId> {
        (0..n).map(|i| MessageId([i; 16])).collect()
    }

    fn outcomes(ids: &[MessageId], calls: &[BatchCall], result: HandlerResult) -> Vec<Outcome> {
        resolve(ids, calls, result)
            .outcomes
            .into_iter()
            .map(|(_, o)| o)
            .collect()
    }

    #[test]
    fn implicit_ack_on_ok_and_retry_on_failure() {
        let m = ids(3);
        assert_eq!(outcomes(&m, &[], Done), [ACK, ACK, ACK]);
        assert_eq!(outcomes(&m, &[], Failed), [RETRY, RETRY, RETRY]);
    }

    #[test]
    fn explicit_ack_survives_a_failure_and_explicit_retry_survives_ok() {
        let m = ids(3);
        assert_eq!(outcomes(&m, &[Ack(m[0])], Failed), [ACK, RETRY, RETRY]);
        assert_eq!(outcomes(&m, &[Retry(m[1], None)], Done), [ACK, RETRY, ACK]);
    }

    #[test]
    fn first_call_on_a_message_wins() {
        let m = ids(1);
        let r = resolve(&m, &[Ack(m[0]), Retry(m[0], Some(5))], Failed);
        assert_eq!(r.outcomes[0].1, ACK);
        assert_eq!(r.ignored.len(), 1);
        assert_eq!(r.ignored[0].call, Retry(m[0], Some(5)));

        assert_eq!(
            outcomes(&m, &[Retry(m[0], Some(5)), Ack(m[0])], Done),
            [retry_in(5)]
        );
    }

    #[test]
    fn single_message_calls_beat_batch_wide_calls_in_either_order() {
        let m = ids(2);
        // ack then retry-all
        assert_eq!(
            outcomes(&m, &[Ack(m[0]), RetryAll(None)], Done),
            [ACK, RETRY]
        );
        // retry then ack-all
        assert_eq!(
            outcomes(&m, &[Retry(m[0], None), AckAll], Done),
            [RETRY, ACK]
        );
        // retry-all then ack
        assert_eq!(
            outcomes(&m, &[RetryAll(Some(7)), Ack(m[1])], Done),
            [retry_in(7), ACK]
        );
        // ack-all then retry
        assert_eq!(
            outcomes(&m, &[AckAll, Retry(m[1], Some(2))], Done),
            [ACK, retry_in(2)]
        );
    }

    #[test]
    fn batch_wide_calls_are_explicit_and_beat_the_handler_result() {
        let m = ids(2);
        // ack-all then fail: everything was explicitly acked.
        assert_eq!(outcomes(&m, &[AckAll], Failed), [ACK, ACK]);
        // retry-all then return ok: everything was explicitly retried.
        assert_eq!(outcomes(&m, &[RetryAll(None)], Done), [RETRY, RETRY]);
    }

    #[test]
    fn first_batch_wide_call_wins() {
        let m = ids(2);
        let r = resolve(&m, &[RetryAll(None), AckAll], Done);
        assert_eq!(
            r.outcomes.iter().map(|o| o.1).collect::<Vec<_>>(),
            [RETRY, RETRY]
        );
        assert_eq!(r.ignored.len(), 1);
        assert_eq!(
            outcomes(&m, &[AckAll, RetryAll(Some(3))], Failed),
            [ACK, ACK]
        );
    }

    #[test]
    fn retry_delay_precedence() {
        let m = ids(3);
        let got = outcomes(
            &m,
            &[Retry(m[0], Some(0)), Retry(m[1], None), RetryAll(Some(9))],
            Done,
        );
        // An explicit 0 overrides; a retry without delay falls back to retry-all's delay.
        assert_eq!(got, [retry_in(0), retry_in(9), retry_in(9)]);
    }

    #[test]
    fn fate_retries_until_max_retries_then_dead_letters_or_drops() {
        let mut settings = ConsumerSettings {
            max_retries: 2,
            retry_delay: 5,
            ..ConsumerSettings::default()
        };
        // Attempts 1 and 2 fail: retried, with the default or the explicit delay.
        assert_eq!(fate(1, &settings, None), Fate::Retry { delay_seconds: 5 });
        assert_eq!(
            fate(2, &settings, Some(0)),
            Fate::Retry { delay_seconds: 0 }
        );
        // Attempt 3 is the last of 1 + max_retries.
        assert_eq!(fate(3, &settings, Some(9)), Fate::Drop);
        settings.dead_letter_queue = Some("dlq".into());
        assert_eq!(fate(3, &settings, None), Fate::DeadLetter);
        settings.max_retries = 0;
        assert_eq!(fate(1, &settings, None), Fate::DeadLetter);
    }

    #[test]
    fn calls_on_unknown_ids_are_ignored() {
        let m = ids(1);
        let stranger = MessageId([0xff; 16]);
        let r = resolve(&m, &[Retry(stranger, None)], Done);
        assert_eq!(r.outcomes[0].1, ACK);
        assert_eq!(r.ignored[0].reason, "the message is not in this batch");
    }
}
