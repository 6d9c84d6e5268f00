//! The embedded default backend: every queue in one redb file.
//!
//! Writes go through one writer thread that group-commits ([`writer`]); reads (metrics, peek,
//! listings) use their own read transactions on the blocking thread pool and never wait for a
//! commit (only for a compaction, which has the file to itself). The file is compacted when the writer is idle after a large drain ([`compact`]).

mod compact;
mod ops;
mod records;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::{Context, bail};
use async_trait::async_trait;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend};
use tokio::sync::watch;

pub use self::compact::{Compacted, Compaction, compact_file};
use self::ops::{metrics_of, stored};
use self::records::{
    COUNTERS, Counters, MESSAGES, META, QUEUES, QueueRecord, READY, SCHEMA_VERSION, migrate_from_2,
};
use self::writer::{Txn, Work, Writer, WriterState};
use super::Broker;
use super::clock::{Clock, SystemClock};
use super::error::{BrokerError, BrokerResult};
use super::types::{
    Backlog, LeaseId, LeaseOptions, LeasedBatch, LeasedMessage, Message, Outcome, QueueInfo,
    QueueMetrics, QueueSettings, Readiness, SendRequest, SettleReport, SweepReport,
};

/// How to open a [`RedbBroker`].
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// Source of time (the system clock unless testing).
    pub clock: Arc<dyn Clock>,
    /// redb's page cache in bytes. Bounds memory use with large backlogs.
    pub cache_size_bytes: usize,
    /// When a database file (not one on a custom storage backend) is compacted on its own.
    pub compaction: Compaction,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            cache_size_bytes: 64 * 1024 * 1024,
            compaction: Compaction::default(),
        }
    }
}

impl RedbOptions {
    /// Default options with another clock.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            clock: Arc::new(clock),
            ..Self::default()
        }
    }
}

/// Durable queues in one redb database file.
pub(crate) struct RedbBroker {
    /// Shared by the readers and the writer thread; the writer takes it alone to compact.
    db: Arc<RwLock<Database>>,
    writer: Writer,
    clock: Arc<dyn Clock>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for RedbBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBroker").finish_non_exhaustive()
    }
}

impl RedbBroker {
    /// Opens the database at `path`, creating it if missing. Leases held when the previous
    /// process stopped are expired at once and count as failed attempts.
    pub(crate) fn open(path: impl AsRef<Path>, options: RedbOptions) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let db = redb::Builder::new()
            .set_cache_size(options.cache_size_bytes)
            .create(path)
            .with_context(|| format!("opening queue database {}", path.display()))?;
        let compaction = Some((path.to_owned(), options.compaction));
        Self::start(db, options, compaction)
            .with_context(|| format!("loading queue database {}", path.display()))
    }

    /// Opens a database on a custom storage backend (the power-loss tests use one that keeps
    /// only synced bytes).
    pub(crate) fn open_with_backend(
        backend: impl StorageBackend,
        options: RedbOptions,
    ) -> anyhow::Result<Self> {
        let db = redb::Builder::new()
            .set_cache_size(options.cache_size_bytes)
            .create_with_backend(backend)
            .context("opening queue database")?;
        Self::start(db, options, None).context("loading queue database")
    }

    fn start(
        db: Database,
        options: RedbOptions,
        compaction: Option<(PathBuf, Compaction)>,
    ) -> anyhow::Result<Self> {
        let state = recover(&db, options.clock.now_ms())?;
        let db = Arc::new(RwLock::new(db));
        let changes = watch::Sender::new(0);
        let writer = Writer::start(
            db.clone(),
            state,
            options.clock.clone(),
            changes.clone(),
            compaction,
        );
        Ok(Self {
            db,
            writer,
            clock: options.clock,
            changes,
        })
    }

    /// Runs `read` in a read transaction off the async reactor.
    async fn read<T, F>(&self, read: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction, u64) -> BrokerResult<T> + Send + 'static,
    {
        let db = self.db.clone();
        let now = self.clock.now_ms();
        tokio::task::spawn_blocking(move || {
            let txn = db
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .begin_read()?;
            read(&txn, now)
        })
        .await
        .map_err(|e| BrokerError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// Creates missing tables, checks the schema version, loads the writer's memory and expires
/// the leases of the previous process, in one transaction.
fn recover(db: &Database, now: u64) -> anyhow::Result<WriterState> {
    let txn = db
        .begin_write()
        .context("starting the recovery transaction")?;
    let mut state = WriterState::default();
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(2) => {
                let moved = migrate_from_2(&txn).context("upgrading the database from schema 2")?;
                meta.insert("schema_version", SCHEMA_VERSION)?;
                tracing::info!(
                    messages = moved,
                    "upgraded the queue database to schema {SCHEMA_VERSION}"
                );
            }
            Some(other) => bail!(
                "the database has schema version {other}; this host understands {SCHEMA_VERSION}"
            ),
        }
        state.next_seq = meta.get("next_seq")?.map_or(1, |v| v.value());
        state.next_queue_id = meta.get("next_queue_id")?.map_or(1, |v| v.value() as u32);
        for entry in txn.open_table(QUEUES)?.iter()? {
            let (name, raw) = entry?;
            let record: QueueRecord = serde_json::from_slice(raw.value())
                .with_context(|| format!("reading the settings of queue `{}`", name.value()))?;
            state.names.insert(record.id, name.value().to_owned());
            state.queues.insert(name.value().to_owned(), record);
        }
        for entry in txn.open_table(COUNTERS)?.iter()? {
            let (id, raw) = entry?;
            state
                .counters
                .insert(id.value(), Counters::decode(&raw.value()));
        }
    }
    {
        let mut ctx = Txn::open(&txn, &mut state, now)?;
        let expired = ctx.expire_leases(true)?;
        if expired > 0 {
            tracing::warn!(
                leases = expired,
                "messages in flight when the host last stopped are retried"
            );
        }
        ctx.flush()?;
    }
    txn.commit().context("committing recovery")?;
    Ok(state)
}

