//! The values that cross the [`Broker`](super::Broker) interface.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{BrokerError, BrokerResult};
use super::limits::{
    MAX_DELAY_SECONDS, MAX_LEASE_MESSAGES, MAX_VISIBILITY_TIMEOUT_MS, check_delay, check_range,
};

/// How a message body is to be read by its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// A JSON document (checked on send).
    Json,
    /// UTF-8 text (checked on send).
    Text,
    /// Opaque bytes.
    Bytes,
}

impl ContentType {
    /// The name used in the manifest, the HTTP API and the WIT contract.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "json",
            ContentType::Text => "text",
            ContentType::Bytes => "bytes",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ContentType::Json => 0,
            ContentType::Text => 1,
            ContentType::Bytes => 2,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(ContentType::Json),
            1 => Some(ContentType::Text),
            2 => Some(ContentType::Bytes),
            _ => None,
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(ContentType::Json),
            "text" => Ok(ContentType::Text),
            "bytes" => Ok(ContentType::Bytes),
            other => Err(format!(
                "unknown content type `{other}`; expected json, text or bytes"
            )),
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The body, at most 128 000 bytes.
    pub body: Vec<u8>,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// Seconds before the message becomes visible; overrides the batch and queue delays.
    pub delay_seconds: Option<u32>,
    /// A second send with the same key inside the queue's dedup window is accepted but not
    /// stored again.
    pub dedup_key: Option<String>,
}

impl SendRequest {
    /// A message with no delay and no dedup key.
    pub fn new(body: impl Into<Vec<u8>>, content_type: ContentType) -> Self {
        Self {
            body: body.into(),
            content_type,
            delay_seconds: None,
            dedup_key: None,
        }
    }

    /// A UTF-8 text message.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(body.into().into_bytes(), ContentType::Text)
    }

    /// Sets the per-message delay.
    pub fn with_delay(mut self, seconds: u32) -> Self {
        self.delay_seconds = Some(seconds);
        self
    }

    /// Sets the dedup key.
    pub fn with_dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

/// A message's unique id: 128 random bits, written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random id (from a user-space CSPRNG: no system call per message).
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s)
            .map(MessageId)
            .ok_or_else(|| format!("`{s}` is not a message id (32 lowercase hex characters)"))
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `N` bytes written as `2 * N` lowercase hex characters (`hex` alone also takes upper case).
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A stored message as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id, kept across retries and dead-lettering.
    pub id: MessageId,
    /// When the message was first sent, in ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// The body.
    pub body: Vec<u8>,
    /// Deliveries so far in this queue, this one included (1 on first delivery; 0 in `peek`
    /// for a message never delivered).
    pub attempts: u32,
}

/// Names one lease of one message; settle with it. Written as 32 lowercase hex characters
/// (the `lease_id` of pull consumers).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId {
    pub(crate) seq: u64,
    pub(crate) ticket: u64,
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.seq, self.ticket)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

impl FromStr for LeaseId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex::<16>(s)
            .ok_or_else(|| format!("`{s}` is not a lease id (32 lowercase hex characters)"))?;
        let (seq, ticket) = bytes.split_at(8);
        Ok(LeaseId {
            seq: u64::from_be_bytes(seq.try_into().expect("8 bytes")),
            ticket: u64::from_be_bytes(ticket.try_into().expect("8 bytes")),
        })
    }
}

/// A message handed out by [`Broker::lease`](super::Broker::lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedMessage {
    /// The message; `attempts` already counts this delivery, durably.
    pub message: Message,
    /// The lease to settle.
    pub lease: LeaseId,
    /// When the lease expires (ms since the Unix epoch); after that the message is retried.
    pub lease_deadline_ms: u64,
}

/// A batch handed out by [`Broker::settle_and_lease`](super::Broker::settle_and_lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedBatch {
    /// The leased messages, oldest first; empty when nothing was visible or the queue is
    /// paused.
    pub messages: Vec<LeasedMessage>,
    /// The queue's backlog right after the lease, read in the same transaction.
    pub backlog: Backlog,
}

/// What a consumer decided for one leased message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delete the message.
    Ack,
    /// Deliver it again after `delay_seconds` (`None`: the consumer's `retry_delay`), or move it
    /// to the dead-letter queue if its retries are exhausted.
    Retry {
        /// Explicit delay; `Some(0)` overrides a non-zero `retry_delay`.
        delay_seconds: Option<u32>,
    },
}

