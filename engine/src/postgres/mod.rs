//! The shared backend: queues in PostgreSQL, so that several host processes serve the same
//! queues.
//!
//! Every state change is one transaction on a pooled connection ([`txn`], [`ops`]); reads are
//! single statements. Times always come from the host's [`Clock`], passed as parameters (never
//! `now()` in SQL), so tests can drive time and hosts agree with their own clocks. Leasing uses
//! `FOR UPDATE SKIP LOCKED`; a lease past its deadline is turned into a failed attempt by
//! whichever host sees it first (a `lease` of that queue, a `settle` naming it, or `sweep`).
//! After a commit that may make messages visible the host `NOTIFY`s the schema's channel;
//! every host `LISTEN`s on it and bumps [`Broker::changes`] ([`listen`]).
//!
//! The schema is created and migrated at [`PostgresBroker::connect`] ([`schema`]).

mod listen;
mod ops;
mod schema;
mod txn;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use self::listen::Notifier;
use self::ops::{EXPIRY_BATCH, info_all_sql, info_from, info_one_sql, queue_row};
use self::txn::{Tx, TxnError, describe, unavailable};
use super::Broker;
use super::clock::{Clock, SystemClock};
use super::error::{BrokerError, BrokerResult};
use super::types::{
    Backlog, LeaseId, LeaseOptions, LeasedBatch, LeasedMessage, Message, MessageId, Outcome,
    QueueInfo, QueueMetrics, QueueSettings, Readiness, SendRequest, SettleReport, SweepReport,
};

/// How often a transaction aborted by a deadlock or serialization failure is run again
/// before the error is returned.
const MAX_CONFLICT_RETRIES: u32 = 8;

/// How long a host keeps asking whether a commit whose reply was lost went through (the
/// server may be restarting) before it answers that the outcome is unknown.
const COMMIT_OUTCOME_WAIT: Duration = Duration::from_secs(30);

/// How to connect a [`PostgresBroker`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Source of time (the system clock unless testing). Every time the broker stores or
    /// compares comes from here, never from the database server.
    pub clock: Arc<dyn Clock>,
    /// The schema holding the broker's tables (created if missing). Hosts that share queues
    /// use the same database and schema; different schemas are independent sets of queues.
    /// 1 to 40 lowercase letters, digits and `_`, starting with a letter. Default `wasmq`.
    pub schema: String,
    /// Most pooled connections (the notification listener uses one more). Default 16.
    pub max_connections: usize,
    /// How long to wait for a new connection, and for a free pooled one, before an operation
    /// fails with [`BrokerError::Unavailable`]. Default 5 s.
    pub connect_timeout: Duration,
    /// `changes()` is bumped at least this often, whether or not a notification came (so
    /// consumers notice delayed messages coming due, and anything a dropped listener
    /// missed). Default 1 s.
    pub poll_interval: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            schema: "wasmq".to_owned(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl PostgresOptions {
    /// Default options with another clock.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            clock: Arc::new(clock),
            ..Self::default()
        }
    }

    /// These options with another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

/// What the broker's operations and background tasks share.
pub(super) struct Shared {
    pool: Pool,
    clock: Arc<dyn Clock>,
    changes: watch::Sender<u64>,
    /// Sends other hosts the notifications of this host's commits.
    notifier: Arc<Notifier>,
    /// The schema holding the tables.
    schema: String,
    /// Prefix of queue lock keys (the schema), so that schemas do not share locks.
    pub(super) lock_prefix: String,
}