/// Reads a queue's record in a read transaction.
fn queue_record(txn: &ReadTransaction, name: &str) -> BrokerResult<QueueRecord> {
    let queues = txn.open_table(QUEUES)?;
    let raw = queues
        .get(name)?
        .ok_or_else(|| BrokerError::UnknownQueue(name.to_owned()))?;
    serde_json::from_slice(raw.value())
        .map_err(|e| BrokerError::Unavailable(format!("queue `{name}` record: {e}")))
}

fn read_info(txn: &ReadTransaction, name: &str, now: u64) -> BrokerResult<QueueInfo> {
    let record = queue_record(txn, name)?;
    Ok(QueueInfo {
        name: name.to_owned(),
        metrics: read_metrics(txn, record.id, now)?,
        settings: record.settings,
        paused: record.paused,
    })
}

fn read_metrics(txn: &ReadTransaction, id: u32, now: u64) -> BrokerResult<QueueMetrics> {
    let counters = txn
        .open_table(COUNTERS)?
        .get(id)?
        .map(|raw| Counters::decode(&raw.value()))
        .unwrap_or_default();
    metrics_of(
        &counters,
        &txn.open_table(MESSAGES)?,
        &txn.open_table(READY)?,
        id,
        now,
    )
}

#[async_trait]
impl Broker for RedbBroker {
    async fn create_queue(&self, name: &str, settings: QueueSettings) -> BrokerResult<QueueInfo> {
        let name = name.to_owned();
        self.writer
            .submit(move |txn| {
                txn.create_queue(&name, settings)?;
                txn.info(&name)
            })
            .await
    }

    async fn configure_queue(
        &self,
        name: &str,
        settings: QueueSettings,
    ) -> BrokerResult<QueueInfo> {
        let name = name.to_owned();
        self.writer
            .submit(move |txn| {
                txn.configure_queue(&name, settings)?;
                txn.info(&name)
            })
            .await
    }

    async fn delete_queue(&self, name: &str) -> BrokerResult<u64> {
        let name = name.to_owned();
        self.writer.submit(move |txn| txn.delete_queue(&name)).await
    }

    async fn list_queues(&self) -> BrokerResult<Vec<QueueInfo>> {
        self.read(|txn, now| {
            let names = txn
                .open_table(QUEUES)?
                .iter()?
                .map(|entry| entry.map(|(name, _)| name.value().to_owned()))
                .collect::<Result<Vec<_>, _>>()?;
            names.iter().map(|name| read_info(txn, name, now)).collect()
        })
        .await
    }

    async fn queue_info(&self, name: &str) -> BrokerResult<QueueInfo> {
        let name = name.to_owned();
        self.read(move |txn, now| read_info(txn, &name, now)).await
    }