/// How many messages one lease hands out and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// At most this many messages (1..=100).
    pub max_messages: u32,
    /// The lease lasts this long (1 ms..=12 h); an unsettled message then counts as a failed
    /// attempt and is retried.
    pub visibility_timeout_ms: u64,
}

impl LeaseOptions {
    /// Up to `max_messages` messages for `visibility_timeout_ms`.
    pub fn new(max_messages: u32, visibility_timeout_ms: u64) -> Self {
        Self {
            max_messages,
            visibility_timeout_ms,
        }
    }

    /// Checks both ranges (the engine does before any backend sees the lease).
    pub fn validate(&self) -> BrokerResult<()> {
        if !(1..=MAX_LEASE_MESSAGES).contains(&self.max_messages) {
            return Err(BrokerError::InvalidLease(format!(
                "batch size is {}; it must be between 1 and {MAX_LEASE_MESSAGES}",
                self.max_messages
            )));
        }
        if !(1..=MAX_VISIBILITY_TIMEOUT_MS).contains(&self.visibility_timeout_ms) {
            return Err(BrokerError::InvalidLease(format!(
                "visibility timeout is {} ms; it must be between 1 and {MAX_VISIBILITY_TIMEOUT_MS}",
                self.visibility_timeout_ms
            )));
        }
        Ok(())
    }
}

impl Outcome {
    /// Checks an explicit retry delay's range (the engine does before any backend settles).
    pub fn validate(&self) -> BrokerResult<()> {
        match self {
            Outcome::Retry {
                delay_seconds: Some(delay),
            } => check_delay(*delay),
            _ => Ok(()),
        }
    }
}

/// Settings of the consumer of a queue (push or pull), with wrangler's names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Most messages in one batch (1..=100, default 10).
    pub max_batch_size: u32,
    /// Seconds to wait for a batch to fill (0..=60, default 5).
    pub max_batch_timeout: u32,
    /// Redeliveries after the first failed attempt before dead-lettering (0..=100, default 3).
    pub max_retries: u32,
    /// Default delay before a retried message is visible again (0..=86400 s, default 0).
    pub retry_delay: u32,
    /// Where messages go when their retries are exhausted; dropped (and logged) if unset.
    pub dead_letter_queue: Option<String>,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            max_batch_size: 10,
            max_batch_timeout: 5,
            max_retries: 3,
            retry_delay: 0,
            dead_letter_queue: None,
        }
    }
}

impl ConsumerSettings {
    /// Checks every setting's range.
    pub fn validate(&self) -> BrokerResult<()> {
        check_range("max_batch_size", self.max_batch_size.into(), 1, 100)?;
        check_range("max_batch_timeout", self.max_batch_timeout.into(), 0, 60)?;
        check_range("max_retries", self.max_retries.into(), 0, 100)?;
        check_range(
            "retry_delay",
            self.retry_delay.into(),
            0,
            MAX_DELAY_SECONDS.into(),
        )
    }
}

/// Settings of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Default send delay in seconds (0..=86400, default 0).
    pub delivery_delay: u32,
    /// Seconds a message is kept after it was first sent (60..=1 209 600, default 4 days).
    pub message_retention_period: u32,
    /// Seconds during which a second send with the same dedup key is not stored again
    /// (0..=86400, default 300; 0 turns deduplication off).
    pub dedup_window: u32,
    /// The consumer's settings.
    pub consumer: ConsumerSettings,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            delivery_delay: 0,
            message_retention_period: 345_600,
            dedup_window: 300,
            consumer: ConsumerSettings::default(),
        }
    }
}

impl QueueSettings {
    /// Checks every setting's range (not whether the dead-letter queue exists).
    pub fn validate(&self) -> BrokerResult<()> {
        check_range(
            "delivery_delay",
            self.delivery_delay.into(),
            0,
            MAX_DELAY_SECONDS.into(),
        )?;
        check_range(
            "message_retention_period",
            self.message_retention_period.into(),
            60,
            1_209_600,
        )?;
        check_range("dedup_window", self.dedup_window.into(), 0, 86_400)?;
        self.consumer.validate()
    }
}

/// The small summary returned by sends (the WIT `queue-metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Backlog {
    /// Messages stored in the queue (visible, delayed and in flight).
    pub count: u64,
    /// Their body bytes.
    pub bytes: u64,
    /// First-send time of the oldest stored message.
    pub oldest_timestamp_ms: Option<u64>,
}