/// Durable queues in a PostgreSQL database, shared by every host connected to the same
/// database and schema.
pub(crate) struct PostgresBroker {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PostgresBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBroker")
            .field("schema", &self.shared.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Milliseconds as stored (`BIGINT`).
pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Milliseconds or counts as read back.
pub(super) fn ums(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Where a connection goes, for messages (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Runs `$body` (an expression using `$tx: &mut Tx`) in a transaction on a pooled connection
/// and commits it. A transaction PostgreSQL aborted to resolve a deadlock or serialization
/// conflict is run again. (A macro rather than a function taking an async closure: the
/// futures must be `Send` for `async_trait`, which closures borrowing their captures cannot
/// promise yet.)
macro_rules! in_txn {
    ($self:ident, $name:literal, |$tx:ident| $body:expr) => {{
        let mut conflicts = 0u32;
        loop {
            let mut client = $self.client($name).await?;
            let txn = client
                .transaction()
                .await
                .map_err(|e| unavailable($name, "starting a transaction", &e))?;
            let mut tx = Tx::new(txn, $self.shared.clock.now_ms(), &$self.shared);
            let result = {
                let $tx = &mut tx;
                $body.await
            };
            match $self.finish(tx, result).await {
                Ok(value) => break Ok(value),
                Err(err) if err.is_retriable() && conflicts < MAX_CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(
                        op = $name,
                        conflicts,
                        "transaction conflict; running it again"
                    );
                }
                Err(err) => break Err(err.into_broker($name)),
            }
        }
    }};
}

impl PostgresBroker {
    /// Connects to the database at `url`, creates or migrates the schema, and starts listening
    /// for other hosts' notifications.
    ///
    /// `url` is a libpq-style connection string, either a URL
    /// (`postgres://user:password@host:5432/dbname?connect_timeout=5`) or key/value pairs
    /// (`host=127.0.0.1 port=5432 user=wasmq dbname=queues`). TLS is not supported: connect
    /// over a trusted network or a Unix socket (`host=/var/run/postgresql`).
    ///
    /// Leases held by other hosts are left alone: they may be alive. A lease of a host that
    /// died expires at its deadline like any other.
    pub(crate) async fn connect(url: &str, options: PostgresOptions) -> anyhow::Result<Self> {
        schema::check_schema_name(&options.schema)?;
        if options.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .context("parsing the PostgreSQL connection string")?;
        let target = describe_target(&config);
        let schema = options.schema.clone();
        let mut server_options = config.get_options().unwrap_or_default().to_owned();
        if !server_options.is_empty() {
            server_options.push(' ');
        }
        server_options.push_str(&format!("-c search_path={schema}"));
        config.options(server_options);
        if config.get_application_name().is_none() {
            config.application_name("wasmq");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }

        Self::prepare_schema(&config, &schema, options.clock.now_ms())
            .await
            .with_context(|| format!("preparing PostgreSQL schema `{schema}` at {target}"))?;

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .context("building the PostgreSQL connection pool")?;

        let changes = watch::Sender::new(0);
        let channel = format!("wasmq_{schema}");
        let (ready, listening) = oneshot::channel();
        let listener = tokio::spawn(listen::listen(
            config,
            channel.clone(),
            changes.clone(),
            ready,
        ));
        let ticker = tokio::spawn(listen::tick(options.poll_interval, changes.clone()));
        let notifier = Arc::new(Notifier::default());
        let sender = tokio::spawn(listen::notify(
            notifier.clone(),
            pool.clone(),
            channel.clone(),
        ));
        let broker = Self {
            shared: Arc::new(Shared {
                pool,
                clock: options.clock,
                changes,
                notifier,
                lock_prefix: format!("{schema}."),
                schema: schema.clone(),
            }),
            tasks: vec![listener, ticker, sender],
        };
        match tokio::time::timeout(options.connect_timeout * 2, listening).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                return Err(err)
                    .with_context(|| format!("listening for notifications at {target}"));
            }
            Ok(Err(_)) => bail!("the notification listener for {target} stopped"),
            Err(_) => bail!("timed out starting the notification listener for {target}"),
        }
        tracing::info!(%target, schema, "connected to PostgreSQL");
        Ok(broker)
    }

    /// Creates or migrates the schema on a connection of its own, and warns when commits are
    /// not durable.
    async fn prepare_schema(
        config: &tokio_postgres::Config,
        schema: &str,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))
            .context("connecting")?;
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %describe(&err), "PostgreSQL setup connection closed");
            }
        });
        let result = async {
            schema::migrate(&mut client, schema, now_ms).await?;
            let synchronous_commit: String = client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .context("reading synchronous_commit")?
                .get(0);
            if synchronous_commit == "off" {
                tracing::warn!(
                    "PostgreSQL has synchronous_commit = off: a send may be answered before \
                     its message is durable, and a server crash can lose it"
                );
            }
            anyhow::Ok(())
        }
        .await;
        drop(client);
        let _ = driver.await;
        result
    }

    /// A pooled connection.
    async fn client(&self, op: &str) -> BrokerResult<deadpool_postgres::Client> {
        self.shared.pool.get().await.map_err(|err| {
            let reason = match &err {
                PoolError::Backend(err) => describe(err),
                PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                    "timed out waiting for a free pooled connection".to_owned()
                }
                PoolError::Timeout(_) => "timed out connecting to the server".to_owned(),
                other => other.to_string(),
            };
            BrokerError::Unavailable(format!("PostgreSQL unavailable during {op}: {reason}"))
        })
    }

    /// Commits `tx` when `result` is a success; bumps `changes` and hands the notifications
    /// to the notifier once committed.
    async fn finish<T>(&self, tx: Tx<'_>, result: Result<T, TxnError>) -> Result<T, TxnError> {
        let value = result?;
        let notify = match tx.commit().await {
            Ok(notify) => notify,
            Err(TxnError::CommitLost { xid, err }) => match self.commit_outcome(&xid).await {
                // It went through: the caller's write is stored, whatever the lost reply said.
                Some(true) => BTreeSet::new(),
                Some(false) => {
                    return Err(TxnError::Pg {
                        what: "committing (the transaction was rolled back)",
                        err,
                    });
                }
                None => return Err(TxnError::CommitLost { xid, err }),
            },
            Err(err) => return Err(err),
        };
        listen::bump(&self.shared.changes);
        self.shared.notifier.push(notify);
        Ok(value)
    }

    /// Whether transaction `xid`, whose commit reply was lost, committed: asks the server
    /// (`pg_xact_status`) on a new connection, for up to [`COMMIT_OUTCOME_WAIT`] while the
    /// server is unreachable or the transaction still in progress. `None` when it cannot be
    /// known (the server stayed away, or no longer remembers the transaction).
    async fn commit_outcome(&self, xid: &str) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + COMMIT_OUTCOME_WAIT;
        let mut pause = Duration::from_millis(50);
        loop {
            let status: Option<String> = match self.shared.pool.get().await {
                Ok(client) => match client
                    .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
                    .await
                {
                    Ok(row) => row.get(0),
                    Err(err) => {
                        tracing::debug!(error = %describe(&err), "asking for a commit's outcome failed");
                        Some("unreachable".into())
                    }
                },
                Err(_) => Some("unreachable".into()),
            };
            match status.as_deref() {
                Some("committed") => return Some(true),
                Some("aborted") => return Some(false),
                // Too old for the server to remember.
                None => return None,
                // "in progress", or the server is still away.
                Some(_) if tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Some(_) => return None,
            }
        }
    }

    /// Runs one read statement.
    async fn read(
        &self,
        name: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> BrokerResult<Vec<tokio_postgres::Row>> {
        let client = self.client(name).await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| unavailable(name, "preparing a query", &e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| unavailable(name, "reading", &e))
    }

    /// One queue's settings, state and metrics, for operation `op`.
    async fn info(&self, op: &'static str, name: &str) -> BrokerResult<QueueInfo> {
        let rows = self
            .read(op, &info_one_sql(), &[&self.now_ms(), &name])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| BrokerError::UnknownQueue(name.to_owned()))?;
        info_from(row).map_err(|e| e.into_broker(op))
    }

    fn now_ms(&self) -> i64 {
        ms(self.shared.clock.now_ms())
    }
}