    async fn send(&self, queue: &str, request: SendRequest) -> BrokerResult<Backlog> {
        let queue = queue.to_owned();
        self.writer
            .submit(move |txn| txn.send(&queue, vec![request], None))
            .await
    }

    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<SendRequest>,
        delay_seconds: Option<u32>,
    ) -> BrokerResult<Backlog> {
        let queue = queue.to_owned();
        self.writer
            .submit(move |txn| txn.send(&queue, requests, delay_seconds))
            .await
    }

    async fn lease(&self, queue: &str, options: LeaseOptions) -> BrokerResult<Vec<LeasedMessage>> {
        let queue = queue.to_owned();
        self.writer
            .submit(move |txn| txn.lease(&queue, options))
            .await
    }

    async fn settle(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
    ) -> BrokerResult<SettleReport> {
        let queue = queue.to_owned();
        self.writer
            .submit(move |txn| txn.settle(&queue, outcomes))
            .await
    }

    async fn settle_and_lease(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
        options: LeaseOptions,
    ) -> BrokerResult<(SettleReport, LeasedBatch)> {
        let queue = queue.to_owned();
        self.writer
            .submit(move |txn| txn.settle_and_lease(&queue, outcomes, options))
            .await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        let queue = queue.to_owned();
        self.writer
            .submit(move |txn| txn.set_paused(&queue, paused))
            .await
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        let queue = queue.to_owned();
        self.writer.submit(move |txn| txn.purge(&queue)).await
    }

    async fn peek(&self, queue: &str, limit: u32) -> BrokerResult<Vec<Message>> {
        let queue = queue.to_owned();
        self.read(move |txn, _| {
            let id = queue_record(txn, &queue)?.id;
            let ready = txn.open_table(READY)?;
            let messages = txn.open_table(MESSAGES)?;
            let mut out = Vec::new();
            for entry in ready
                .range((id, 0, 0)..=(id, u64::MAX, u64::MAX))?
                .take(limit as usize)
            {
                let seq = entry?.1.value();
                let raw = messages.get((id, seq))?.ok_or_else(|| {
                    BrokerError::Unavailable(format!("message {seq} is waiting but not stored"))
                })?;
                out.push(stored(seq, raw.value())?.message());
            }
            Ok(out)
        })
        .await
    }

    async fn replay(&self, from: &str, to: &str, limit: u64) -> BrokerResult<u64> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.writer
            .submit(move |txn| txn.replay(&from, &to, limit))
            .await
    }

    async fn sweep(&self) -> BrokerResult<SweepReport> {
        self.writer
            .submit_as(Work::Maintenance, |txn| txn.sweep())
            .await
    }

    async fn readiness(&self, queue: &str, max: u32) -> BrokerResult<Readiness> {
        let queue = queue.to_owned();
        self.read(move |txn, now| {
            let record = queue_record(txn, &queue)?;
            if record.paused {
                return Ok(Readiness {
                    now_ms: now,
                    paused: true,
                    ..Readiness::default()
                });
            }
            let id = record.id;
            let ready = txn.open_table(READY)?;
            let mut readiness = Readiness {
                now_ms: now,
                ..Readiness::default()
            };
            for entry in ready
                .range((id, 0, 0)..=(id, now, u64::MAX))?
                .take(max as usize)
            {
                let (_, visible_at, _) = entry?.0.value();
                readiness.oldest_visible_at_ms.get_or_insert(visible_at);
                readiness.visible += 1;
            }
            readiness.next_visible_at_ms = match ready
                .range((id, now + 1, 0)..=(id, u64::MAX, u64::MAX))?
                .next()
            {
                Some(entry) => Some(entry?.0.value().1),
                None => None,
            };
            Ok(readiness)
        })
        .await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn metrics(&self, queue: &str) -> BrokerResult<QueueMetrics> {
        let queue = queue.to_owned();
        self.read(move |txn, now| read_metrics(txn, queue_record(txn, &queue)?.id, now))
            .await
    }

    async fn close(self: Arc<Self>) -> BrokerResult<()> {
        let Ok(Self { db, mut writer, .. }) = Arc::try_unwrap(self) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            writer.stop();
            drop(db);
        })
        .await
        .map_err(|e| BrokerError::Unavailable(format!("closing the queue database: {e}")))
    }
}

macro_rules! storage_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for BrokerError {
            fn from(err: $error) -> Self {
                BrokerError::Unavailable(err.to_string())
            }
        }
    )*};
}

storage_errors!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);
