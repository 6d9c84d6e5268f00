//! Table layout and the fixed binary encodings of the records stored in them.
//!
//! A message is one record in [`MESSAGES`]: its small mutable state (attempts, size, where it
//! is) in a fixed-size prefix, then its id, content type and body ([`Stored`]). Exactly one
//! index entry says where a message is: [`READY`] when it waits for delivery (visible or
//! delayed), [`LEASES`] while a consumer holds it. Sending writes the record and its ready
//! entry, leasing rewrites the record (the attempt count) and drops the ready entry, and an ack
//! removes the record: one write to the message table per step. (Schema 2 kept the state and
//! the body in two tables, which cost a second write per step; [`migrate_from_2`] merges them.)

use anyhow::Context;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::types::{ContentType, Message, MessageId, QueueSettings};

/// Bumped when the layout changes incompatibly.
pub(super) const SCHEMA_VERSION: u64 = 3;

/// Counters: `schema_version`, `next_seq`, `next_queue_id`.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Queue name → JSON [`QueueRecord`].
pub(super) const QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("queues");
/// Queue id → [`Counters`].
pub(super) const COUNTERS: TableDefinition<u32, [u8; Counters::LEN]> =
    TableDefinition::new("counters");
/// (queue id, seq) → a [`Stored`] message. Seqs are global and never reused; ordered by seq, so
/// the first entry of a queue is its oldest message.
pub(super) const MESSAGES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("messages");
/// Schema 2: message seq → id, content type and body.
const BODIES_2: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// Schema 2: (queue id, seq) → [`MessageState`].
const STATES_2: TableDefinition<(u32, u64), [u8; MessageState::LEN]> =
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

/// A message as stored in [`MESSAGES`]: the encoded [`MessageState`], the id (16 bytes), the
/// content type (1 byte), the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    /// The state, as decoded from (and written back to) the record's prefix by [`Self::record`].
    pub state: MessageState,
    record: Vec<u8>,
}

impl Stored {
    const ID_AT: usize = MessageState::LEN;
    const BODY_AT: usize = MessageState::LEN + 17;

    /// A new message.
    pub(super) fn new(
        state: MessageState,
        id: &MessageId,
        content_type: ContentType,
        body: &[u8],
    ) -> Self {
        let mut record = Vec::with_capacity(Self::BODY_AT + body.len());
        record.extend_from_slice(&state.encode());
        record.extend_from_slice(&id.0);
        record.push(content_type.to_byte());
        record.extend_from_slice(body);
        Self { state, record }
    }

    /// Reads a record; `None` if it is malformed.
    pub(super) fn decode(record: &[u8]) -> Option<Self> {
        if record.len() < Self::BODY_AT {
            return None;
        }
        ContentType::from_byte(record[Self::BODY_AT - 1])?;
        Some(Self {
            state: Self::state_of(record)?,
            record: record.to_vec(),
        })
    }

    /// Only the state of a record (scans that stop at the state need not copy the body).
    pub(super) fn state_of(record: &[u8]) -> Option<MessageState> {
        record
            .first_chunk::<{ MessageState::LEN }>()
            .map(MessageState::decode)
    }

    /// The record to store, with the current [`Self::state`].
    pub(super) fn record(&mut self) -> &[u8] {
        self.record[..MessageState::LEN].copy_from_slice(&self.state.encode());
        &self.record
    }

    pub(super) fn id(&self) -> MessageId {
        let id = &self.record[Self::ID_AT..Self::BODY_AT - 1];
        MessageId(id.try_into().expect("decode checked the length"))
    }

    /// The message as a consumer sees it.
    pub(super) fn message(&self) -> Message {
        let content_type = ContentType::from_byte(self.record[Self::BODY_AT - 1])
            .expect("decode checked the content type");
        Message {
            id: self.id(),
            timestamp_ms: self.state.timestamp_ms,
            content_type,
            body: self.record[Self::BODY_AT..].to_vec(),
            attempts: self.state.attempts,
        }
    }
}

