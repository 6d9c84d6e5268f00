//! One write transaction: the statements it runs, the counter deltas and notifications it
//! collects, and how PostgreSQL errors become [`BrokerError`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as _;

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{Shared, ms};
use crate::error::BrokerError;

/// Number of counter rows per queue; see the `counters` table in [`super::schema`].
pub(super) const COUNTER_SHARDS: i16 = 16;

/// Why a transaction's operation stopped.
#[derive(Debug)]
pub(super) enum TxnError {
    /// A broker-level answer (unknown queue, paused, bad input…): the transaction is rolled
    /// back and the error returned as is.
    Broker(BrokerError),
    /// PostgreSQL failed while doing `what`.
    Pg {
        /// What the broker was doing, for the message.
        what: &'static str,
        /// The driver's error.
        err: tokio_postgres::Error,
    },
    /// The connection broke while the transaction `xid` was committing: it may have
    /// committed or not (see `PostgresBroker::commit_outcome`).
    CommitLost {
        /// The transaction's id (`pg_current_xact_id()`), as text.
        xid: String,
        /// The driver's error.
        err: tokio_postgres::Error,
    },
}

impl From<BrokerError> for TxnError {
    fn from(err: BrokerError) -> Self {
        TxnError::Broker(err)
    }
}

impl TxnError {
    /// True for conflicts PostgreSQL resolves by aborting one transaction (deadlock,
    /// serialization failure): running the transaction again is safe and will succeed.
    pub(super) fn is_retriable(&self) -> bool {
        matches!(self, TxnError::Pg { err, .. } if matches!(
            err.code(),
            Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
        ))
    }

    /// The error as callers see it.
    pub(super) fn into_broker(self, op: &str) -> BrokerError {
        match self {
            TxnError::Broker(err) => err,
            TxnError::Pg { what, err } => unavailable(op, what, &err),
            TxnError::CommitLost { err, .. } => BrokerError::OutcomeUnknown(format!(
                "the connection to PostgreSQL broke while {op} was committing: {}",
                describe(&err)
            )),
        }
    }
}

/// A [`BrokerError::Unavailable`] naming the operation, the step and PostgreSQL's reason.
pub(super) fn unavailable(op: &str, what: &str, err: &tokio_postgres::Error) -> BrokerError {
    BrokerError::Unavailable(format!(
        "PostgreSQL failed during {op} ({what}): {}",
        describe(err)
    ))
}

/// PostgreSQL's own message for server errors, else the driver's error and its causes.
pub(super) fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} [SQLSTATE {}]", db.message(), db.code().code());
    }
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Attaches the step being run to a driver error.
pub(super) trait During<T> {
    /// Names the step that failed.
    fn during(self, what: &'static str) -> Result<T, TxnError>;
}

impl<T> During<T> for Result<T, tokio_postgres::Error> {
    fn during(self, what: &'static str) -> Result<T, TxnError> {
        self.map_err(|err| TxnError::Pg { what, err })
    }
}

/// Signed changes to one queue's counters, added to one counter shard at flush.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delta {
    pub backlog_count: i64,
    pub backlog_bytes: i64,
    pub in_flight: i64,
    pub sent: i64,
    pub acked: i64,
    pub retried: i64,
    pub dead_lettered: i64,
    pub dropped: i64,
    pub expired: i64,
}

impl Delta {
    /// Accounts for messages entering the queue.
    pub(super) fn add_messages(&mut self, count: usize, bytes: i64) {
        self.backlog_count += count as i64;
        self.backlog_bytes += bytes;
    }

    /// Accounts for messages leaving the queue.
    pub(super) fn remove_messages(&mut self, count: usize, bytes: i64) {
        self.backlog_count -= count as i64;
        self.backlog_bytes -= bytes;
    }
}

