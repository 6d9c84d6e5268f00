//! The dispatcher: for one push consumer, assembles batches by size or timeout, leases them,
//! runs the component on them and settles the result in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::engine::precedence::{self, BatchCall};
use crate::engine::{
    Broker, BrokerError, ConsumerSettings, LeaseId, LeaseOptions, Message, MessageId, SettleReport,
};
use crate::runtime::{BatchInput, BatchRun, ConsumerComponent};

mod stats;

pub use self::stats::ConsumerStats;

/// Longest sleep between two looks at the queue when nothing wakes the dispatcher (lease
/// expiries and sweeps do not signal).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Added to the component's timeout to form the lease, so a batch that runs to its time limit
/// is settled by the dispatcher rather than expired.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Feeds one queue to one consumer component, up to `concurrency` batches at a time.
pub struct Dispatcher {
    inner: Arc<Inner>,
    concurrency: u32,
}

struct Inner {
    broker: Arc<dyn Broker>,
    queue: String,
    settings: ConsumerSettings,
    component: ConsumerComponent,
    observer: Option<mpsc::UnboundedSender<BatchStarted>>,
    stats: ConsumerStats,
}

/// Sent to an observer just before a batch is handed to the component.
#[derive(Debug, Clone)]
pub struct BatchStarted {
    /// When the component was called.
    pub at: Instant,
    /// The batch.
    pub messages: Vec<Message>,
}

/// What one delivered batch came to.
#[derive(Debug)]
pub struct Delivery {
    /// What the guest did.
    pub run: BatchRun,
    /// What the broker did with the outcomes.
    pub report: SettleReport,
}

/// A leased batch on its way to the component.
struct LeasedBatch {
    ids: Vec<MessageId>,
    leases: HashMap<MessageId, LeaseId>,
    input: BatchInput,
}

impl Dispatcher {
    /// A dispatcher for `queue` with the batching settings of `settings`, one batch at a time.
    pub fn new(
        broker: Arc<dyn Broker>,
        queue: impl Into<String>,
        settings: ConsumerSettings,
        component: ConsumerComponent,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                queue: queue.into(),
                settings,
                component,
                observer: None,
                stats: ConsumerStats::default(),
            }),
            concurrency: 1,
        }
    }

    /// Lets up to `batches` batches run at once (at least one).
    pub fn with_concurrency(mut self, batches: u32) -> Self {
        self.concurrency = batches.max(1);
        self
    }

    /// Reports every batch's start to `observer` (benchmarks measure send-to-handler latency
    /// with it).
    pub fn observe(mut self, observer: mpsc::UnboundedSender<BatchStarted>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("observe is called before the dispatcher runs")
            .observer = Some(observer);
        self
    }

    /// Records every batch's duration and result in `stats` (served on `GET /metrics`).
    pub fn with_stats(mut self, stats: ConsumerStats) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_stats is called before the dispatcher runs")
            .stats = stats;
        self
    }

    /// Delivers batches until `shutdown` turns true; batches in progress are finished and
    /// settled first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        let mut changes = inner.broker.changes();
        let max = inner.settings.max_batch_size;
        let timeout_ms = u64::from(inner.settings.max_batch_timeout) * 1000;
        let permits = Arc::new(Semaphore::new(self.concurrency as usize));
        let mut running = JoinSet::new();
        tracing::info!(queue = %inner.queue, component = inner.component.name(), concurrency = self.concurrency, "consumer started");
        while !*shutdown.borrow() {
            changes.borrow_and_update();
            while running.try_join_next().is_some() {}
            let wait = match inner.broker.readiness(&inner.queue, max).await {
                Ok(r) if r.paused => IDLE_RECHECK,
                Ok(r) => {
                    let due = r.oldest_visible_at_ms.map(|t| t + timeout_ms);
                    if r.visible >= max || due.is_some_and(|due| due <= r.now_ms) {
                        let permit = tokio::select! {
                            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                            _ = shutdown.changed() => continue,
                        };
                        match inner.lease().await {
                            Ok(Some(batch)) => {
                                let inner = inner.clone();
                                running.spawn(async move {
                                    if let Err(err) = inner.process(batch).await {
                                        tracing::error!(queue = %inner.queue, error = format!("{err:#}"), "delivering a batch failed");
                                    }
                                    drop(permit);
                                });
                                continue;
                            }
                            Ok(None) => continue,
                            Err(err) => {
                                tracing::error!(queue = %inner.queue, error = format!("{err:#}"), "leasing a batch failed");
                                IDLE_RECHECK
                            }
                        }
                    } else {
                        due.or(r.next_visible_at_ms)
                            .map_or(IDLE_RECHECK, |at| {
                                Duration::from_millis(at.saturating_sub(r.now_ms))
                            })
                            .min(IDLE_RECHECK)
                    }
                }
                Err(err) => {
                    tracing::error!(queue = %inner.queue, error = %err, "reading the queue failed");
                    IDLE_RECHECK
                }
            };
            tokio::select! {
                _ = changes.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        while running.join_next().await.is_some() {}
        tracing::info!(queue = %inner.queue, component = inner.component.name(), "consumer stopped");
    }

    /// Leases one batch (whatever is visible, up to the batch size), runs the component on it
    /// and settles it. `None` when nothing was visible or the queue is paused.
    pub async fn deliver_one(&self) -> anyhow::Result<Option<Delivery>> {
        match self.inner.lease().await? {
            Some(batch) => self.inner.process(batch).await.map(Some),
            None => Ok(None),
        }
    }
}

