//! The state transitions, each run inside one [`Tx`].
//!
//! They follow the redb backend's (`engine/redb/ops.rs`) step by step; what differs is how
//! several hosts stay out of each other's way:
//!
//! - A transaction that works on a queue first takes a shared transaction-scoped advisory lock
//!   on the queue's name; `delete_queue` takes it exclusively. So a queue cannot vanish under
//!   a send, a lease or a dead-letter move, without any write to the queue's row.
//! - Leasing, expiring and sweeping pick rows with `FOR UPDATE SKIP LOCKED`: two hosts never
//!   hand out the same message, and neither waits for the other.
//! - Settling locks the named rows (in seq order) and checks the lease ticket: a decision for
//!   a lease that expired is taken late when it still can be (see `Broker::settle`).
//! - Counters are changed by deltas at the end of the transaction (see [`Tx::flush`]).
//!
//! Every operation checks its input before its first write.

use std::collections::HashMap;

use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::txn::{During, Tx, TxnError};
use super::{ms, ums};
use crate::error::BrokerError;
use crate::precedence;
use crate::types::{
    Backlog, ContentType, LeaseId, LeaseOptions, LeasedBatch, LeasedMessage, Message, MessageId,
    Outcome, QueueInfo, QueueMetrics, QueueSettings, SendRequest, SettleReport,
};

/// Advisory lock key (first half) of queue locks: "wqq" in ASCII.
const QUEUE_LOCK: i32 = 0x0077_7171;

/// Most expired leases or retention-expired messages one transaction handles; a sweep runs
/// more transactions until none is full.
pub(super) const EXPIRY_BATCH: i64 = 1_000;

type Res<T> = Result<T, TxnError>;

/// A queue as stored.
#[derive(Debug, Clone)]
pub(super) struct QueueRow {
    pub id: i64,
    pub name: String,
    pub settings: QueueSettings,
    pub paused: bool,
}

/// How a transaction holds a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Any number of transactions work on the queue.
    Shared,
    /// The queue is being deleted (or created): nobody else works on it.
    Exclusive,
}

/// A leased message picked for settling or expiry.
#[derive(Debug, Clone)]
struct Held {
    seq: i64,
    message_id: MessageId,
    attempts: u32,
    size: i64,
}

impl Held {
    fn from_row(row: &Row) -> Res<Self> {
        Ok(Self {
            seq: row.get("seq"),
            message_id: message_id(row.get("message_id"))?,
            attempts: row.get::<_, i32>("attempts").max(0) as u32,
            size: i64::from(row.get::<_, i32>("size")),
        })
    }
}

/// Where a message named by a settle is: held by the lease with this ticket, or waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Leased(u64),
    Waiting,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Retried,
    DeadLettered,
    Dropped,
}

fn corrupt(what: String) -> TxnError {
    TxnError::Broker(BrokerError::Unavailable(format!(
        "queue database is inconsistent: {what}"
    )))
}

fn message_id(raw: &[u8]) -> Res<MessageId> {
    raw.try_into()
        .map(MessageId)
        .map_err(|_| corrupt(format!("a message id is {} bytes long", raw.len())))
}

fn content_type(raw: i16) -> Res<ContentType> {
    u8::try_from(raw)
        .ok()
        .and_then(ContentType::from_byte)
        .ok_or_else(|| corrupt(format!("unknown content type {raw}")))
}

/// Reads a queue row (`id`, `name`, `settings`, `paused`).
pub(super) fn queue_row(row: &Row) -> Res<QueueRow> {
    let Json(settings) = row
        .try_get::<_, Json<QueueSettings>>("settings")
        .during("reading queue settings")?;
    Ok(QueueRow {
        id: row.get("id"),
        name: row.get("name"),
        settings,
        paused: row.get("paused"),
    })
}

/// The statement behind `queue_info`, `list_queues` and `metrics`: settings, state, summed
/// counters, delayed count and oldest timestamp in one snapshot. `$1` is now; `%WHERE%` is
/// replaced by a filter on `q`.
const INFO_SQL: &str = "\
SELECT q.id, q.name, q.settings, q.paused,
       coalesce(c.backlog_count, 0)::int8 AS backlog_count,
       coalesce(c.backlog_bytes, 0)::int8 AS backlog_bytes,
       coalesce(c.in_flight, 0)::int8 AS in_flight,
       coalesce(c.sent, 0)::int8 AS sent,
       coalesce(c.acked, 0)::int8 AS acked,
       coalesce(c.retried, 0)::int8 AS retried,
       coalesce(c.dead_lettered, 0)::int8 AS dead_lettered,
       coalesce(c.dropped, 0)::int8 AS dropped,
       coalesce(c.expired, 0)::int8 AS expired,
       (SELECT count(*) FROM messages m
         WHERE m.queue_id = q.id AND m.lease_deadline IS NULL AND m.visible_at > $1) AS delayed,
       (SELECT min(m.timestamp_ms) FROM messages m WHERE m.queue_id = q.id) AS oldest
  FROM queues q
  LEFT JOIN LATERAL (
       SELECT sum(backlog_count) AS backlog_count, sum(backlog_bytes) AS backlog_bytes,
              sum(in_flight) AS in_flight, sum(sent) AS sent, sum(acked) AS acked,
              sum(retried) AS retried, sum(dead_lettered) AS dead_lettered,
              sum(dropped) AS dropped, sum(expired) AS expired
         FROM counters WHERE queue_id = q.id) c ON TRUE
