//! The batch precedence rules, as a pure function.
//!
//! A consumer calls `ack`, `retry`, `ack-all` and `retry-all` on its batch in any order, then
//! returns `ok` or fails. [`resolve`] turns that record into one [`Outcome`] per message. The
//! rules are workerd's (the Workers runtime behind Cloudflare Queues), where calls take effect
//! in the order they are made:
//!
//! - the first call on a message wins: `ack` then `retry` → acked, `retry` then `ack` →
//!   retried;
//! - a call on a single message made *before* `ack-all` / `retry-all` beats it (ack(A) then
//!   retry-all → A acked, the rest retried);
//! - a call on a single message made *after* `ack-all` / `retry-all` has no effect;
//! - the first of `ack-all` / `retry-all` wins;
//! - messages with no call are acked if the handler returned `ok` and retried if it failed
//!   (returned `err`, trapped or timed out);
//! - retry delay: `retry(id, delay)` > `retry-all(delay)` > the consumer's `retry_delay`
//!   (the last one is applied by the broker, signalled here by `None`).
//!
//! A call that has no effect because an earlier call decided otherwise comes back as an
//! [`IgnoredCall`] with workerd's warning text, word for word (`Received a call to ack() on
//! message … after retryAll() was already called. …`). A call that repeats an earlier decision
//! (`ack` after `ack-all`, a second `retry-all`) is silent, as in workerd.
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
    /// The warning: workerd's text where workerd has one.
    pub warning: String,
}

impl BatchCall {
    /// The call as a Worker would write it (`ack()`, `retryAll()`), for warnings.
    fn js_name(self) -> &'static str {
        match self {
            BatchCall::Ack(_) => "ack()",
            BatchCall::Retry(..) => "retry()",
            BatchCall::AckAll => "ackAll()",
            BatchCall::RetryAll(_) => "retryAll()",
        }
    }

    /// Whether two calls decide the same way (both ack or both retry).
    fn same_decision(self, other: BatchCall) -> bool {
        matches!(
            (self, other),
            (
                BatchCall::Ack(_) | BatchCall::AckAll,
                BatchCall::Ack(_) | BatchCall::AckAll
            ) | (
                BatchCall::Retry(..) | BatchCall::RetryAll(_),
                BatchCall::Retry(..) | BatchCall::RetryAll(_)
            )
        )
    }
}

/// workerd's warning for `call`, ignored because `earlier` decided otherwise.
fn overruled(call: BatchCall, earlier: BatchCall) -> IgnoredCall {
    let (now, before) = (call.js_name(), earlier.js_name());
    let warning = match call {
        BatchCall::Ack(id) | BatchCall::Retry(id, _) => format!(
            "Received a call to {now} on message {id} after {before} was already called. \
             Calling {now} on a message after calling {before} has no effect."
        ),
        BatchCall::AckAll | BatchCall::RetryAll(_) => format!(
            "Received a call to {now} after {before} was already called. \
             Calling {now} after calling {before} has no effect."
        ),
    };
    IgnoredCall { call, warning }
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
        // The earlier call that decides instead of this one, if any.
        let earlier = match call {
            BatchCall::Ack(id) | BatchCall::Retry(id, _) => {
                if !in_batch.contains(&id) {
                    ignored.push(IgnoredCall {
                        call,
                        warning: format!(
                            "Received a call to {} on message {id}, which is not in this batch. \
                             The call has no effect.",
                            call.js_name()
                        ),
                    });
                    continue;
                }
                match (batch_wide, per_message.entry(id)) {
                    (Some(batch), _) => Some(batch),
                    (None, Entry::Occupied(first)) => Some(*first.get()),
                    (None, Entry::Vacant(first)) => {
                        first.insert(call);
                        None
                    }
                }
            }
            BatchCall::AckAll | BatchCall::RetryAll(_) => {
                if batch_wide.is_none() {
                    batch_wide = Some(call);
                }
                batch_wide.filter(|&first| first != call)
            }
        };
        if let Some(earlier) = earlier
            && !earlier.same_decision(call)
        {
            ignored.push(overruled(call, earlier));
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

/// The fate of a message that failed its `attempts`-th delivery (docs/semantics.md "Retries
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
            r.ignored[0].warning,
            format!(
                "Received a call to retry() on message {} after ack() was already called. \
                 Calling retry() on a message after calling ack() has no effect.",
                m[0]
            )
        );

        assert_eq!(
            outcomes(&m, &[Retry(m[0], Some(5)), Ack(m[0])], Done),
            [retry_in(5)]
        );
    }

    #[test]
    fn single_message_calls_made_before_a_batch_wide_call_beat_it() {
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
    }

    #[test]
    fn single_message_calls_made_after_a_batch_wide_call_are_ignored_with_workerds_warning() {
        let m = ids(2);
        let r = resolve(&m, &[RetryAll(Some(7)), Ack(m[1])], Done);
        assert_eq!(
            r.outcomes.iter().map(|o| o.1).collect::<Vec<_>>(),
            [retry_in(7), retry_in(7)]
        );
        assert_eq!(
            r.ignored,
            [IgnoredCall {
                call: Ack(m[1]),
                warning: format!(
                    "Received a call to ack() on message {} after retryAll() was already \
                     called. Calling ack() on a message after calling retryAll() has no effect.",
                    m[1]
                ),
            }]
        );

        let r = resolve(&m, &[AckAll, Retry(m[1], Some(2))], Failed);
        assert_eq!(
            r.outcomes.iter().map(|o| o.1).collect::<Vec<_>>(),
            [ACK, ACK]
        );
        assert_eq!(
            r.ignored[0].warning,
            format!(
                "Received a call to retry() on message {} after ackAll() was already called. \
                 Calling retry() on a message after calling ackAll() has no effect.",
                m[1]
            )
        );
    }

    #[test]
    fn calls_that_repeat_a_decision_are_silent() {
        let m = ids(2);
        let r = resolve(
            &m,
            &[
                Ack(m[0]),
                Ack(m[0]),
                AckAll,
                Ack(m[1]),
                AckAll,
                Retry(m[1], None),
            ],
            Failed,
        );
        assert_eq!(
            r.outcomes.iter().map(|o| o.1).collect::<Vec<_>>(),
            [ACK, ACK]
        );
        // Only the retry after ackAll() contradicts an earlier decision.
        assert_eq!(r.ignored.len(), 1);
        assert_eq!(r.ignored[0].call, Retry(m[1], None));

        // A second retry keeps the first one's delay.
        assert_eq!(
            outcomes(&m, &[Retry(m[0], Some(4)), Retry(m[0], Some(9))], Done),
            [retry_in(4), ACK]
        );
        let r = resolve(
            &m,
            &[RetryAll(Some(3)), RetryAll(Some(8)), Retry(m[0], None)],
            Done,
        );
        assert_eq!(
            r.outcomes.iter().map(|o| o.1).collect::<Vec<_>>(),
            [retry_in(3), retry_in(3)]
        );
        assert!(r.ignored.is_empty());
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
        assert_eq!(
            r.ignored[0].warning,
            "Received a call to ackAll() after retryAll() was already called. \
             Calling ackAll() after calling retryAll() has no effect."
        );
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
        assert!(r.ignored[0].warning.contains("not in this batch"));
    }
}