impl Inner {
    async fn lease(&self) -> anyhow::Result<Option<LeasedBatch>> {
        let lease_ms = (self.component.limits().timeout + LEASE_MARGIN).as_millis() as u64;
        let options = LeaseOptions::new(self.settings.max_batch_size, lease_ms);
        let leased = match self.broker.lease(&self.queue, options).await {
            Ok(leased) if leased.is_empty() => return Ok(None),
            Ok(leased) => leased,
            Err(BrokerError::Paused(_)) => return Ok(None),
            Err(err) => return Err(err).context("leasing a batch"),
        };
        let backlog = self
            .broker
            .metrics(&self.queue)
            .await
            .context("reading the backlog")?
            .backlog;
        Ok(Some(LeasedBatch {
            ids: leased.iter().map(|m| m.message.id).collect(),
            leases: leased.iter().map(|m| (m.message.id, m.lease)).collect(),
            input: BatchInput {
                queue: self.queue.clone(),
                messages: leased.into_iter().map(|m| m.message).collect(),
                backlog,
            },
        }))
    }

    /// Runs the component on a leased batch and settles the outcome in one transaction.
    async fn process(&self, batch: LeasedBatch) -> anyhow::Result<Delivery> {
        let LeasedBatch { ids, leases, input } = batch;
        if let Some(observer) = &self.observer {
            let _ = observer.send(BatchStarted {
                at: Instant::now(),
                messages: input.messages.clone(),
            });
        }
        let component = self.component.clone();
        let started = Instant::now();
        let run = tokio::task::spawn_blocking(move || component.run_batch(input))
            .await
            .context("the guest's thread panicked")?;
        self.stats.record(
            self.component.name(),
            &self.queue,
            started.elapsed(),
            run.failure.is_some(),
        );
        if let Some(failure) = &run.failure {
            tracing::warn!(queue = %self.queue, component = self.component.name(), messages = ids.len(), "batch failed: {failure}");
        }
        let resolution = precedence::resolve(&ids, &run.calls, run.result());
        for ignored in &resolution.ignored {
            tracing::warn!(queue = %self.queue, component = self.component.name(), call = %describe(&ignored.call), "ignored batch call: {}", ignored.reason);
        }
        let outcomes = resolution
            .outcomes
            .into_iter()
            .map(|(id, outcome)| (leases[&id], outcome))
            .collect();
        let report = self
            .broker
            .settle(&self.queue, outcomes)
            .await
            .context("settling a batch")?;
        if !report.stale.is_empty() {
            tracing::warn!(queue = %self.queue, stale = report.stale.len(), "leases expired before the batch was settled; those messages will be redelivered");
        }
        Ok(Delivery { run, report })
    }
}

fn describe(call: &BatchCall) -> String {
    match call {
        BatchCall::Ack(id) => format!("ack({id})"),
        BatchCall::Retry(id, delay) => format!("retry({id}, {delay:?})"),
        BatchCall::AckAll => "ack-all()".into(),
        BatchCall::RetryAll(delay) => format!("retry-all({delay:?})"),
    }
}