/// Merges a schema 2 database's states and bodies into [`MESSAGES`], in the caller's
/// transaction (recovery's), and drops the old tables.
pub(super) fn migrate_from_2(txn: &WriteTransaction) -> anyhow::Result<u64> {
    let mut moved = 0;
    {
        let states = txn.open_table(STATES_2)?;
        let bodies = txn.open_table(BODIES_2)?;
        let mut messages = txn.open_table(MESSAGES)?;
        for entry in states.iter()? {
            let (key, state) = entry?;
            let (queue, seq) = key.value();
            let body = bodies
                .get(seq)?
                .with_context(|| format!("message {seq} has a state but no body"))?;
            let body = body.value();
            let (id, rest) = body
                .split_first_chunk::<16>()
                .with_context(|| format!("message {seq} has a malformed body record"))?;
            let (&content_type, body) = rest
                .split_first()
                .with_context(|| format!("message {seq} has a malformed body record"))?;
            let content_type = ContentType::from_byte(content_type)
                .with_context(|| format!("message {seq} has an unknown content type"))?;
            let mut stored = Stored::new(
                MessageState::decode(&state.value()),
                &MessageId(*id),
                content_type,
                body,
            );
            messages.insert((queue, seq), stored.record())?;
            moved += 1;
        }
    }
    txn.delete_table(STATES_2)?;
    txn.delete_table(BODIES_2)?;
    Ok(moved)
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
    use crate::{Clock, LeaseOptions, RedbOptions, Storage};

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
    fn counters_and_leases_round_trip() {
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
    }

    #[test]
    fn a_stored_message_keeps_its_body_when_its_state_changes() {
        let id = MessageId([7; 16]);
        let mut state = MessageState {
            timestamp_ms: 5,
            attempts: 0,
            size: 5,
            placement: Placement::Ready {
                visible_at: 5,
                ticket: 9,
            },
        };
        let mut stored = Stored::new(state, &id, ContentType::Text, b"hello");
        state.attempts = 3;
        stored.state = state;
        let again = Stored::decode(stored.record()).expect("a well-formed record");
        assert_eq!(again.state, state);
        assert_eq!(
            again.message(),
            Message {
                id,
                timestamp_ms: 5,
                content_type: ContentType::Text,
                body: b"hello".to_vec(),
                attempts: 3,
            }
        );
        assert_eq!(Stored::decode(&again.record[..Stored::BODY_AT - 1]), None);
        let mut bad_type = again.record.clone();
        bad_type[Stored::BODY_AT - 1] = 99;
        assert_eq!(Stored::decode(&bad_type), None);
    }

    /// Writes what a schema 2 host left at `path` (see the test below).
    fn write_schema_2(path: &std::path::Path, now: u64) {
        let db = redb::Database::create(path).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert("schema_version", 2).expect("meta");
            meta.insert("next_seq", 10).expect("meta");
            meta.insert("next_queue_id", 2).expect("meta");
            let record = QueueRecord {
                id: 1,
                settings: QueueSettings::default(),
                paused: false,
            };
            let json = serde_json::to_vec(&record).expect("json");
            let mut queues = txn.open_table(QUEUES).expect("queues");
            queues.insert("q", json.as_slice()).expect("queues");
            let counters = Counters {
                backlog_count: 2,
                backlog_bytes: 9,
                in_flight: 1,
                sent: 2,
                ..Counters::default()
            };
            let mut table = txn.open_table(COUNTERS).expect("counters");
            table.insert(1, counters.encode()).expect("counters");
            let mut states = txn.open_table(STATES_2).expect("states");
            let mut bodies = txn.open_table(BODIES_2).expect("bodies");
            let mut ready = txn.open_table(READY).expect("ready");
            let mut leases = txn.open_table(LEASES).expect("leases");
            for (seq, body, placement) in [
                (
                    3u64,
                    &b"first"[..],
                    Placement::Leased {
                        deadline: now + 60_000,
                        ticket: 5,
                    },
                ),
                (
                    4,
                    &b"next"[..],
                    Placement::Ready {
                        visible_at: now,
                        ticket: 4,
                    },
                ),
            ] {
                let state = MessageState {
                    timestamp_ms: now,
                    attempts: if seq == 3 { 2 } else { 0 },
                    size: body.len() as u32,
                    placement,
                };
                states.insert((1, seq), state.encode()).expect("state");
                let mut raw = vec![seq as u8; 16];
                raw.push(ContentType::Text.to_byte());
                raw.extend_from_slice(body);
                bodies.insert(seq, raw.as_slice()).expect("body");
                if let Placement::Ready { visible_at, ticket } = placement {
                    ready.insert((1, visible_at, ticket), seq).expect("ready");
                }
            }
            let lease = LeaseRecord {
                held: 1,
                seqs: vec![3],
            };
            leases
                .insert((now + 60_000, 1, 5), lease.encode().as_slice())
                .expect("lease");
        }
        txn.commit().expect("commit");
    }

    /// A database written by a schema 2 host: queue `q` with a waiting message and one that
    /// was on its second attempt when the host stopped. Opening it merges the two tables.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_2_database_is_upgraded_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("queues.redb");
        let now = crate::SystemClock.now_ms();
        write_schema_2(&path, now);
        let broker = crate::open(Storage::redb(&path, RedbOptions::default()))
            .await
            .expect("open a schema 2 database");
        // The lease the old host held expired on open: the first message waits again.
        let leased = broker
            .lease("q", LeaseOptions::new(10, 60_000))
            .await
            .expect("lease");
        let got: Vec<_> = leased
            .iter()
            .map(|m| {
                (
                    m.message.body.clone(),
                    m.message.attempts,
                    m.message.id.0[0],
                )
            })
            .collect();
        assert_eq!(got, [(b"next".to_vec(), 1, 4), (b"first".to_vec(), 3, 3)]);
        let metrics = broker.metrics("q").await.expect("metrics");
        assert_eq!(
            (metrics.backlog.count, metrics.in_flight, metrics.retried),
            (2, 2, 1)
        );
        broker.close().await.expect("close");
        let db = redb::Database::open(&path).expect("reopen");
        let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
        assert!(txn.open_table(STATES_2).is_err(), "the old tables are gone");
        assert!(txn.open_table(BODIES_2).is_err(), "the old tables are gone");
        assert_eq!(
            txn.open_table(META)
                .expect("meta")
                .get("schema_version")
                .expect("meta")
                .map(|v| v.value()),
            Some(SCHEMA_VERSION)
        );
    }
}
