//! The dispatcher: for one push consumer, assembles batches by size or timeout, leases them,
//! runs the component on them and settles the result in one transaction.
//!
//! While a backlog lasts, a batch's settlement and the lease of the next batch share one
//! commit ([`Broker::settle_and_lease`]): the task that ran batch N looks at the queue, and if
//! the next batch is due it takes an instance and settles N and leases N + 1 together, then runs
//! N + 1 itself. Each delivery attempt is still counted durably before the guest sees it, and
//! a batch still settles in one transaction; only the commit count per batch halves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::engine::precedence;
use crate::engine::{
    Broker, BrokerError, BrokerResult, ConsumerSettings, LeaseId, LeaseOptions, LeasedBatch,
    Message, MessageId, Outcome, SettleReport,
};
use crate::runtime::{BatchInput, BatchRun, ConsumerComponent, Instance};

mod plan;
mod stats;

use self::plan::{Plan, Scaler, batch_wait, plan};
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
struct Batch {
    ids: Vec<MessageId>,
    leases: HashMap<MessageId, LeaseId>,
    input: BatchInput,
    /// When the lease runs out (by the host's clock): settling is pointless after that.
    expires: Instant,
}

/// A batch the component has run: the outcomes to settle, and what the batch's log line says
/// once they are settled.
struct Ran {
    run: BatchRun,
    outcomes: Vec<(LeaseId, Outcome)>,
    component: String,
    messages: usize,
    started: Instant,
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
        let (_, batch) = self
            .inner
            .settle_and_lease(Vec::new(), &spec)
            .await
            .context("leasing a batch")?;
        match batch {
            Some(batch) => {
                let ran = self.inner.run_batch(batch, instance).await;
                let (delivery, _) = self.inner.finish(ran, None).await?;
                Ok(Some(delivery))
            }
            None => {
                instance.release();
                Ok(None)
            }
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
        let busy = running.len();
        if busy >= spec.max_concurrency as usize {
            // Nothing can start until a batch finishes: no need to look at the queue.
            return Step::Wait(IDLE_RECHECK);
        }
        let max = spec.settings.max_batch_size;
        let r = match self.broker.readiness(&self.queue, max).await {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(queue = %self.queue, error = %err, "reading the queue failed");
                return Step::Wait(IDLE_RECHECK);
            }
        };
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
        match self.settle_and_lease(Vec::new(), spec).await {
            Ok((_, Some(batch))) => {
                let inner = self.clone();
                let (slot, shutdown) = (slot.clone(), shutdown.clone());
                running.spawn(async move {
                    inner.chain(batch, instance, permit, &slot, &shutdown).await;
                });
                Step::Leased
            }
            Ok((_, None)) => {
                instance.release();
                Step::Wait(Duration::ZERO)
            }
            Err(err) => {
                instance.release();
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

    /// Runs batches one after the other, starting with `batch` on `instance`, holding
    /// `permit` of the host-wide ceiling: after each, if the next batch is due and the
    /// dispatcher is not shutting down, it is leased in the same commit that settles this one
    /// ([`Self::finish`]) and run next; otherwise the chain ends and the dispatcher loop takes
    /// over again.
    async fn chain(
        &self,
        mut batch: Batch,
        mut instance: Instance,
        mut permit: Option<OwnedSemaphorePermit>,
        slot: &ConsumerSlot,
        shutdown: &watch::Receiver<bool>,
    ) {
        loop {
            let ran = self.run_batch(batch, instance).await;
            let stopping = *shutdown.borrow();
            let next = match stopping {
                true => None,
                false => self.next_due(slot, &mut permit).await,
            };
            let (spec, next_instance) = next.unzip();
            let leased = match self.finish(ran, spec.as_deref()).await {
                Ok((_, leased)) => leased,
                Err(err) => {
                    if let Some(instance) = next_instance {
                        instance.release();
                    }
                    tracing::error!(queue = %self.queue, error = format!("{err:#}"), "delivering a batch failed");
                    return;
                }
            };
            // A batch is leased only for a `spec`, which came with its instance.
            let Some(next_instance) = next_instance else {
                return;
            };
            let Some(next) = leased else {
                next_instance.release();
                return;
            };
            (batch, instance) = (next, next_instance);
        }
    }

    /// The consumer in the slot and an instance of it, if its next batch is due now (the same
    /// rule as the dispatcher loop's: a full batch visible, or the oldest visible message has
    /// waited `max_batch_timeout`) and an instance slot is free. The chain's `permit` of the
    /// host-wide ceiling is given back first and taken again only if no other dispatcher waits
    /// for one (the ceiling is fair), so a long backlog does not keep other queues waiting.
    async fn next_due(
        &self,
        slot: &ConsumerSlot,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<(Arc<ConsumerSpec>, Instance)> {
        if let Some(ceiling) = &self.ceiling {
            permit.take();
            *permit = Some(ceiling.clone().try_acquire_owned().ok()?);
        }
        let spec = slot.current();
        let settings = &spec.settings;
        let r = self
            .broker
            .readiness(&self.queue, settings.max_batch_size)
            .await
            .ok()?;
        if r.paused || batch_wait(&r, settings.max_batch_size, settings.max_batch_timeout).is_some()
        {
            return None;
        }
        let instance = spec.component.instantiate().await.ok()?;
        Some((spec, instance))
    }

    /// Settles `outcomes` and leases a batch for `spec` in one commit; `None` when nothing was
    /// visible (or the queue is paused).
    async fn settle_and_lease(
        &self,
        outcomes: Vec<(LeaseId, Outcome)>,
        spec: &ConsumerSpec,
    ) -> BrokerResult<(SettleReport, Option<Batch>)> {
        let lease = spec.component.limits().timeout + LEASE_MARGIN;
        let expires = Instant::now() + lease;
        let options = LeaseOptions::new(spec.settings.max_batch_size, lease.as_millis() as u64);
        let (report, LeasedBatch { messages, backlog }) = self
            .broker
            .settle_and_lease(&self.queue, outcomes, options)
            .await?;
        if messages.is_empty() {
            return Ok((report, None));
        }
        let batch = Batch {
            ids: messages.iter().map(|m| m.message.id).collect(),
            leases: messages.iter().map(|m| (m.message.id, m.lease)).collect(),
            input: BatchInput {
                queue: self.queue.clone(),
                messages: messages.into_iter().map(|m| m.message).collect(),
                backlog,
            },
            expires,
        };
        Ok((report, Some(batch)))
    }

    /// Runs `instance` on a leased batch and resolves what the guest decided.
    async fn run_batch(&self, batch: Batch, instance: Instance) -> Ran {
        let Batch {
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
        let component = instance.name().to_owned();
        // The guest's output is logged inside this span, so it can be told apart by batch.
        let span = tracing::info_span!("batch", queue = %self.queue, component = %component);
        let run = instance.run(input).instrument(span).await;
        let name = component.as_str();
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
        let outcomes = resolution
            .outcomes
            .into_iter()
            .map(|(id, outcome)| (leases[&id], outcome))
            .collect();
        Ran {
            run,
            outcomes,
            component,
            messages: ids.len(),
            started,
            expires,
        }
    }

    /// Settles a batch that ran in one transaction, leasing the next batch for `next` in the
    /// same commit when given. If that commit fails for want of storage, the batch is settled
    /// alone (retried while its lease runs) and nothing is leased.
    async fn finish(
        &self,
        ran: Ran,
        next: Option<&ConsumerSpec>,
    ) -> anyhow::Result<(Delivery, Option<Batch>)> {
        let Ran {
            run,
            outcomes,
            component,
            messages,
            started,
            expires,
        } = ran;
        let fused = match next {
            Some(spec) => Some(self.settle_and_lease(outcomes.clone(), spec).await),
            None => None,
        };
        let (report, batch) = match fused {
            Some(Ok(settled)) => settled,
            Some(Err(BrokerError::Unavailable(why) | BrokerError::OutcomeUnknown(why))) => {
                tracing::warn!(queue = %self.queue, error = %why, "settling and leasing failed; settling the batch alone");
                (self.settle(outcomes, expires).await?, None)
            }
            Some(Err(err)) => return Err(err).context("settling a batch"),
            None => (self.settle(outcomes, expires).await?, None),
        };
        tracing::info!(
            queue = %self.queue,
            component = %component,
            messages,
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
        Ok((Delivery { run, report }, batch))
    }
}