/// Everything known about a queue's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueMetrics {
    /// Stored messages: count, bytes, oldest.
    pub backlog: Backlog,
    /// Messages leased and not yet settled.
    pub in_flight: u64,
    /// Messages waiting for a delay to pass.
    pub delayed: u64,
    /// Messages accepted by sends since the queue was created (dedup hits not counted).
    pub sent: u64,
    /// Messages acked.
    pub acked: u64,
    /// Failed attempts that led to a redelivery (explicit retries and expired leases).
    pub retried: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages deleted because their retries were exhausted and no dead-letter queue was set.
    pub dropped: u64,
    /// Messages deleted because their retention period ran out.
    pub expired: u64,
}

/// A queue's name, settings, state and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Its settings.
    pub settings: QueueSettings,
    /// True while delivery is paused.
    pub paused: bool,
    /// Its metrics.
    pub metrics: QueueMetrics,
}

/// What a [`Broker::settle`](super::Broker::settle) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Messages deleted.
    pub acked: u32,
    /// Messages scheduled for redelivery.
    pub retried: u32,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u32,
    /// Messages deleted after exhausting their retries with no dead-letter queue.
    pub dropped: u32,
    /// Leases whose decision could not be taken: the message is no longer in the queue
    /// (settled, purged, dead-lettered or dropped meanwhile), or a late retry found it held by
    /// a newer lease. Nothing was done for them.
    pub stale: Vec<LeaseId>,
}

impl SettleReport {
    /// Retries taken, whatever became of the message (redelivery, dead-letter queue, drop):
    /// the `retry_count` / `retryCount` pull clients are told.
    pub fn retries(&self) -> u32 {
        self.retried + self.dead_lettered + self.dropped
    }
}

/// See [`Broker::readiness`](super::Broker::readiness).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The broker's time when it looked, ms since the epoch.
    pub now_ms: u64,
    /// True while delivery is paused (the other fields are then zero / `None`).
    pub paused: bool,
    /// Visible messages, counted up to the `max` asked for.
    pub visible: u32,
    /// When the oldest visible message became visible.
    pub oldest_visible_at_ms: Option<u64>,
    /// When the next delayed message becomes visible.
    pub next_visible_at_ms: Option<u64>,
}

/// What a [`Broker::sweep`](super::Broker::sweep) cleaned up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired leases turned into failed attempts.
    pub leases_expired: u64,
    /// Messages deleted because their retention ran out.
    pub messages_expired: u64,
    /// Dedup keys forgotten because their window passed.
    pub dedup_keys_expired: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerError;

    #[test]
    fn ids_round_trip_as_32_lowercase_hex() {
        let id = MessageId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(text.parse::<MessageId>().unwrap(), id);
        let mut bytes = [0u8; 16];
        bytes[0] = 0x0f;
        bytes[15] = 0xa0;
        assert_eq!(
            MessageId(bytes).to_string(),
            "0f0000000000000000000000000000a0"
        );
        assert!("g".repeat(32).parse::<MessageId>().is_err());
        assert!("0f".parse::<MessageId>().is_err());
        assert!(
            "ABCDEF0123456789abcdef0123456789"
                .parse::<MessageId>()
                .is_err()
        );

        let lease = LeaseId {
            seq: 7,
            ticket: u64::MAX - 1,
        };
        assert_eq!(lease.to_string().parse::<LeaseId>().unwrap(), lease);
        assert!("1234".parse::<LeaseId>().is_err());
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = QueueSettings::default();
        assert_eq!(s.message_retention_period, 345_600);
        assert_eq!(s.consumer.max_batch_size, 10);
        assert_eq!(s.consumer.max_batch_timeout, 5);
        assert_eq!(s.consumer.max_retries, 3);
        assert_eq!(s.consumer.retry_delay, 0);
        s.validate().unwrap();
    }

    #[test]
    fn settings_out_of_range_name_their_key() {
        let mut s = QueueSettings::default();
        s.consumer.max_batch_size = 101;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "`max_batch_size` is 101; it must be between 1 and 100"
        );
        let mut s = QueueSettings {
            message_retention_period: 59,
            ..Default::default()
        };
        assert!(matches!(
            s.validate(),
            Err(BrokerError::InvalidSetting {
                key: "message_retention_period",
                ..
            })
        ));
        s.message_retention_period = 60;
        s.consumer.max_retries = 101;
        assert!(matches!(
            s.validate(),
            Err(BrokerError::InvalidSetting {
                key: "max_retries",
                ..
            })
        ));
    }
}
