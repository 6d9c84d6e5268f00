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
    Readiness, SettleReport,
};
use crate::runtime::{BatchInput, BatchRun, ConsumerComponent, Instance};

mod stats;

pub use self::stats::ConsumerStats;

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

/// How many batches may be in flight: one more whenever a full batch waits while every slot is
/// busy (the backlog outgrows the consumer), down to what is running when the queue has nothing
/// visible (it drained).
#[derive(Debug)]
struct Scaler {
    level: u32,
}

impl Scaler {
    fn level(&self, max: u32) -> u32 {
        self.level.clamp(1, max.max(1))
    }

    fn grow(&mut self, max: u32) {
        self.level = (self.level(max) + 1).min(max.max(1));
    }

    fn drained(&mut self, running: usize) {
        self.level = (running as u32).max(1);
    }

    /// Whether another batch may start while `busy` run, growing the level first if every
    /// slot is busy and `full_batch_waits`; at most `max` at once.
    fn admit(&mut self, busy: u32, full_batch_waits: bool, max: u32) -> bool {
        if busy < self.level(max) {
            return true;
        }
        if full_batch_waits {
            self.grow(max);
        }
        busy < self.level(max)
    }
}

/// What the dispatcher should do about its queue, decided by [`plan`].
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Lease and start a batch now.
    Start,
    /// Nothing to start for this long (or until woken).
    Wait(Duration),
}

/// How long a batch of a queue in state `r` has yet to wait, `None` when it is due: when
/// `max_batch_size` messages are visible, or the oldest visible one has waited
/// `max_batch_timeout` seconds. Otherwise until the oldest one's timeout or (with nothing
/// visible) the next delayed message, and never longer than [`IDLE_RECHECK`].
fn batch_wait(r: &Readiness, max_batch_size: u32, max_batch_timeout: u32) -> Option<Duration> {
    let timeout_ms = u64::from(max_batch_timeout) * 1000;
    let due = r.oldest_visible_at_ms.map(|t| t + timeout_ms);
    if r.visible >= max_batch_size || due.is_some_and(|due| due <= r.now_ms) {
        return None;
    }
    let wait = due.or(r.next_visible_at_ms).map_or(IDLE_RECHECK, |at| {
        Duration::from_millis(at.saturating_sub(r.now_ms))
    });
    Some(wait.min(IDLE_RECHECK))
}

