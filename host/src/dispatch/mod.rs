//! The dispatcher: for one push consumer, assembles batches by size or timeout, leases them,
//! runs the component on them and settles the result in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::engine::precedence;
use crate::engine::{
    Broker, BrokerError, ConsumerSettings, LeaseId, LeaseOptions, Message, MessageId, Outcome,
    SettleReport,
};
use crate::runtime::{BatchInput, BatchRun, ConsumerComponent, Instance};

mod plan;
mod stats;

use self::plan::{Plan, Scaler, plan};
pub use self::stats::{BatchPercentiles, ConsumerSnapshot, ConsumerStats};

/// Longest sleep between two looks at the queue when nothing wakes the dispatcher (lease
/// expiries and sweeps do not signal).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// How long a dispatcher waits before trying again when the host has no instance slot free.
const HOST_BUSY_BACKOFF: Duration = Duration::from_millis(50);
/// Added to the component's timeout to form the lease, so a batch that runs to its time limit
/// is settled by the dispatcher rather than expired. Short, because it is also how long the
/// batches of a host that died stay invisible to the other hosts sharing its queues.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What a dispatcher runs: the component and its batching settings. A hot swap replaces it
/// whole through the dispatcher's [`ConsumerSlot`].
#[derive(Clone)]
pub struct ConsumerSpec {
    /// The component batches go to.
    pub component: ConsumerComponent,
    /// Batch size and timeout (retries and the dead-letter queue live with the queue).
    pub settings: ConsumerSettings,
    /// Most batches in flight at once; the dispatcher scales between 1 and this.
    pub max_concurrency: u32,
}

/// The consumer a running dispatcher uses. Replacing it takes effect for the next batch;
/// batches already running finish on the component they started with.
#[derive(Clone)]
pub struct ConsumerSlot(watch::Sender<Arc<ConsumerSpec>>);

impl ConsumerSlot {
    /// Makes `spec` the consumer for every batch leased from now on.
    pub fn replace(&self, spec: ConsumerSpec) {
        self.0.send_replace(Arc::new(spec));
    }

    /// The consumer in use.
    pub fn current(&self) -> Arc<ConsumerSpec> {
        self.0.borrow().clone()
    }
}

/// Feeds one queue to one consumer component, scaling the batches in flight between 1 and the
/// consumer's `max_concurrency` with the backlog, within a host-wide ceiling.
pub struct Dispatcher {
    inner: Arc<Inner>,
    slot: ConsumerSlot,
}

struct Inner {
    broker: Arc<dyn Broker>,
    queue: String,
    observer: Option<mpsc::UnboundedSender<BatchStarted>>,
    stats: ConsumerStats,
    ceiling: Option<Arc<Semaphore>>,
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
    /// When the lease runs out (by the host's clock): settling is pointless after that.
    expires: Instant,
}

impl Dispatcher {
    /// A dispatcher for `queue` with the batching settings of `settings`, one batch at a time.
    pub fn new(
        broker: Arc<dyn Broker>,
        queue: impl Into<String>,
        settings: ConsumerSettings,
        component: ConsumerComponent,
    ) -> Self {
        let spec = ConsumerSpec {
            component,
            settings,
            max_concurrency: 1,
        };
        Self {
            inner: Arc::new(Inner {
                broker,
                queue: queue.into(),
                observer: None,
                stats: ConsumerStats::default(),
                ceiling: None,
            }),
            slot: ConsumerSlot(watch::Sender::new(Arc::new(spec))),
        }
    }

    /// Lets up to `batches` batches run at once (at least one), scaled with the backlog.
    pub fn with_concurrency(self, batches: u32) -> Self {
        let mut spec = (*self.slot.current()).clone();
        spec.max_concurrency = batches.max(1);
        self.slot.replace(spec);
        self
    }

    /// Shares `ceiling` (one permit per batch in flight) with the host's other dispatchers.
    pub fn with_ceiling(mut self, ceiling: Arc<Semaphore>) -> Self {
        self.inner_mut().ceiling = Some(ceiling);
        self
    }

