//! Table layout and the fixed binary encodings of the records stored in them.
//!
//! A message is stored once in [`BODIES`] (immutable: id, content type, body) and described by
//! a small mutable record in [`STATES`] (attempts, size, where it is). Exactly one index entry
//! says where a message is: [`READY`] when it waits for delivery (visible or delayed),
//! [`LEASES`] while a consumer holds it. Moving a message to another queue rewrites its state
//! and index entry, never its body.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::types::{ContentType, MessageId, QueueSettings};

/// Bumped when the layout changes incompatibly.
pub(super) const SCHEMA_VERSION: u64 = 2;

/// Counters: `schema_version`, `next_seq`, `next_queue_id`.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Queue name → JSON [`QueueRecord`].
pub(super) const QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("queues");
/// Queue id → [`Counters`].
pub(super) const COUNTERS: TableDefinition<u32, [u8; Counters::LEN]> =
    TableDefinition::new("counters");
/// Message seq → [`encode_body`] (id, content type, body). Seqs are global and never reused.
pub(super) const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// (queue id, seq) → [`MessageState`]. Ordered by seq, so the first entry of a queue is its
/// oldest message.
pub(super) const STATES: TableDefinition<(u32, u64), [u8; MessageState::LEN]> =
    TableDefinition::new("states");
/// (queue id, visible at ms, ticket) → seq: messages waiting for delivery in delivery order.
/// The ticket is taken from the global sequence each time a message is (re)queued, so a
/// retried message goes behind the ones already waiting.
pub(super) const READY: TableDefinition<(u32, u64, u64), u64> = TableDefinition::new("ready");
/// (lease deadline ms, queue id, lease ticket) → [`LeaseRecord`]: one entry per lease (a
/// batch), soonest expiry first. One record per batch instead of one per message halves the
/// index work of leasing and settling.
pub(super) const LEASES: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("leases");
/// (queue id, dedup key) → window end ms.
pub(super) const DEDUP: TableDefinition<(u32, &str), u64> = TableDefinition::new("dedup");
/// (window end ms, queue id, dedup key) → (): dedup keys, soonest expiry first.
pub(super) const DEDUP_EXPIRY: TableDefinition<(u64, u32, &str), ()> =
    TableDefinition::new("dedup_expiry");

/// What [`QUEUES`] stores for each queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct QueueRecord {
    /// Compact id used in every other table's keys.
    pub id: u32,
    pub settings: QueueSettings,
    pub paused: bool,
}

/// Where a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// In [`READY`] under (queue, `visible_at`, `ticket`).
    Ready { visible_at: u64, ticket: u64 },
    /// Held by the lease whose [`LEASES`] record is (`deadline`, queue, `ticket`).
    Leased { deadline: u64, ticket: u64 },
}

/// The mutable part of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageState {
    /// First send, ms since the epoch (kept across dead-lettering and replay).
    pub timestamp_ms: u64,
    /// Deliveries in the current queue so far.
    pub attempts: u32,
    /// Body size in bytes.
    pub size: u32,
    pub placement: Placement,
}

impl MessageState {
    pub(super) const LEN: usize = 8 + 4 + 4 + 1 + 8 + 8;

    pub(super) fn encode(&self) -> [u8; Self::LEN] {
        let (tag, time, ticket) = match self.placement {
            Placement::Ready { visible_at, ticket } => (0u8, visible_at, ticket),
            Placement::Leased { deadline, ticket } => (1u8, deadline, ticket),
        };
        let mut out = [0u8; Self::LEN];
        out[0..8].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out[8..12].copy_from_slice(&self.attempts.to_le_bytes());
        out[12..16].copy_from_slice(&self.size.to_le_bytes());
        out[16] = tag;
        out[17..25].copy_from_slice(&time.to_le_bytes());
        out[25..33].copy_from_slice(&ticket.to_le_bytes());
        out
    }

    pub(super) fn decode(raw: &[u8; Self::LEN]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let (time, ticket) = (u64_at(17), u64_at(25));
        let placement = if raw[16] == 0 {
            Placement::Ready {
                visible_at: time,
                ticket,
            }
        } else {
            Placement::Leased {
                deadline: time,
                ticket,
            }
        };
        Self {
            timestamp_ms: u64_at(0),
            attempts: u32_at(8),
            size: u32_at(12),
            placement,
        }
    }
}

