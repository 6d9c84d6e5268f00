//! The queue engine: durable queues with Cloudflare Queues semantics behind the [`Broker`]
//! trait, so that a shared backend (PostgreSQL) can sit beside the embedded one (redb) without
//! callers changing. [`open`] is the only way to a backend: callers say where the queues live
//! ([`Storage`]) and never name a backend type.
//!
//! The semantics are those of `docs/semantics.md`; the backend-independent test suite in
//! `testkit/src/semantics/` is their executable form, run on both backends by this crate's
//! `tests/`.

mod checked;
mod clock;
mod error;
pub mod limits;
mod open;
mod postgres;
pub mod precedence;
mod redb;
mod types;

use async_trait::async_trait;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::error::{BrokerError, BrokerResult};
pub use self::open::{Storage, open};
pub use self::postgres::PostgresOptions;
pub use self::redb::{Compacted, Compaction, RedbOptions, compact_file};
pub use self::types::{
    Backlog, ConsumerSettings, ContentType, LeaseId, LeaseOptions, LeasedBatch, LeasedMessage,
    Message, MessageId, Outcome, QueueInfo, QueueMetrics, QueueSettings, Readiness, SendRequest,
    SettleReport, SweepReport,
};

/// A store of durable queues.
///
/// Every method that changes state does so in one transaction and returns only once that
/// transaction is durable. Methods are safe to call concurrently; implementations do their
/// disk work off the async reactor.
#[async_trait]
pub trait Broker: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a queue. Fails if the name is taken, a setting is out of range, or the
    /// dead-letter queue is the queue itself or does not exist.
    async fn create_queue(&self, name: &str, settings: QueueSettings) -> BrokerResult<QueueInfo>;

    /// Replaces an existing queue's settings; stored messages stay.
    async fn configure_queue(&self, name: &str, settings: QueueSettings)
    -> BrokerResult<QueueInfo>;

    /// Deletes a queue and every message in it; returns how many messages were deleted.
    /// Refused while another queue names it as its dead-letter queue.
    async fn delete_queue(&self, name: &str) -> BrokerResult<u64>;

    /// Every queue, sorted by name.
    async fn list_queues(&self) -> BrokerResult<Vec<QueueInfo>>;

    /// One queue's settings, state and metrics.
    async fn queue_info(&self, name: &str) -> BrokerResult<QueueInfo>;

    /// Stores one message. Returns once it is durable.
    async fn send(&self, queue: &str, request: SendRequest) -> BrokerResult<Backlog>;

    /// Stores up to 100 messages (256 000 bytes in total) atomically: all or none.
    /// `delay_seconds` applies to messages that set no delay of their own.
    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<SendRequest>,
        delay_seconds: Option<u32>,
    ) -> BrokerResult<Backlog>;

    /// Leases up to `options.max_messages` visible messages, oldest first. Their attempt
    /// counts are incremented durably before they are returned. An empty vector means nothing
    /// is visible. A paused queue answers [`BrokerError::Paused`].
    async fn lease(&self, queue: &str, options: LeaseOptions) -> BrokerResult<Vec<LeasedMessage>>;

    /// Applies consumer decisions to leased messages in one transaction: acks delete, retries
    /// redeliver after their delay, or dead-letter / drop once retries are exhausted.
    ///
    /// A decision that comes after its lease expired is still taken when it can be, as
    /// Cloudflare does for pull consumers: a late ack deletes the message if it is still in the
    /// queue, even if it was redelivered meanwhile (the work is done); a late retry sets when a
    /// waiting message is delivered next (the expiry already counted the failed attempt). Only
    /// a lease whose message is gone from the queue (settled, purged, dead-lettered) or, for a
    /// retry, is held by a newer lease is reported in [`SettleReport::stale`]; it changes
    /// nothing.
    async fn settle(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
    ) -> BrokerResult<SettleReport>;

    /// Settles a finished batch's `outcomes` (as [`Broker::settle`] does) and leases the next
    /// batch (as [`Broker::lease`] does) in one transaction, so a push consumer pays one commit
    /// per batch instead of two; the batch comes with the queue's backlog after the lease, so
    /// the consumer needs no separate read. `outcomes` may be empty (the first batch). A paused
    /// queue leases nothing and is not an error: the outcomes are applied all the same.
    async fn settle_and_lease(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
        options: LeaseOptions,
    ) -> BrokerResult<(SettleReport, LeasedBatch)>;

    /// Pauses (`true`) or resumes (`false`) delivery. A paused queue still accepts sends.
    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()>;

    /// Deletes every message of the queue, delayed and in-flight ones included; returns the
    /// count.
    async fn purge(&self, queue: &str) -> BrokerResult<u64>;

    /// Reads up to `limit` messages that are not in flight, in delivery order (visible ones
    /// first, then delayed ones), without leasing them.
    async fn peek(&self, queue: &str, limit: u32) -> BrokerResult<Vec<Message>>;

    /// Moves up to `limit` of the oldest messages that are not in flight from `from` (usually a
    /// dead-letter queue) to `to`, visible at once, keeping id and timestamp and starting
    /// attempts afresh. Returns how many moved.
    async fn replay(&self, from: &str, to: &str, limit: u64) -> BrokerResult<u64>;

    /// Turns expired leases into failed attempts, deletes messages past their retention and
    /// forgets dedup keys past their window. The host calls it periodically.
    async fn sweep(&self) -> BrokerResult<SweepReport>;

    /// The queue's metrics.
    async fn metrics(&self, queue: &str) -> BrokerResult<QueueMetrics>;

    /// What a push consumer needs to assemble batches: how many messages are visible now
    /// (counted up to `max`), since when the oldest of them has been visible, and when the
    /// next delayed one becomes visible. Cheap: reads at most `max + 1` index entries.
    async fn readiness(&self, queue: &str, max: u32) -> BrokerResult<Readiness>;

    /// A value that changes after every commit that may have made messages visible; consumers
    /// wait on it instead of polling.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Finishes queued writes and releases the storage (the redb file, the PostgreSQL
    /// connections) once this is the last handle; an earlier handle only drops itself. Every
    /// commit already acknowledged is durable whether or not the broker is closed.
    async fn close(self: std::sync::Arc<Self>) -> BrokerResult<()>;
}
