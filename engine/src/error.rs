//! Typed errors returned by every [`Broker`](super::Broker) operation.

use thiserror::Error;

/// Why a broker operation was refused or failed.
///
/// Input errors (limits, ranges, unknown names) are detected before anything is written: when
/// one is returned, nothing was stored. [`BrokerError::Unavailable`] means the storage itself
/// failed and nothing was stored; after a failed commit the broker refuses every further write
/// until it is reopened. [`BrokerError::OutcomeUnknown`] is the one error after which the
/// write may have been stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BrokerError {
    /// No queue with this name exists.
    #[error("queue `{0}` does not exist")]
    UnknownQueue(String),
    /// `create_queue` for a name that is taken.
    #[error("queue `{0}` already exists")]
    QueueExists(String),
    /// A queue name that breaks the naming rules.
    #[error("invalid queue name `{name}`: {reason}")]
    InvalidQueueName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A queue or consumer setting outside its allowed range.
    #[error("`{key}` is {value}; it must be between {min} and {max}")]
    InvalidSetting {
        /// The setting's key, as written in the manifest.
        key: &'static str,
        /// The rejected value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A queue configured as its own dead-letter queue.
    #[error("queue `{0}` cannot be its own dead_letter_queue")]
    SelfDeadLetter(String),
    /// A `dead_letter_queue` that names no existing queue.
    #[error("dead_letter_queue `{dead_letter_queue}` of queue `{queue}` does not exist")]
    UnknownDeadLetterQueue {
        /// The queue being configured.
        queue: String,
        /// The missing dead-letter queue.
        dead_letter_queue: String,
    },
    /// Deleting a queue that another queue uses as its dead-letter queue.
    #[error("queue `{queue}` is the dead_letter_queue of `{used_by}`; change that queue first")]
    DeadLetterInUse {
        /// The queue that was to be deleted.
        queue: String,
        /// A queue that names it as its dead-letter queue.
        used_by: String,
    },
    /// A message body over the per-message limit.
    #[error("message body is {size} bytes; the limit is {limit}")]
    MessageTooLarge {
        /// Size of the rejected body in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A batch whose bodies add up to more than the per-batch limit.
    #[error("batch is {size} bytes in total; the limit is {limit}")]
    BatchTooLarge {
        /// Total size of the rejected batch in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A batch with more messages than allowed.
    #[error("batch has {count} messages; the limit is {limit}")]
    TooManyMessages {
        /// Number of messages in the rejected batch.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// `send_batch` with no messages.
    #[error("batch is empty; send at least one message")]
    EmptyBatch,
    /// A send or retry delay over the maximum.
    #[error("delay of {delay} seconds is too long; the maximum is {max}")]
    InvalidDelay {
        /// The rejected delay in seconds.
        delay: u32,
        /// The maximum in seconds.
        max: u32,
    },
    /// A body that does not match its content type (json that is not JSON, text that is not
    /// UTF-8).
    #[error("invalid message body: {0}")]
    InvalidBody(String),
    /// A dedup key that is empty or too long.
    #[error("invalid dedup key: {0}")]
    InvalidDedupKey(String),
    /// Lease parameters out of range.
    #[error("invalid lease request: {0}")]
    InvalidLease(String),
    /// The queue's delivery is paused: it accepts sends but hands out nothing.
    #[error("queue `{0}` is paused")]
    Paused(String),
    /// An operation whose arguments contradict each other (replaying a queue into itself…).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The storage failed. Writes stay refused until the broker is reopened, so that no caller
    /// is told a message was stored when it may not have been.
    #[error("queue storage unavailable: {0}")]
    Unavailable(String),
    /// The connection to the storage broke while a commit was under way and the host could not
    /// find out afterwards whether it went through: the write may or may not be stored. (A
    /// send can be repeated safely with a dedup key.)
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
}

impl BrokerError {
    /// True for errors caused by the caller's input (as opposed to the storage failing).
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            BrokerError::Unavailable(_) | BrokerError::OutcomeUnknown(_)
        )
    }
}

/// Shorthand for results of broker operations.
pub type BrokerResult<T> = Result<T, BrokerError>;