";

/// `INFO_SQL` for one queue named `$2`.
pub(super) fn info_one_sql() -> String {
    format!("{INFO_SQL} WHERE q.name = $2")
}

/// `INFO_SQL` for every queue, by name.
pub(super) fn info_all_sql() -> String {
    format!("{INFO_SQL} ORDER BY q.name")
}

/// Reads one row of [`INFO_SQL`].
pub(super) fn info_from(row: &Row) -> Res<QueueInfo> {
    let queue = queue_row(row)?;
    let n = |column: &str| ums(row.get::<_, i64>(column));
    Ok(QueueInfo {
        name: queue.name,
        settings: queue.settings,
        paused: queue.paused,
        metrics: QueueMetrics {
            backlog: Backlog {
                count: n("backlog_count"),
                bytes: n("backlog_bytes"),
                oldest_timestamp_ms: row.get::<_, Option<i64>>("oldest").map(ums),
            },
            in_flight: n("in_flight"),
            delayed: n("delayed"),
            sent: n("sent"),
            acked: n("acked"),
            retried: n("retried"),
            dead_lettered: n("dead_lettered"),
            dropped: n("dropped"),
            expired: n("expired"),
        },
    })
}

impl Tx<'_> {
    /// Takes the queue lock on `name`, then reads the queue (in one round trip); `None` if it
    /// does not exist. The read is a statement of its own, so its snapshot is taken once the
    /// lock is held: a queue deleted meanwhile is seen gone.
    async fn find_queue(&self, name: &str, hold: Hold) -> Res<Option<QueueRow>> {
        let key = format!("{}{name}", self.shared.lock_prefix);
        let lock = match hold {
            Hold::Shared => "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))",
            Hold::Exclusive => "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        };
        self.execute_then_query_opt(
            (lock, &[&QUEUE_LOCK, &key]),
            (
                "SELECT id, name, settings, paused FROM queues WHERE name = $1",
                &[&name],
            ),
            "locking and reading the queue",
        )
        .await?
        .as_ref()
        .map(queue_row)
        .transpose()
    }

    /// Locks and reads a queue that must exist.
    async fn queue(&self, name: &str, hold: Hold) -> Res<QueueRow> {
        self.find_queue(name, hold)
            .await?
            .ok_or_else(|| BrokerError::UnknownQueue(name.to_owned()).into())
    }

    /// The queue's settings, state and metrics as seen inside this transaction.
    pub(super) async fn info(&mut self, name: &str) -> Res<QueueInfo> {
        self.flush().await?;
        let row = self
            .query_one(
                &info_one_sql(),
                &[&self.now_ms(), &name],
                "reading the queue",
            )
            .await?;
        info_from(&row)
    }

    async fn check_dead_letter(&self, name: &str, settings: &QueueSettings) -> Res<()> {
        match &settings.consumer.dead_letter_queue {
            Some(dlq) => match self.find_queue(dlq, Hold::Shared).await? {
                Some(_) => Ok(()),
                None => Err(BrokerError::UnknownDeadLetterQueue {
                    queue: name.to_owned(),
                    dead_letter_queue: dlq.clone(),
                }
                .into()),
            },
            None => Ok(()),
        }
    }

    pub(super) async fn create_queue(
        &mut self,
        name: &str,
        settings: &QueueSettings,
    ) -> Res<QueueInfo> {
        if self.find_queue(name, Hold::Exclusive).await?.is_some() {
            return Err(BrokerError::QueueExists(name.to_owned()).into());
        }
        self.check_dead_letter(name, settings).await?;
        let created = self
            .query_opt(
                "INSERT INTO queues (name, settings) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&name, &Json(settings)],
                "creating the queue",
            )
            .await?;
        if created.is_none() {
            return Err(BrokerError::QueueExists(name.to_owned()).into());
        }
        self.info(name).await
    }

    pub(super) async fn configure_queue(
        &mut self,
        name: &str,
        settings: &QueueSettings,
    ) -> Res<QueueInfo> {
        let queue = self.queue(name, Hold::Shared).await?;
        self.check_dead_letter(name, settings).await?;
        self.execute(
            "UPDATE queues SET settings = $2 WHERE id = $1",
            &[&queue.id, &Json(settings)],
            "changing the queue's settings",
        )
        .await?;
        self.info(name).await
    }

    pub(super) async fn set_paused(&mut self, name: &str, paused: bool) -> Res<()> {
        let queue = self.queue(name, Hold::Shared).await?;
        self.execute(
            "UPDATE queues SET paused = $2 WHERE id = $1",
            &[&queue.id, &paused],
            "pausing or resuming the queue",
        )
        .await?;
        if !paused {
            self.notify(name);
        }
        Ok(())
    }

    pub(super) async fn delete_queue(&mut self, name: &str) -> Res<u64> {
        let queue = self.queue(name, Hold::Exclusive).await?;
        let used_by = self
            .query_opt(
                "SELECT name FROM queues \
                 WHERE name <> $1 AND settings -> 'consumer' ->> 'dead_letter_queue' = $1 \
                 ORDER BY name LIMIT 1",
                &[&name],
                "looking for queues that dead-letter into the queue",
            )
            .await?;
        if let Some(row) = used_by {
            return Err(BrokerError::DeadLetterInUse {
                queue: name.to_owned(),
                used_by: row.get(0),
            }
            .into());
        }
        let deleted = self
            .execute(
                "DELETE FROM messages WHERE queue_id = $1",
                &[&queue.id],
                "deleting the queue's messages",
            )
            .await?;
        for (sql, what) in [
            (
                "DELETE FROM dedup WHERE queue_id = $1",
                "deleting the queue's dedup keys",
            ),
            (
                "DELETE FROM counters WHERE queue_id = $1",
                "deleting the queue's counters",
            ),
            ("DELETE FROM queues WHERE id = $1", "deleting the queue"),
        ] {
            self.execute(sql, &[&queue.id], what).await?;
        }
        self.forget_delta(queue.id);
        Ok(deleted)
    }

    /// Stores already-validated messages.
    pub(super) async fn send(
        &mut self,
        name: &str,
        requests: &[SendRequest],
        batch_delay: Option<u32>,
    ) -> Res<Backlog> {
        let queue = self.queue(name, Hold::Shared).await?;
        let dedup_ms = u64::from(queue.settings.dedup_window) * 1000;
        let requests: Vec<&SendRequest> = if dedup_ms > 0 {
            self.dedup(queue.id, requests, dedup_ms).await?
        } else {
            requests.iter().collect()
        };
        let now = self.now;
        let count = requests.len();
        let mut ids = Vec::with_capacity(count);
        let mut types = Vec::with_capacity(count);
        let mut visible = Vec::with_capacity(count);
        let mut bodies = Vec::with_capacity(count);
        let mut bytes = 0i64;
        for request in requests {
            let delay = request
                .delay_seconds
                .or(batch_delay)
                .unwrap_or(queue.settings.delivery_delay);
            ids.push(MessageId::random().0.to_vec());
            types.push(i16::from(request.content_type.to_byte()));
            visible.push(ms(now + u64::from(delay) * 1000));
            bytes += request.body.len() as i64;
            bodies.push(request.body.as_slice());
        }
        if count > 0 {
            // The sequence is drawn in array order, so a batch keeps its order; a fresh
            // message's ticket is its seq.
            self.execute(
                "WITH fresh AS ( \
                     SELECT nextval('message_seq') AS seq, u.message_id, u.content_type, \
                            u.body, u.visible_at \
                       FROM unnest($2::bytea[], $3::int2[], $4::bytea[], $5::int8[]) \
                            AS u(message_id, content_type, body, visible_at)) \
                 INSERT INTO messages (seq, queue_id, message_id, content_type, body, size, \
                                       timestamp_ms, attempts, ticket, visible_at) \
                 SELECT seq, $1, message_id, content_type, body, octet_length(body), $6, 0, \
                        seq, visible_at \
                   FROM fresh",
                &[&queue.id, &ids, &types, &bodies, &visible, &self.now_ms()],
                "storing messages",
            )
            .await?;
            let delta = self.delta(queue.id);
            delta.add_messages(count, bytes);
            delta.sent += count as i64;
            self.notify(name);
        }
        self.backlog(queue.id).await
    }

    /// Drops the requests whose dedup key is inside its window (or repeats an earlier key of
    /// the same batch) and records the keys of the others.
    async fn dedup<'r>(
        &mut self,
        id: i64,
        requests: &'r [SendRequest],
        dedup_ms: u64,
    ) -> Res<Vec<&'r SendRequest>> {
        let mut keys: Vec<Vec<u8>> = requests
            .iter()
            .filter_map(|r| r.dedup_key.as_ref().map(|k| k.as_bytes().to_vec()))
            .collect();
        if keys.is_empty() {
            return Ok(requests.iter().collect());
        }
        // Sorted, so two batches sharing keys lock them in the same order.
        keys.sort_unstable();
        keys.dedup();
        let until = ms(self.now + dedup_ms);
        let stored = self
            .query(
                "INSERT INTO dedup AS d (queue_id, dedup_key, until_ms) \
                 SELECT $1, k, $2 FROM unnest($3::bytea[]) AS k ORDER BY k \
                 ON CONFLICT (queue_id, dedup_key) DO UPDATE SET until_ms = EXCLUDED.until_ms \
                 WHERE d.until_ms <= $4 \
                 RETURNING dedup_key",
                &[&id, &until, &keys, &self.now_ms()],
                "recording dedup keys",
            )
            .await?;
        let mut fresh: std::collections::HashSet<Vec<u8>> =
            stored.iter().map(|row| row.get(0)).collect();
        Ok(requests
            .iter()
            .filter(|r| match &r.dedup_key {
                // The first request with a fresh key takes it; later ones are duplicates.
                Some(key) => fresh.remove(key.as_bytes()),
                None => true,
            })
            .collect())
    }

    /// Count and bytes (the stored counters and this transaction's pending changes) and oldest
    /// timestamp of queue `id`.
    async fn backlog(&self, id: i64) -> Res<Backlog> {
        let pending = self.pending(id);
        let row = self
            .query_one(
                "SELECT coalesce((SELECT sum(backlog_count) FROM counters WHERE queue_id = $1), 0)::int8, \
                        coalesce((SELECT sum(backlog_bytes) FROM counters WHERE queue_id = $1), 0)::int8, \
                        (SELECT min(timestamp_ms) FROM messages WHERE queue_id = $1)",
                &[&id],
                "reading the backlog",
            )
            .await?;
        Ok(Backlog {
            count: ums(row.get::<_, i64>(0) + pending.backlog_count),
            bytes: ums(row.get::<_, i64>(1) + pending.backlog_bytes),
            oldest_timestamp_ms: row.get::<_, Option<i64>>(2).map(ums),
        })
    }

    pub(super) async fn lease(
        &mut self,
        name: &str,
        options: LeaseOptions,
    ) -> Res<Vec<LeasedMessage>> {
        let queue = self.queue(name, Hold::Shared).await?;
        self.lease_from(name, &queue, options).await
    }

    /// [`Self::lease`] from `queue`, already looked up (and held) in this transaction.
    async fn lease_from(
        &mut self,
        name: &str,
        queue: &QueueRow,
        options: LeaseOptions,
    ) -> Res<Vec<LeasedMessage>> {
        if queue.paused {
            return Err(BrokerError::Paused(name.to_owned()).into());
        }
        // Leases of this queue past their deadline become failed attempts first, so their
        // messages can be handed out again right away.
        self.expire_leases(queue).await?;

        let now = self.now_ms();
        let retention_ms = i64::from(queue.settings.message_retention_period) * 1000;
        let deadline = ms(self.now + options.visibility_timeout_ms);
        let max = options.max_messages as usize;
        let mut leased: Vec<LeasedMessage> = Vec::with_capacity(max);
        while leased.len() < max {
            let wanted = (max - leased.len()) as i64;
            // One round trip: pick the next ready messages, delete those past retention, lease
            // the rest under one fresh ticket. Every row carries the counts (one row without a
            // message when nothing was leased); leased rows come in queue order.
            let rows = self
                .query(
                    "WITH picked AS ( \
                         SELECT seq, visible_at, ticket, timestamp_ms + $4 <= $2 AS expired \
                         FROM messages \
                         WHERE queue_id = $1 AND lease_deadline IS NULL AND visible_at <= $2 \
                         ORDER BY visible_at, ticket LIMIT $3 \
                         FOR UPDATE SKIP LOCKED), \
                     fresh AS (SELECT nextval('message_seq') AS ticket), \
                     gone AS ( \
                         DELETE FROM messages m USING picked p \
                         WHERE m.seq = p.seq AND p.expired \
                         RETURNING m.size), \
                     leased AS ( \
                         UPDATE messages m SET attempts = m.attempts + 1, visible_at = NULL, \
                                lease_deadline = $5, ticket = fresh.ticket \
                         FROM picked p, fresh \
                         WHERE m.seq = p.seq AND NOT p.expired \
                         RETURNING m.seq, m.message_id, m.content_type, m.body, m.timestamp_ms, \
                                   m.attempts, m.ticket, p.visible_at AS ready_at, \
                                   p.ticket AS ready_ticket) \
                     SELECT counts.picked, counts.gone, counts.gone_bytes, l.seq, l.message_id, \
                            l.content_type, l.body, l.timestamp_ms, l.attempts, l.ticket \
                     FROM (SELECT (SELECT count(*) FROM picked) AS picked, \
                                  (SELECT count(*) FROM gone) AS gone, \
                                  (SELECT coalesce(sum(size), 0) FROM gone)::int8 AS gone_bytes \
                          ) counts \
                     LEFT JOIN leased l ON true \
                     ORDER BY l.ready_at, l.ready_ticket",
                    &[&queue.id, &now, &wanted, &retention_ms, &deadline],
                    "leasing messages",
                )
                .await?;
            let Some(first) = rows.first() else {
                return Err(corrupt("leasing returned no counts".to_owned()));
            };
            let picked: i64 = first.get(0);
            let expired: i64 = first.get(1);
            if expired > 0 {
                let delta = self.delta(queue.id);
                delta.remove_messages(expired as usize, first.get(2));
                delta.expired += expired;
            }
            let before = leased.len();
            for row in &rows {
                let Some(seq) = row.get::<_, Option<i64>>(3) else {
                    continue;
                };
                leased.push(LeasedMessage {
                    message: Message {
                        id: message_id(row.get(4))?,
                        timestamp_ms: ums(row.get(7)),
                        content_type: content_type(row.get(5))?,
                        body: row.get(6),
                        attempts: row.get::<_, i32>(8).max(0) as u32,
                    },
                    lease: LeaseId {
                        seq: seq as u64,
                        ticket: row.get::<_, i64>(9) as u64,
                    },
                    lease_deadline_ms: ums(deadline),
                });
            }
            self.delta(queue.id).in_flight += (leased.len() - before) as i64;
            if picked < wanted {
                break;
            }
        }
        Ok(leased)
    }

    pub(super) async fn settle_and_lease(
        &mut self,
        name: &str,
        outcomes: &[(LeaseId, Outcome)],
        options: LeaseOptions,
    ) -> Res<(SettleReport, LeasedBatch)> {
        // Looked up (and held) once: each lookup is a round trip.
        let queue = self.queue(name, Hold::Shared).await?;
        let report = self.settle_in(&queue, outcomes).await?;
        // `lease` refuses a paused queue before its first write: the settlement stands.
        let messages = match self.lease_from(name, &queue, options).await {
            Err(TxnError::Broker(BrokerError::Paused(_))) => Vec::new(),
            leased => leased?,
        };
        let backlog = self.backlog(queue.id).await?;
        Ok((report, LeasedBatch { messages, backlog }))
    }

    pub(super) async fn settle(
        &mut self,
        name: &str,
        outcomes: &[(LeaseId, Outcome)],
    ) -> Res<SettleReport> {
        let queue = self.queue(name, Hold::Shared).await?;
        self.settle_in(&queue, outcomes).await
    }

    /// [`Self::settle`] in `queue`, already looked up (and held) in this transaction.
    #[expect(
        clippy::too_many_lines,
        reason = "one transaction's steps in the order they run: lock, expire, apply, report"
    )]
    async fn settle_in(
        &mut self,
        queue: &QueueRow,
        outcomes: &[(LeaseId, Outcome)],
    ) -> Res<SettleReport> {
        let mut seqs: Vec<i64> = outcomes
            .iter()
            .filter_map(|(lease, _)| i64::try_from(lease.seq).ok())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        // Locked in seq order: concurrent settles of overlapping leases wait, never deadlock.
        // `IN (SELECT unnest(..))` makes the planner look rows up by primary key; with
        // `= ANY($1)` it walked the leased-messages index instead (~2 ms per batch, up to 17).
        let rows = self
            .query(
                "SELECT seq, message_id, attempts, size, ticket, lease_deadline FROM messages \
                 WHERE seq IN (SELECT unnest($1::int8[])) AND queue_id = $2 \
                 ORDER BY seq FOR UPDATE",
                &[&seqs, &queue.id],
                "locking the settled messages",
            )
            .await?;
        let now = self.now_ms();
        let mut found: HashMap<i64, (Held, Place)> = HashMap::with_capacity(rows.len());
        let mut expired: Vec<(i64, Held)> = Vec::new();
        for row in &rows {
            let message = Held::from_row(row)?;
            match row.get::<_, Option<i64>>("lease_deadline") {
                Some(deadline) if deadline <= now => expired.push((deadline, message)),
                Some(_) => {
                    let ticket: i64 = row.get("ticket");
                    found.insert(message.seq, (message, Place::Leased(ticket as u64)));
                }
                None => {
                    found.insert(message.seq, (message, Place::Waiting));
                }
            }
        }
        // A lease past its deadline is a failed attempt even if no sweep has run yet: it is
        // expired first (soonest deadline first), so a late decision below meets the message
        // as the expiry left it, as on redb.
        expired.sort_by_key(|(deadline, m)| (*deadline, m.seq));
        let expired: Vec<Held> = expired.into_iter().map(|(_, m)| m).collect();
        let fates = self
            .fail_attempts(queue, expired.iter().map(|m| (m.clone(), None)).collect())
            .await?;
        for (message, fate) in expired.into_iter().zip(fates) {
            if fate == Fate::Retried {
                found.insert(message.seq, (message, Place::Waiting));
            }
        }

        let mut report = SettleReport::default();
        let (mut acks, mut ack_bytes, mut acked_in_flight) = (Vec::new(), 0, 0);
        let mut failures = Vec::new();
        let mut late_retries = Vec::new();
        for &(lease, outcome) in outcomes {
            let Some((message, place)) = i64::try_from(lease.seq)
                .ok()
                .and_then(|seq| found.remove(&seq))
            else {
                report.stale.push(lease);
                continue;
            };
            let current = place == Place::Leased(lease.ticket);
            match (outcome, place) {
                // Current or late: the consumer is done with the message.
                (Outcome::Ack, place) => {
                    ack_bytes += message.size;
                    acks.push(message.seq);
                    acked_in_flight += i64::from(matches!(place, Place::Leased(_)));
                }
                (Outcome::Retry { delay_seconds }, _) if current => {
                    failures.push((message, delay_seconds));
                }
                // Late, the message waiting again: the expiry counted the failed attempt; the
                // retry only says when it is delivered next.
                (Outcome::Retry { delay_seconds }, Place::Waiting) => {
                    late_retries.push((message.seq, delay_seconds));
                }
                // Late, and a newer lease holds the message: its holder decides.
                (Outcome::Retry { .. }, Place::Leased(_)) => {
                    found.insert(message.seq, (message, place));
                    report.stale.push(lease);
                }
            }
        }
        if !acks.is_empty() {
            self.execute(
                "DELETE FROM messages WHERE seq = ANY($1)",
                &[&acks],
                "deleting acked messages",
            )
            .await?;
            let delta = self.delta(queue.id);
            delta.remove_messages(acks.len(), ack_bytes);
            delta.in_flight -= acked_in_flight;
            delta.acked += acks.len() as i64;
            report.acked = acks.len() as u32;
        }
        if !late_retries.is_empty() {
            let retry_delay = queue.settings.consumer.retry_delay;
            let tickets = self.tickets(late_retries.len()).await?;
            let (seqs, visible): (Vec<i64>, Vec<i64>) = late_retries
                .iter()
                .map(|&(seq, delay)| {
                    let delay = u64::from(delay.unwrap_or(retry_delay));
                    (seq, ms(self.now + delay * 1000))
                })
                .unzip();
            self.execute(
                "UPDATE messages m SET visible_at = u.visible_at, ticket = u.ticket \
                   FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(seq, visible_at, ticket) \
                  WHERE m.seq = u.seq",
                &[&seqs, &visible, &tickets],
                "rescheduling late retries",
            )
            .await?;
            report.retried += late_retries.len() as u32;
            self.notify(&queue.name);
        }
        for fate in self.fail_attempts(queue, failures).await? {
            match fate {
                Fate::Retried => report.retried += 1,
                Fate::DeadLettered => report.dead_lettered += 1,
                Fate::Dropped => report.dropped += 1,
            }
        }
        Ok(report)
    }

    /// Failed attempts of leased messages of `queue`, in order: each is redelivered after its
    /// delay, or dead-lettered / dropped once the queue's `max_retries` are used up
    /// ([`precedence::fate`]). Retried and dead-lettered messages take fresh tickets in this
    /// order, so they queue up behind the messages already waiting.
    #[expect(
        clippy::too_many_lines,
        reason = "one set-based pass per fate (retry, dead-letter, drop), in the order they must run"
    )]
    async fn fail_attempts(
        &mut self,
        queue: &QueueRow,
        failures: Vec<(Held, Option<u32>)>,
    ) -> Res<Vec<Fate>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let consumer = &queue.settings.consumer;
        let mut dlq: Option<Option<QueueRow>> = None;
        let mut plan = Vec::with_capacity(failures.len());
        for (message, delay) in failures {
            let fate = match precedence::fate(message.attempts, consumer, delay) {
                precedence::Fate::Retry { delay_seconds } => (Fate::Retried, delay_seconds),
                precedence::Fate::DeadLetter => {
                    if dlq.is_none() {
                        let found = match &consumer.dead_letter_queue {
                            Some(name) => self.find_queue(name, Hold::Shared).await?,
                            None => None,
                        };
                        dlq = Some(found);
                    }
                    match dlq {
                        Some(Some(_)) => (Fate::DeadLettered, 0),
                        _ => (Fate::Dropped, 0),
                    }
                }
                precedence::Fate::Drop => (Fate::Dropped, 0),
            };
            plan.push((message, fate));
        }
        let needing_tickets = plan
            .iter()
            .filter(|(_, (fate, _))| *fate != Fate::Dropped)
            .count();
        let mut tickets = self.tickets(needing_tickets).await?.into_iter();

        let (mut retry_seqs, mut retry_visible, mut retry_tickets) = (vec![], vec![], vec![]);
        let (mut move_seqs, mut move_tickets, mut move_bytes) = (vec![], vec![], 0i64);
        let (mut drop_seqs, mut drop_bytes) = (vec![], 0i64);
        for (message, (fate, delay)) in &plan {
            match fate {
                Fate::Retried => {
                    retry_seqs.push(message.seq);
                    retry_visible.push(ms(self.now + u64::from(*delay) * 1000));
                    retry_tickets.push(tickets.next().expect("one ticket each"));
                }
                Fate::DeadLettered => {
                    move_seqs.push(message.seq);
                    move_tickets.push(tickets.next().expect("one ticket each"));
                    move_bytes += message.size;
                    tracing::warn!(
                        queue = %queue.name,
                        message_id = %message.message_id,
                        attempts = message.attempts,
                        dead_letter_queue = consumer.dead_letter_queue.as_deref().unwrap_or(""),
                        "retries exhausted; moved to the dead-letter queue"
                    );
                }
                Fate::Dropped => {
                    drop_seqs.push(message.seq);
                    drop_bytes += message.size;
                    tracing::warn!(
                        queue = %queue.name,
                        message_id = %message.message_id,
                        attempts = message.attempts,
                        "retries exhausted and no dead_letter_queue is set; message dropped"
                    );
                }
            }
        }
        if !retry_seqs.is_empty() {
            self.execute(
                "UPDATE messages m SET lease_deadline = NULL, visible_at = u.visible_at, \
                        ticket = u.ticket \
                   FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(seq, visible_at, ticket) \
                  WHERE m.seq = u.seq",
                &[&retry_seqs, &retry_visible, &retry_tickets],
                "scheduling retries",
            )
            .await?;
            let delta = self.delta(queue.id);
            delta.retried += retry_seqs.len() as i64;
            delta.in_flight -= retry_seqs.len() as i64;
            self.notify(&queue.name);
        }
        if let Some(Some(dlq)) = dlq.as_ref().filter(|_| !move_seqs.is_empty()) {
            self.execute(
                "UPDATE messages m SET queue_id = $2, attempts = 0, lease_deadline = NULL, \
                        visible_at = $3, ticket = u.ticket \
                   FROM unnest($1::int8[], $4::int8[]) AS u(seq, ticket) \
                  WHERE m.seq = u.seq",
                &[&move_seqs, &dlq.id, &self.now_ms(), &move_tickets],
                "moving messages to the dead-letter queue",
            )
            .await?;
            let delta = self.delta(queue.id);
            delta.remove_messages(move_seqs.len(), move_bytes);
            delta.in_flight -= move_seqs.len() as i64;
            delta.dead_lettered += move_seqs.len() as i64;
            self.delta(dlq.id).add_messages(move_seqs.len(), move_bytes);
            let dlq_name = dlq.name.clone();
            self.notify(&dlq_name);
        }
        if !drop_seqs.is_empty() {
            self.execute(
                "DELETE FROM messages WHERE seq = ANY($1)",
                &[&drop_seqs],
                "dropping messages",
            )
            .await?;
            let delta = self.delta(queue.id);
            delta.remove_messages(drop_seqs.len(), drop_bytes);
            delta.in_flight -= drop_seqs.len() as i64;
            delta.dropped += drop_seqs.len() as i64;
        }
        Ok(plan.into_iter().map(|(_, (fate, _))| fate).collect())
    }

    /// Turns up to [`EXPIRY_BATCH`] leases of `queue` past their deadline into failed attempts,
    /// soonest deadline first, then oldest message first. Leases another host is settling
    /// or expiring right now are skipped. Returns how many were expired.
    async fn expire_leases(&mut self, queue: &QueueRow) -> Res<u64> {
        let rows = self
            .query(
                "SELECT seq, message_id, attempts, size FROM messages \
                 WHERE queue_id = $1 AND lease_deadline IS NOT NULL AND lease_deadline <= $2 \
                 ORDER BY lease_deadline, seq LIMIT $3 \
                 FOR UPDATE SKIP LOCKED",
                &[&queue.id, &self.now_ms(), &EXPIRY_BATCH],
                "picking expired leases",
            )
            .await?;
        let failures = rows
            .iter()
            .map(|row| Held::from_row(row).map(|m| (m, None)))
            .collect::<Res<Vec<_>>>()?;
        let count = failures.len() as u64;
        self.fail_attempts(queue, failures).await?;
        Ok(count)
    }

    pub(super) async fn purge(&mut self, name: &str) -> Res<u64> {
        let queue = self.queue(name, Hold::Shared).await?;
        let row = self
            .query_one(
                "WITH gone AS (DELETE FROM messages WHERE queue_id = $1 \
                               RETURNING size, lease_deadline) \
                 SELECT count(*), coalesce(sum(size), 0)::int8, count(lease_deadline) FROM gone",
                &[&queue.id],
                "purging the queue",
            )
            .await?;
        let (count, bytes, in_flight): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let delta = self.delta(queue.id);
        delta.remove_messages(count as usize, bytes);
        delta.in_flight -= in_flight;
        Ok(ums(count))
    }

    pub(super) async fn replay(&mut self, from: &str, to: &str, limit: u64) -> Res<u64> {
        let source = self.queue(from, Hold::Shared).await?;
        let target = self.queue(to, Hold::Shared).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT seq, size FROM messages \
                 WHERE queue_id = $1 AND lease_deadline IS NULL \
                 ORDER BY timestamp_ms, seq LIMIT $2 \
                 FOR UPDATE SKIP LOCKED",
                &[&source.id, &limit],
                "picking messages to replay",
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        let bytes: i64 = rows.iter().map(|row| i64::from(row.get::<_, i32>(1))).sum();
        let tickets = self.tickets(seqs.len()).await?;
        self.execute(
            "UPDATE messages m SET queue_id = $2, attempts = 0, visible_at = $3, \
                    ticket = u.ticket \
               FROM unnest($1::int8[], $4::int8[]) AS u(seq, ticket) \
              WHERE m.seq = u.seq",
            &[&seqs, &target.id, &self.now_ms(), &tickets],
            "replaying messages",
        )
        .await?;
        self.delta(source.id).remove_messages(seqs.len(), bytes);
        self.delta(target.id).add_messages(seqs.len(), bytes);
        self.notify(to);
        Ok(seqs.len() as u64)
    }

    /// One sweep step for one queue: up to [`EXPIRY_BATCH`] expired leases and as many
    /// messages past retention. Returns (leases expired, messages expired); a queue deleted
    /// (or replaced) since it was listed is skipped.
    pub(super) async fn sweep_queue(&mut self, name: &str, id: i64) -> Res<(u64, u64)> {
        let Some(queue) = self.find_queue(name, Hold::Shared).await? else {
            return Ok((0, 0));
        };
        if queue.id != id {
            return Ok((0, 0));
        }
        let leases = self.expire_leases(&queue).await?;
        let retention_ms = u64::from(queue.settings.message_retention_period) * 1000;
        let cutoff = ms(self.now.saturating_sub(retention_ms));
        let row = self
            .query_one(
                "WITH gone AS ( \
                     DELETE FROM messages WHERE seq IN ( \
                         SELECT seq FROM messages WHERE queue_id = $1 AND timestamp_ms <= $2 \
                          ORDER BY timestamp_ms, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING size, lease_deadline) \
                 SELECT count(*), coalesce(sum(size), 0)::int8, count(lease_deadline) FROM gone",
                &[&queue.id, &cutoff, &EXPIRY_BATCH],
                "deleting messages past their retention",
            )
            .await?;
        let (count, bytes, in_flight): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let delta = self.delta(queue.id);
        delta.remove_messages(count as usize, bytes);
        delta.in_flight -= in_flight;
        delta.expired += count;
        Ok((leases, ums(count)))
    }

    /// Forgets dedup keys whose window has passed; returns how many.
    pub(super) async fn sweep_dedup(&mut self) -> Res<u64> {
        self.execute(
            "DELETE FROM dedup WHERE until_ms <= $1",
            &[&self.now_ms()],
            "forgetting expired dedup keys",
        )
        .await
    }
}