/// An open write transaction and what it will do at commit.
pub(super) struct Tx<'a> {
    txn: Transaction<'a>,
    /// The host clock's time when the transaction began (ms since the epoch).
    pub now: u64,
    pub shared: &'a Shared,
    deltas: BTreeMap<i64, Delta>,
    notify: BTreeSet<String>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(txn: Transaction<'a>, now: u64, shared: &'a Shared) -> Self {
        Self {
            txn,
            now,
            shared,
            deltas: BTreeMap::new(),
            notify: BTreeSet::new(),
        }
    }

    /// `now` as stored.
    pub(super) fn now_ms(&self) -> i64 {
        ms(self.now)
    }

    /// The counter changes of queue `id` in this transaction.
    pub(super) fn delta(&mut self, id: i64) -> &mut Delta {
        self.deltas.entry(id).or_default()
    }

    /// Forgets pending counter changes of a queue being deleted.
    pub(super) fn forget_delta(&mut self, id: i64) {
        self.deltas.remove(&id);
    }

    /// Notifies other hosts once committed that messages of `queue` may have become visible.
    pub(super) fn notify(&mut self, queue: &str) {
        self.notify.insert(queue.to_owned());
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &'static str,
    ) -> Result<Vec<Row>, TxnError> {
        let statement = self.txn.prepare_cached(sql).await.during(what)?;
        self.txn.query(&statement, params).await.during(what)
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &'static str,
    ) -> Result<Option<Row>, TxnError> {
        let statement = self.txn.prepare_cached(sql).await.during(what)?;
        self.txn.query_opt(&statement, params).await.during(what)
    }

    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &'static str,
    ) -> Result<Row, TxnError> {
        let statement = self.txn.prepare_cached(sql).await.during(what)?;
        self.txn.query_one(&statement, params).await.during(what)
    }

    pub(super) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &'static str,
    ) -> Result<u64, TxnError> {
        let statement = self.txn.prepare_cached(sql).await.during(what)?;
        self.txn.execute(&statement, params).await.during(what)
    }

    /// Runs `first`, then `second`, sending `second` without waiting for `first`'s answer
    /// (one round trip instead of two). PostgreSQL still runs them in order: `second` sees
    /// what `first` did, or waited for.
    pub(super) async fn execute_then_query_opt(
        &self,
        first: (&str, &[&(dyn ToSql + Sync)]),
        second: (&str, &[&(dyn ToSql + Sync)]),
        what: &'static str,
    ) -> Result<Option<Row>, TxnError> {
        // Both are prepared first, so each query's request leaves on its first poll, in order.
        let s1 = self.txn.prepare_cached(first.0).await.during(what)?;
        let s2 = self.txn.prepare_cached(second.0).await.during(what)?;
        let (_, row) = tokio::try_join!(
            self.txn.execute(&s1, first.1),
            self.txn.query_opt(&s2, second.1)
        )
        .during(what)?;
        Ok(row)
    }

    /// `count` fresh values of the global sequence, ascending.
    pub(super) async fn tickets(&self, count: usize) -> Result<Vec<i64>, TxnError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .query(
                "SELECT nextval('message_seq') FROM generate_series(1, $1::int4)",
                &[&(count as i32)],
                "drawing tickets",
            )
            .await?;
        let mut tickets: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        tickets.sort_unstable();
        Ok(tickets)
    }

    /// The counter changes of queue `id` not yet written.
    pub(super) fn pending(&self, id: i64) -> Delta {
        self.deltas.get(&id).copied().unwrap_or_default()
    }

    /// Writes the pending counter changes (to one randomly chosen shard per queue, in queue
    /// order so that concurrent transactions never wait for each other in a cycle). Called
    /// before reading counters back and before commit. Returns the transaction's id (see
    /// [`Self::commit`]) when it wrote anything: the last write reads it on the way.
    pub(super) async fn flush(&mut self) -> Result<Option<String>, TxnError> {
        let shard: i16 = rand::random_range(0..COUNTER_SHARDS);
        let mut xid = None;
        for (id, d) in std::mem::take(&mut self.deltas) {
            if d == Delta::default() {
                continue;
            }
            let row = self
                .query_one(
                    "INSERT INTO counters AS c (queue_id, shard, backlog_count, backlog_bytes, \
                         in_flight, sent, acked, retried, dead_lettered, dropped, expired) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (queue_id, shard) DO UPDATE SET \
                         backlog_count = c.backlog_count + EXCLUDED.backlog_count, \
                         backlog_bytes = c.backlog_bytes + EXCLUDED.backlog_bytes, \
                         in_flight = c.in_flight + EXCLUDED.in_flight, \
                         sent = c.sent + EXCLUDED.sent, \
                         acked = c.acked + EXCLUDED.acked, \
                         retried = c.retried + EXCLUDED.retried, \
                         dead_lettered = c.dead_lettered + EXCLUDED.dead_lettered, \
                         dropped = c.dropped + EXCLUDED.dropped, \
                         expired = c.expired + EXCLUDED.expired \
                     RETURNING pg_current_xact_id()::text",
                    &[
                        &id,
                        &shard,
                        &d.backlog_count,
                        &d.backlog_bytes,
                        &d.in_flight,
                        &d.sent,
                        &d.acked,
                        &d.retried,
                        &d.dead_lettered,
                        &d.dropped,
                        &d.expired,
                    ],
                    "updating counters",
                )
                .await?;
            xid = Some(row.get(0));
        }
        Ok(xid)
    }

    /// Flushes and commits; returns the queues to notify other hosts about. If the connection
    /// breaks during the commit (the server's reply is lost), the transaction may or may not
    /// have committed: that is [`TxnError::CommitLost`], with the transaction's id (read before
    /// the commit) to ask the server about once it is reachable again.
    pub(super) async fn commit(mut self) -> Result<BTreeSet<String>, TxnError> {
        let xid: String = match self.flush().await? {
            Some(xid) => xid,
            None => self
                .txn
                .query_one("SELECT pg_current_xact_id()::text", &[])
                .await
                .during("reading the transaction id")?
                .get(0),
        };
        match self.txn.commit().await {
            Ok(()) => Ok(self.notify),
            // A server error (a constraint checked at commit, say) means it did not commit.
            Err(err) if err.as_db_error().is_some() => Err(TxnError::Pg {
                what: "committing",
                err,
            }),
            Err(err) => Err(TxnError::CommitLost { xid, err }),
        }
    }
}