/// Decides, from the queue's state `r` alone (its clock included), whether a batch starts now
/// with `busy` batches running: not while the queue is paused, not before the batch is due
/// ([`batch_wait`]), and not while every slot of `scaler` is busy, which grows by one when a
/// full batch waits, up to `max_concurrency`. A queue with nothing visible has drained: the
/// scaler drops to what is running.
fn plan(
    r: &Readiness,
    settings: &ConsumerSettings,
    max_concurrency: u32,
    busy: usize,
    scaler: &mut Scaler,
) -> Plan {
    if r.paused {
        return Plan::Wait(IDLE_RECHECK);
    }
    if r.visible == 0 {
        scaler.drained(busy);
    }
    if let Some(wait) = batch_wait(r, settings.max_batch_size, settings.max_batch_timeout) {
        return Plan::Wait(wait);
    }
    let full_batch_waits = r.visible >= settings.max_batch_size;
    if scaler.admit(busy as u32, full_batch_waits, max_concurrency) {
        Plan::Start
    } else {
        // Every slot is busy: wait for a batch to finish (or more backlog).
        Plan::Wait(IDLE_RECHECK)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    /// A queue at [`NOW`] with `visible` messages, the oldest visible since `oldest_ms_ago`.
    fn queue(visible: u32, oldest_ms_ago: Option<u64>) -> Readiness {
        Readiness {
            now_ms: NOW,
            visible,
            oldest_visible_at_ms: oldest_ms_ago.map(|ago| NOW - ago),
            ..Readiness::default()
        }
    }

    /// Batches of up to 10 that wait up to 1 s to fill.
    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            max_batch_size: 10,
            max_batch_timeout: 1,
            ..ConsumerSettings::default()
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn an_empty_queue_waits_for_its_next_delayed_message_or_rechecks() {
        assert_eq!(batch_wait(&queue(0, None), 10, 1), Some(IDLE_RECHECK));
        let delayed = |in_ms: u64| Readiness {
            next_visible_at_ms: Some(NOW + in_ms),
            ..queue(0, None)
        };
        assert_eq!(batch_wait(&delayed(300), 10, 1), Some(ms(300)));
        assert_eq!(batch_wait(&delayed(0), 10, 1), Some(Duration::ZERO));
        // Never longer than the recheck interval, however far off the delay.
        assert_eq!(batch_wait(&delayed(60_000), 10, 1), Some(IDLE_RECHECK));
    }

    #[test]
    fn a_full_batch_is_due_at_once() {
        assert_eq!(batch_wait(&queue(10, Some(0)), 10, 1), None);
        assert_eq!(batch_wait(&queue(1, Some(0)), 1, 60), None);
        // One short of full, just arrived: it waits the whole timeout.
        assert_eq!(batch_wait(&queue(9, Some(0)), 10, 1), Some(ms(1000)));
    }

    #[test]
    fn a_partial_batch_is_due_when_its_oldest_message_has_waited_the_timeout() {
        assert_eq!(batch_wait(&queue(3, Some(400)), 10, 1), Some(ms(600)));
        assert_eq!(batch_wait(&queue(3, Some(999)), 10, 1), Some(ms(1)));
        assert_eq!(batch_wait(&queue(3, Some(1000)), 10, 1), None);
        assert_eq!(batch_wait(&queue(3, Some(5000)), 10, 1), None);
        // A timeout past the recheck interval is waited for in steps of it.
        assert_eq!(batch_wait(&queue(3, Some(0)), 10, 5), Some(IDLE_RECHECK));
        assert_eq!(batch_wait(&queue(3, Some(4500)), 10, 5), Some(ms(500)));
        // No timeout: any visible message is due.
        assert_eq!(batch_wait(&queue(1, Some(0)), 10, 0), None);
    }

    #[test]
    fn a_visible_message_waits_for_its_own_timeout_not_for_a_delayed_one() {
        let r = Readiness {
            next_visible_at_ms: Some(NOW + 100),
            ..queue(3, Some(400))
        };
        assert_eq!(batch_wait(&r, 10, 1), Some(ms(600)));
    }

    #[test]
    fn a_paused_queue_starts_nothing_and_leaves_the_scaler_alone() {
        let mut scaler = Scaler { level: 3 };
        let paused = Readiness {
            paused: true,
            ..Readiness::default()
        };
        assert_eq!(
            plan(&paused, &settings(), 4, 0, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level, 3, "paused is not drained");
    }

    #[test]
    fn a_drained_queue_drops_the_level_to_what_is_running() {
        let mut scaler = Scaler { level: 4 };
        let plan_empty =
            |busy, scaler: &mut Scaler| plan(&queue(0, None), &settings(), 4, busy, scaler);
        assert_eq!(plan_empty(2, &mut scaler), Plan::Wait(IDLE_RECHECK));
        assert_eq!(scaler.level(4), 2);
        assert_eq!(plan_empty(0, &mut scaler), Plan::Wait(IDLE_RECHECK));
        assert_eq!(scaler.level(4), 1, "never below one");
        // A backlog that is not due yet does not lower it.
        let mut scaler = Scaler { level: 4 };
        assert_eq!(
            plan(&queue(3, Some(0)), &settings(), 4, 0, &mut scaler),
            Plan::Wait(ms(1000))
        );
        assert_eq!(scaler.level(4), 4);
    }

    #[test]
    fn a_due_batch_starts_when_a_slot_is_free() {
        let mut scaler = Scaler { level: 2 };
        assert_eq!(
            plan(&queue(10, Some(0)), &settings(), 4, 1, &mut scaler),
            Plan::Start
        );
        assert_eq!(
            plan(&queue(3, Some(1000)), &settings(), 4, 0, &mut scaler),
            Plan::Start
        );
        assert_eq!(scaler.level(4), 2, "a free slot needs no growth");
    }

    #[test]
    fn only_a_waiting_full_batch_grows_the_level() {
        // Every slot busy, a batch due by its timeout only: wait, no growth.
        let mut scaler = Scaler { level: 1 };
        assert_eq!(
            plan(&queue(3, Some(1000)), &settings(), 4, 1, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(4), 1);
        // A full batch waits: one more slot, and it starts.
        assert_eq!(
            plan(&queue(10, Some(0)), &settings(), 4, 1, &mut scaler),
            Plan::Start
        );
        assert_eq!(scaler.level(4), 2);
    }

    #[test]
    fn the_level_climbs_one_at_a_time_to_max_concurrency_and_never_past_it() {
        let mut scaler = Scaler { level: 1 };
        let backlog = queue(10, Some(0));
        let mut busy = 0;
        while plan(&backlog, &settings(), 3, busy, &mut scaler) == Plan::Start {
            busy += 1;
            assert_eq!(scaler.level(3), busy.max(1) as u32);
            assert!(busy <= 3, "{busy} batches started");
        }
        assert_eq!(busy, 3);
        assert_eq!(
            plan(&backlog, &settings(), 3, busy, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(3), 3);
    }

    #[test]
    fn a_lowered_or_zero_max_concurrency_caps_the_level() {
        // A swap to a consumer with a lower maximum caps the level at once.
        let mut scaler = Scaler { level: 5 };
        assert_eq!(scaler.level(2), 2);
        let backlog = queue(10, Some(0));
        assert_eq!(
            plan(&backlog, &settings(), 2, 2, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(2), 2);
        // Zero means one: a batch at a time.
        let mut scaler = Scaler { level: 1 };
        assert_eq!(plan(&backlog, &settings(), 0, 0, &mut scaler), Plan::Start);
        assert_eq!(
            plan(&backlog, &settings(), 0, 1, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(0), 1);
    }
}
