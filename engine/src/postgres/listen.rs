//! Wake-ups between hosts: a dedicated connection that `LISTEN`s on the schema's channel and
//! bumps [`Broker::changes`](crate::Broker::changes) on every notification; the
//! [`Notifier`] that sends this host's notifications after its commits; and a slow tick as a
//! safety net (a delayed message that comes due commits nothing, and a notification sent while
//! a listener was reconnecting is lost).

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Object, Pool};
use tokio::sync::{Notify, oneshot, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use super::txn::describe;

/// How often the listener checks that its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Bumps `changes`.
pub(super) fn bump(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// Listens on `channel` for as long as the task runs, reconnecting with backoff when the
/// connection drops. `ready` is answered once the first `LISTEN` is in place (or with the
/// first connection error, so that `connect` can report it).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    changes: watch::Sender<u64>,
    ready: oneshot::Sender<anyhow::Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = listen_once(&config, &channel, &changes, &mut ready, &mut backoff).await;
        let err = match result {
            Ok(()) => anyhow::anyhow!("the server closed the connection"),
            Err(err) => err,
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(err));
            return;
        }
        tracing::warn!(
            error = format!("{err:#}"),
            retry_in_ms = backoff.as_millis() as u64,
            "PostgreSQL notification listener lost its connection; reconnecting"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, `LISTEN`, then bump on every notification until the
/// connection fails. After a reconnection, `changes` is bumped once the `LISTEN` is in place:
/// whatever was notified while the listener was away is lost, so consumers should look.
/// `backoff` is reset once listening.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    changes: &watch::Sender<u64>,
    ready: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
    backoff: &mut Duration,
) -> anyhow::Result<()> {
    let mut listening = false;
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("connecting the notification listener")?;
    // The connection must be polled for the client's statements to complete; notifications
    // arriving meanwhile are handled too.
    let listen_sql = format!("LISTEN {channel}");
    let mut pending = Some(Box::pin(client.batch_execute(&listen_sql)));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) => bump(changes),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(anyhow::anyhow!(describe(&e)))
                        .context("notification listener connection");
                }
                None => return Ok(()),
            },
            result = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                result
                    .map_err(|e| anyhow::anyhow!(describe(&e)))
                    .context("LISTEN or ping on the notification connection")?;
                if !listening {
                    listening = true;
                    *backoff = Duration::from_millis(100);
                    tracing::debug!(channel, "listening for PostgreSQL notifications");
                    match ready.take() {
                        Some(ready) => {
                            let _ = ready.send(Ok(()));
                        }
                        None => bump(changes),
                    }
                }
            }
            _ = ping.tick(), if pending.is_none() => {
                pending = Some(Box::pin(client.batch_execute("")));
            }
        }
    }
}

/// Bumps `changes` every `every`, for as long as the task runs.
pub(super) async fn tick(every: Duration, changes: watch::Sender<u64>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        bump(&changes);
    }
}

/// Sends the `NOTIFY`s of committed transactions, off their callers' path.
///
/// PostgreSQL serializes the commits of every transaction that notifies (a database-wide lock
/// is held from before the commit until after its WAL flush), so a `NOTIFY` inside every send
/// would cap the whole database at one durable commit at a time. Instead each commit hands
/// its queue names here, and one task sends them in small transactions that commit without
/// waiting for the WAL flush (a notification needs no durability). Under load many commits
/// share one notification. A notification lost with a crashing host is covered by the slow
/// poll of every listener.
#[derive(Debug, Default)]
pub(super) struct Notifier {
    pending: std::sync::Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl Notifier {
    /// Queues notifications for `queues`.
    pub(super) fn push(&self, queues: BTreeSet<String>) {
        if queues.is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(queues);
        self.wake.notify_one();
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// Sends what `notifier` collects on `channel`, for as long as the task runs.
pub(super) async fn notify(notifier: Arc<Notifier>, pool: Pool, channel: String) {
    loop {
        notifier.wake.notified().await;
        let queues = notifier.take();
        if queues.is_empty() {
            continue;
        }
        let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit TO off;");
        for queue in &queues {
            // Queue names are lowercase letters, digits, `-` and `_`: nothing to escape.
            sql.push_str(&format!(" NOTIFY {channel}, '{queue}';"));
        }
        sql.push_str(" COMMIT;");
        let client = match pool.get().await {
            Ok(client) => client,
            Err(err) => {
                tracing::debug!(error = %err, "no connection to send notifications; the slow poll covers them");
                continue;
            }
        };
        if let Err(err) = client.batch_execute(&sql).await {
            tracing::debug!(error = %describe(&err), "sending notifications failed; the slow poll covers them");
            // The connection may be left inside the transaction: do not give it back.
            drop(Object::take(client));
        }
    }
}