    /// Reports every batch's start to `observer` (benchmarks measure send-to-handler latency
    /// with it).
    pub fn observe(mut self, observer: mpsc::UnboundedSender<BatchStarted>) -> Self {
        self.inner_mut().observer = Some(observer);
        self
    }

    /// Records every batch's duration and result, and the concurrency level, in `stats`
    /// (served on `GET /metrics`).
    pub fn with_stats(mut self, stats: ConsumerStats) -> Self {
        self.inner_mut().stats = stats;
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("the dispatcher is configured before it runs")
    }

    /// The slot through which the running dispatcher's consumer is swapped.
    pub fn slot(&self) -> ConsumerSlot {
        self.slot.clone()
    }

    /// Delivers batches until `shutdown` turns true; batches in progress are finished and
    /// settled first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        let mut changes = inner.broker.changes();
        let mut swaps = self.slot.0.subscribe();
        let mut scaler = Scaler { level: 1 };
        // The level last written to the statistics (0: none yet).
        let mut reported_level = 0;
        let mut running = JoinSet::new();
        let first = self.slot.current();
        tracing::info!(queue = %inner.queue, component = first.component.name(), max_concurrency = first.max_concurrency, "consumer started");
        while !*shutdown.borrow() {
            changes.borrow_and_update();
            let spec = swaps.borrow_and_update().clone();
            while running.try_join_next().is_some() {}
            let step = inner
                .next_step(&spec, &self.slot, &mut scaler, &mut running, &mut shutdown)
                .await;
            let level = scaler.level(spec.max_concurrency);
            if level != reported_level {
                reported_level = level;
                inner
                    .stats
                    .set_concurrency(spec.component.name(), &inner.queue, level);
            }
            let wait = match step {
                Step::Leased => continue,
                Step::Wait(wait) => wait,
            };
            spec.component.trim_idle();
            tokio::select! {
                _ = changes.changed() => {}
                _ = shutdown.changed() => {}
                _ = swaps.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        while running.join_next().await.is_some() {}
        let last = self.slot.current();
        tracing::info!(queue = %inner.queue, component = last.component.name(), "consumer stopped");
    }

    /// Leases one batch (whatever is visible, up to the batch size), runs the component on it
    /// and settles it. `None` when nothing was visible or the queue is paused.
    pub async fn deliver_one(&self) -> anyhow::Result<Option<Delivery>> {
        let spec = self.slot.current();
        let instance = spec.component.instantiate().await?;
        match self.inner.lease(&spec).await? {
            Some(batch) => self.inner.process(batch, instance).await.map(Some),
            None => Ok(None),
        }
    }
}

/// What the dispatcher loop does next.
enum Step {
    /// A batch was leased and handed over; look again at once.
    Leased,
    /// Nothing to do for this long (or until woken).
    Wait(Duration),
}

impl Inner {
    /// Leases and starts a batch if one is due, or says how long to wait.
    async fn next_step(
        self: &Arc<Self>,
        spec: &Arc<ConsumerSpec>,
        slot: &ConsumerSlot,
        scaler: &mut Scaler,
        running: &mut JoinSet<()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Step {
        let max = spec.settings.max_batch_size;
        let r = match self.broker.readiness(&self.queue, max).await {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(queue = %self.queue, error = %err, "reading the queue failed");
                return Step::Wait(IDLE_RECHECK);
            }
        };
        let busy = running.len();
        if let Plan::Wait(wait) = plan(&r, &spec.settings, spec.max_concurrency, busy, scaler) {
            return Step::Wait(wait);
        }
        let permit = match &self.ceiling {
            Some(ceiling) => {
                let acquire = ceiling.clone().acquire_owned();
                tokio::select! {
                    permit = acquire => Some(permit.expect("the ceiling is never closed")),
                    _ = shutdown.changed() => return Step::Wait(Duration::ZERO),
                    Some(_) = running.join_next(), if !running.is_empty() => return Step::Wait(Duration::ZERO),
                }
            }
            None => None,
        };
        // The component in the slot now, not when this step began: a batch leased after a
        // swap runs on the new version. It is instantiated before any message is leased, so a
        // host without a free instance slot makes the batch wait, never costs it an attempt.
        let instance = match slot.current().component.instantiate().await {
            Ok(instance) => instance,
            Err(busy) => {
                tracing::warn!(queue = %self.queue, error = %busy, "no instance slot free; the next batch waits");
                return Step::Wait(HOST_BUSY_BACKOFF);
            }
        };
        match self.lease(spec).await {
            Ok(Some(batch)) => {
                let inner = self.clone();
                running.spawn(async move {
                    if let Err(err) = inner.process(batch, instance).await {
                        tracing::error!(queue = %inner.queue, error = format!("{err:#}"), "delivering a batch failed");
                    }
                    drop(permit);
                });
                Step::Leased
            }
            Ok(None) => Step::Wait(Duration::ZERO),
            Err(err) => {
                tracing::error!(queue = %self.queue, error = format!("{err:#}"), "leasing a batch failed");
                Step::Wait(IDLE_RECHECK)
            }
        }
    }