/// A lease: the seqs it handed out and how many of them are still held. Settled messages
/// stay listed; their state no longer names this lease, so expiry skips them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeaseRecord {
    pub held: u32,
    pub seqs: Vec<u64>,
}

impl LeaseRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.seqs.len());
        out.extend_from_slice(&self.held.to_le_bytes());
        for seq in &self.seqs {
            out.extend_from_slice(&seq.to_le_bytes());
        }
        out
    }

    pub(super) fn decode(raw: &[u8]) -> Option<Self> {
        let (held, seqs) = raw.split_first_chunk::<4>()?;
        if seqs.len() % 8 != 0 {
            return None;
        }
        Some(Self {
            held: u32::from_le_bytes(*held),
            seqs: seqs
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        })
    }
}

/// The immutable part of a message, as stored in [`BODIES`].
pub(super) fn encode_body(id: &MessageId, content_type: ContentType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + body.len());
    out.extend_from_slice(&id.0);
    out.push(content_type.to_byte());
    out.extend_from_slice(body);
    out
}

/// Splits a [`BODIES`] record into id, content type and body.
pub(super) fn decode_body(raw: &[u8]) -> Option<(MessageId, ContentType, &[u8])> {
    if raw.len() < 17 {
        return None;
    }
    let id = MessageId(raw[..16].try_into().ok()?);
    let content_type = ContentType::from_byte(raw[16])?;
    Some((id, content_type, &raw[17..]))
}

/// Per-queue counters, kept exact by every transaction that moves messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub backlog_count: u64,
    pub backlog_bytes: u64,
    pub in_flight: u64,
    pub sent: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub expired: u64,
}

impl Counters {
    pub(super) const LEN: usize = 9 * 8;

    fn fields(&self) -> [u64; 9] {
        [
            self.backlog_count,
            self.backlog_bytes,
            self.in_flight,
            self.sent,
            self.acked,
            self.retried,
            self.dead_lettered,
            self.dropped,
            self.expired,
        ]
    }

    pub(super) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        for (chunk, value) in out.chunks_exact_mut(8).zip(self.fields()) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    pub(super) fn decode(raw: &[u8; Self::LEN]) -> Self {
        let f: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Self {
            backlog_count: f[0],
            backlog_bytes: f[1],
            in_flight: f[2],
            sent: f[3],
            acked: f[4],
            retried: f[5],
            dead_lettered: f[6],
            dropped: f[7],
            expired: f[8],
        }
    }

    /// Accounts for a message entering the queue.
    pub(super) fn add_message(&mut self, size: u32) {
        self.backlog_count += 1;
        self.backlog_bytes += u64::from(size);
    }

    /// Accounts for a message leaving the queue.
    pub(super) fn remove_message(&mut self, size: u32) {
        self.backlog_count = self.backlog_count.saturating_sub(1);
        self.backlog_bytes = self.backlog_bytes.saturating_sub(u64::from(size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        for placement in [
            Placement::Ready {
                visible_at: 17,
                ticket: u64::MAX,
            },
            Placement::Leased {
                deadline: 99,
                ticket: 3,
            },
        ] {
            let state = MessageState {
                timestamp_ms: 1_700_000_000_000,
                attempts: 4,
                size: 128_000,
                placement,
            };
            assert_eq!(MessageState::decode(&state.encode()), state);
        }
    }

    #[test]
    fn counters_and_bodies_round_trip() {
        let c = Counters {
            backlog_count: 1,
            backlog_bytes: 2,
            in_flight: 3,
            sent: 4,
            acked: 5,
            retried: 6,
            dead_lettered: 7,
            dropped: 8,
            expired: 9,
        };
        assert_eq!(Counters::decode(&c.encode()), c);

        let lease = LeaseRecord {
            held: 2,
            seqs: vec![1, u64::MAX],
        };
        assert_eq!(LeaseRecord::decode(&lease.encode()), Some(lease));
        assert_eq!(LeaseRecord::decode(&[1, 0, 0, 0, 9]), None);

        let id = MessageId([7; 16]);
        let raw = encode_body(&id, ContentType::Text, b"hello");
        assert_eq!(
            decode_body(&raw),
            Some((id, ContentType::Text, &b"hello"[..]))
        );
        assert_eq!(decode_body(b"short"), None);
    }
}