#[async_trait]
impl Broker for PostgresBroker {
    async fn create_queue(&self, name: &str, settings: QueueSettings) -> BrokerResult<QueueInfo> {
        in_txn!(self, "create_queue", |tx| tx.create_queue(name, &settings))
    }

    async fn configure_queue(
        &self,
        name: &str,
        settings: QueueSettings,
    ) -> BrokerResult<QueueInfo> {
        in_txn!(self, "configure_queue", |tx| tx
            .configure_queue(name, &settings))
    }

    async fn delete_queue(&self, name: &str) -> BrokerResult<u64> {
        in_txn!(self, "delete_queue", |tx| tx.delete_queue(name))
    }

    async fn list_queues(&self) -> BrokerResult<Vec<QueueInfo>> {
        let rows = self
            .read("list_queues", &info_all_sql(), &[&self.now_ms()])
            .await?;
        rows.iter()
            .map(|row| info_from(row).map_err(|e| e.into_broker("list_queues")))
            .collect()
    }

    async fn queue_info(&self, name: &str) -> BrokerResult<QueueInfo> {
        self.info("queue_info", name).await
    }

    async fn send(&self, queue: &str, request: SendRequest) -> BrokerResult<Backlog> {
        let requests = [request];
        in_txn!(self, "send", |tx| tx.send(queue, &requests, None))
    }

    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<SendRequest>,
        delay_seconds: Option<u32>,
    ) -> BrokerResult<Backlog> {
        in_txn!(self, "send_batch", |tx| tx.send(
            queue,
            &requests,
            delay_seconds
        ))
    }

    async fn lease(&self, queue: &str, options: LeaseOptions) -> BrokerResult<Vec<LeasedMessage>> {
        in_txn!(self, "lease", |tx| tx.lease(queue, options))
    }

    async fn settle(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
    ) -> BrokerResult<SettleReport> {
        in_txn!(self, "settle", |tx| tx.settle(queue, &outcomes))
    }

    async fn settle_and_lease(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
        options: LeaseOptions,
    ) -> BrokerResult<(SettleReport, LeasedBatch)> {
        in_txn!(self, "settle_and_lease", |tx| tx
            .settle_and_lease(queue, &outcomes, options))
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        in_txn!(self, "set_paused", |tx| tx.set_paused(queue, paused))
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        in_txn!(self, "purge", |tx| tx.purge(queue))
    }

    async fn peek(&self, queue: &str, limit: u32) -> BrokerResult<Vec<Message>> {
        let rows = self
            .read(
                "peek",
                "SELECT id, name, settings, paused FROM queues WHERE name = $1",
                &[&queue],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| BrokerError::UnknownQueue(queue.to_owned()))?;
        let record = queue_row(row).map_err(|e| e.into_broker("peek"))?;
        let retention_ms = u64::from(record.settings.message_retention_period) * 1000;
        let cutoff = ms(self.shared.clock.now_ms().saturating_sub(retention_ms));
        // Messages past their retention are left out: no lease would hand them out.
        let rows = self
            .read(
                "peek",
                "SELECT message_id, timestamp_ms, content_type, body, attempts FROM messages \
                 WHERE queue_id = $1 AND lease_deadline IS NULL AND timestamp_ms > $2 \
                 ORDER BY visible_at, ticket LIMIT $3",
                &[&record.id, &cutoff, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let raw: &[u8] = row.get(0);
                let id = raw.try_into().map(MessageId).map_err(|_| {
                    BrokerError::Unavailable(format!(
                        "queue database is inconsistent: a message id is {} bytes long",
                        raw.len()
                    ))
                })?;
                let content_type = u8::try_from(row.get::<_, i16>(2))
                    .ok()
                    .and_then(super::types::ContentType::from_byte)
                    .ok_or_else(|| {
                        BrokerError::Unavailable(
                            "queue database is inconsistent: unknown content type".into(),
                        )
                    })?;
                Ok(Message {
                    id,
                    timestamp_ms: ums(row.get(1)),
                    content_type,
                    body: row.get(3),
                    attempts: row.get::<_, i32>(4).max(0) as u32,
                })
            })
            .collect()
    }

    async fn replay(&self, from: &str, to: &str, limit: u64) -> BrokerResult<u64> {
        in_txn!(self, "replay", |tx| tx.replay(from, to, limit))
    }

    async fn sweep(&self) -> BrokerResult<SweepReport> {
        let queues = self
            .read("sweep", "SELECT id, name FROM queues ORDER BY name", &[])
            .await?;
        let mut report = SweepReport::default();
        for row in &queues {
            let (id, name): (i64, String) = (row.get(0), row.get(1));
            loop {
                let (leases, messages) = in_txn!(self, "sweep", |tx| tx.sweep_queue(&name, id))?;
                report.leases_expired += leases;
                report.messages_expired += messages;
                if leases < EXPIRY_BATCH as u64 && messages < EXPIRY_BATCH as u64 {
                    break;
                }
            }
        }
        report.dedup_keys_expired = in_txn!(self, "sweep", |tx| tx.sweep_dedup())?;
        Ok(report)
    }

    async fn metrics(&self, queue: &str) -> BrokerResult<QueueMetrics> {
        Ok(self.info("metrics", queue).await?.metrics)
    }

    async fn readiness(&self, queue: &str, max: u32) -> BrokerResult<Readiness> {
        let now = self.shared.clock.now_ms();
        let rows = self
            .read(
                "readiness",
                "SELECT q.paused, v.visible, v.oldest, \
                        (SELECT min(m.visible_at) FROM messages m \
                          WHERE m.queue_id = q.id AND m.lease_deadline IS NULL \
                            AND m.visible_at > $2) AS next \
                   FROM queues q, \
                LATERAL (SELECT count(*) AS visible, min(r.visible_at) AS oldest \
                           FROM (SELECT m.visible_at FROM messages m \
                                  WHERE m.queue_id = q.id AND m.lease_deadline IS NULL \
                                    AND m.visible_at <= $2 \
                                  ORDER BY m.visible_at, m.ticket LIMIT $3) r) v \
                  WHERE q.name = $1",
                &[&queue, &ms(now), &i64::from(max)],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| BrokerError::UnknownQueue(queue.to_owned()))?;
        if row.get::<_, bool>(0) {
            return Ok(Readiness {
                now_ms: now,
                paused: true,
                ..Readiness::default()
            });
        }
        Ok(Readiness {
            now_ms: now,
            paused: false,
            visible: u32::try_from(row.get::<_, i64>(1)).unwrap_or(u32::MAX),
            oldest_visible_at_ms: row.get::<_, Option<i64>>(2).map(ums),
            next_visible_at_ms: row.get::<_, Option<i64>>(3).map(ums),
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Closes every connection; dropping the broker stops the background tasks.
    async fn close(self: Arc<Self>) -> BrokerResult<()> {
        if let Ok(broker) = Arc::try_unwrap(self) {
            broker.shared.pool.close();
        }
        Ok(())
    }
}