    /// Settles, retrying while the storage is unavailable (a database restart, say) and the
    /// lease still runs: a batch that ran to completion is not thrown away over a brief outage.
    async fn settle(
        &self,
        outcomes: Vec<(LeaseId, Outcome)>,
        expires: Instant,
    ) -> anyhow::Result<SettleReport> {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.broker.settle(&self.queue, outcomes.clone()).await {
                Err(BrokerError::Unavailable(why) | BrokerError::OutcomeUnknown(why))
                    if Instant::now() + pause < expires =>
                {
                    tracing::warn!(queue = %self.queue, error = %why, retry_in = ?pause, "settling failed; retrying while the lease runs");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                result => return result.context("settling a batch"),
            }
        }
    }

    async fn lease(&self, spec: &ConsumerSpec) -> anyhow::Result<Option<LeasedBatch>> {
        let lease = spec.component.limits().timeout + LEASE_MARGIN;
        let expires = Instant::now() + lease;
        let options = LeaseOptions::new(spec.settings.max_batch_size, lease.as_millis() as u64);
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
            expires,
        }))
    }

    /// Runs `instance` on a leased batch and settles the outcome in one transaction.
    async fn process(&self, batch: LeasedBatch, instance: Instance) -> anyhow::Result<Delivery> {
        let LeasedBatch {
            ids,
            leases,
            input,
            expires,
        } = batch;
        if let Some(observer) = &self.observer {
            let _ = observer.send(BatchStarted {
                at: Instant::now(),
                messages: input.messages.clone(),
            });
        }
        let started = Instant::now();
        let name = instance.name().to_owned();
        // The guest's output is logged inside this span, so it can be told apart by batch.
        let span = tracing::info_span!("batch", queue = %self.queue, component = %name);
        let run = instance.run(input).instrument(span).await;
        let name = name.as_str();
        self.stats
            .record(name, &self.queue, started.elapsed(), run.failure.as_ref());
        if let Some(failure) = &run.failure {
            tracing::warn!(queue = %self.queue, component = name, messages = ids.len(), "batch failed: {failure}");
        }
        let resolution = precedence::resolve(&ids, &run.calls, run.result());
        // One line per batch however many calls were ignored: the first warning and a count.
        if let Some(first) = resolution.ignored.first() {
            tracing::warn!(queue = %self.queue, component = name, ignored = resolution.ignored.len(), "{}", first.warning);
        }
        let outcomes: Vec<_> = resolution
            .outcomes
            .into_iter()
            .map(|(id, outcome)| (leases[&id], outcome))
            .collect();
        let report = self.settle(outcomes, expires).await?;
        tracing::info!(
            queue = %self.queue,
            component = name,
            messages = ids.len(),
            acked = report.acked,
            retried = report.retried,
            dead_lettered = report.dead_lettered,
            dropped = report.dropped,
            duration_ms = started.elapsed().as_millis() as u64,
            failure = run.failure.as_ref().map(|f| f.to_string()),
            "batch"
        );
        if !report.stale.is_empty() {
            tracing::warn!(queue = %self.queue, stale = report.stale.len(), "the batch settled after its lease expired and some of its messages had left the queue meanwhile; their outcomes were not applied");
        }
        Ok(Delivery { run, report })
    }
}
