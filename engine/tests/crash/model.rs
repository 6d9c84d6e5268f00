//! A reference model of one queue (`q`) with a dead-letter queue (`dlq`): sends (single,
//! batch, delays, dedup keys), leases, settles (acks, retries, stale leases), sweeps,
//! retention, pause, purge, replay, and restarts (clean, or a power cut between operations,
//! after which everything that returned Ok must have survived). Every answer and both
//! queues' metrics are compared after every operation.
//!
//! The other designs check that nothing acknowledged is lost; this one checks the answers
//! themselves: every count, attempt, deadline and metric the broker gives, step by step, also
//! right after a restart or a power cut, for sequences (pauses, purges, replays, retention,
//! delays) the workload never produces.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError};
use wasmq_engine::{
    Backlog, Broker, BrokerError, ConsumerSettings, LeaseId, LeaseOptions, ManualClock, Outcome,
    QueueMetrics, QueueSettings, SendRequest, SettleReport, SweepReport,
};
use wasmq_testkit::START_MS;
use wasmq_testkit::power_loss::SimulatedDisk;

use crate::{open_sim, survival_for};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Qn {
    /// Created first: queue id 1.
    Dlq,
    /// Queue id 2.
    Main,
}

impl Qn {
    fn name(self) -> &'static str {
        match self {
            Qn::Dlq => "dlq",
            Qn::Main => "q",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The settings a case runs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    max_retries: u32,
    retry_delay: u32,
    delivery_delay: u32,
}

#[derive(Debug, Clone, Copy)]
struct QueueConfig {
    retention_ms: u64,
    delivery_delay: u32,
    dedup_window_ms: u64,
    max_retries: u32,
    retry_delay: u32,
    dead_letter: Option<Qn>,
}

impl QueueConfig {
    fn settings(&self) -> QueueSettings {
        QueueSettings {
            delivery_delay: self.delivery_delay,
            message_retention_period: (self.retention_ms / 1000) as u32,
            dedup_window: (self.dedup_window_ms / 1000) as u32,
            consumer: ConsumerSettings {
                max_retries: self.max_retries,
                retry_delay: self.retry_delay,
                dead_letter_queue: self.dead_letter.map(|q| q.name().to_owned()),
                ..ConsumerSettings::default()
            },
        }
    }
}

/// A request in a send: per-message delay and dedup key.
type Req = (Option<u32>, Option<u8>);

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Send {
        queue: Qn,
        msgs: Vec<Req>,
        batch: bool,
        batch_delay: Option<u32>,
    },
    Lease {
        queue: Qn,
        max: u32,
        visibility_ms: u64,
    },
    /// Lease numbers index every lease handed out so far (modulo their count); `None`
    /// acks, `Some(delay)` retries.
    Settle {
        queue: Qn,
        picks: Vec<(usize, Option<Option<u32>>)>,
    },
    Advance(u64),
    Sweep,
    Peek {
        queue: Qn,
        limit: u32,
    },
    Pause(bool),
    Purge(Qn),
    Replay(u64),
    Restart,
    PowerCut(u64),
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Ready { visible_at: u64, ticket: u64 },
    Leased { deadline: u64, lease: usize },
}

#[derive(Debug, Clone)]
struct Msg {
    tag: u64,
    queue: Qn,
    timestamp: u64,
    attempts: u32,
    size: u64,
    place: Place,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    sent: u64,
    acked: u64,
    retried: u64,
    dead_lettered: u64,
    dropped: u64,
    expired: u64,
}

/// A leased message as the model hands it out: lease number, tag, attempts, deadline.
type Leased = (usize, u64, u32, u64);

struct Model {
    now: u64,
    config: [QueueConfig; 2],
    /// By seq (send order).
    msgs: BTreeMap<u64, Msg>,
    next_seq: u64,
    next_ticket: u64,
    next_lease: usize,
    /// Lease number → the seq of the message it was for.
    lease_seqs: HashMap<usize, u64>,
    counters: [Counters; 2],
    /// Dedup key of `q` → end of its window.
    dedup: HashMap<u8, u64>,
    paused: bool,
}

fn body(tag: u64) -> Vec<u8> {
    format!("p{tag:08}{}", "x".repeat((tag % 40) as usize)).into_bytes()
}

fn tag_of(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body.get(1..9)?).ok()?.parse().ok()
}

impl Model {
    fn new(setup: Setup) -> Self {
        let dlq = QueueConfig {
            retention_ms: 600_000,
            delivery_delay: 0,
            dedup_window_ms: 0,
            max_retries: 1,
            retry_delay: 0,
            dead_letter: None,
        };
        let main = QueueConfig {
            retention_ms: 120_000,
            delivery_delay: setup.delivery_delay,
            dedup_window_ms: 30_000,
            max_retries: setup.max_retries,
            retry_delay: setup.retry_delay,
            dead_letter: Some(Qn::Dlq),
        };
        Self {
            now: START_MS,
            config: [dlq, main],
            msgs: BTreeMap::new(),
            next_seq: 0,
            next_ticket: 0,
            next_lease: 0,
            lease_seqs: HashMap::new(),
            counters: [Counters::default(); 2],
            dedup: HashMap::new(),
            paused: false,
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn backlog(&self, q: Qn) -> Backlog {
        let mine = self.msgs.values().filter(|m| m.queue == q);
        Backlog {
            count: mine.clone().count() as u64,
            bytes: mine.clone().map(|m| m.size).sum(),
            oldest_timestamp_ms: mine.map(|m| m.timestamp).min(),
        }
    }

    fn metrics(&self, q: Qn) -> QueueMetrics {
        let c = self.counters[q.index()];
        let mine = || self.msgs.values().filter(|m| m.queue == q);
        QueueMetrics {
            backlog: self.backlog(q),
            in_flight: mine()
                .filter(|m| matches!(m.place, Place::Leased { .. }))
                .count() as u64,
            delayed: mine()
                .filter(
                    |m| matches!(m.place, Place::Ready { visible_at, .. } if visible_at > self.now),
                )
                .count() as u64,
            sent: c.sent,
            acked: c.acked,
            retried: c.retried,
            dead_lettered: c.dead_lettered,
            dropped: c.dropped,
            expired: c.expired,
        }
    }

    fn send(&mut self, q: Qn, reqs: &[(u64, Req)], batch_delay: Option<u32>) -> Backlog {
        let config = self.config[q.index()];
        for &(tag, (delay, dedup)) in reqs {
            if let Some(key) = dedup.filter(|_| config.dedup_window_ms > 0) {
                if self.dedup.get(&key).is_some_and(|&until| until > self.now) {
                    continue;
                }
                self.dedup.insert(key, self.now + config.dedup_window_ms);
            }
            let delay = delay.or(batch_delay).unwrap_or(config.delivery_delay);
            let seq = self.next_seq;
            self.next_seq += 1;
            let ticket = self.ticket();
            self.msgs.insert(
                seq,
                Msg {
                    tag,
                    queue: q,
                    timestamp: self.now,
                    attempts: 0,
                    size: body(tag).len() as u64,
                    place: Place::Ready {
                        visible_at: self.now + u64::from(delay) * 1000,
                        ticket,
                    },
                },
            );
            self.counters[q.index()].sent += 1;
        }
        self.backlog(q)
    }

    /// A failed attempt: redeliver, or dead-letter / drop once retries are used up.
    fn fail_attempt(&mut self, seq: u64, delay: Option<u32>) -> Fate {
        let msg = self.msgs[&seq].clone();
        let config = self.config[msg.queue.index()];
        let counters = &mut self.counters[msg.queue.index()];
        if msg.attempts <= config.max_retries {
            counters.retried += 1;
            let visible_at = self.now + u64::from(delay.unwrap_or(config.retry_delay)) * 1000;
            let ticket = self.ticket();
            self.msgs.get_mut(&seq).expect("exists").place = Place::Ready { visible_at, ticket };
            return Fate::Retried;
        }
        match config.dead_letter {
            Some(dlq) => {
                counters.dead_lettered += 1;
                self.move_to(seq, dlq);
                Fate::DeadLettered
            }
            None => {
                counters.dropped += 1;
                self.msgs.remove(&seq);
                Fate::Dropped
            }
        }
    }

    fn move_to(&mut self, seq: u64, to: Qn) {
        let ticket = self.ticket();
        let now = self.now;
        let msg = self.msgs.get_mut(&seq).expect("exists");
        msg.queue = to;
        msg.attempts = 0;
        msg.place = Place::Ready {
            visible_at: now,
            ticket,
        };
    }

    /// Expired leases (every lease when `all`) become failed attempts, in the order
    /// (deadline, queue, seq).
    fn expire(&mut self, all: bool) -> u64 {
        let mut expired: Vec<(u64, Qn, u64)> = self
            .msgs
            .iter()
            .filter_map(|(&seq, m)| match m.place {
                Place::Leased { deadline, .. } if all || deadline <= self.now => {
                    Some((deadline, m.queue, seq))
                }
                _ => None,
            })
            .collect();
        expired.sort();
        for &(_, _, seq) in &expired {
            self.fail_attempt(seq, None);
        }
        expired.len() as u64
    }

    fn lease(&mut self, q: Qn, max: u32, visibility_ms: u64) -> Option<Vec<Leased>> {
        if q == Qn::Main && self.paused {
            return None;
        }
        self.expire(false);
        let mut ready: Vec<(u64, u64, u64)> = self
            .msgs
            .iter()
            .filter_map(|(&seq, m)| match m.place {
                Place::Ready { visible_at, ticket } if m.queue == q && visible_at <= self.now => {
                    Some((visible_at, ticket, seq))
                }
                _ => None,
            })
            .collect();
        ready.sort();
        let retention = self.config[q.index()].retention_ms;
        let mut out = Vec::new();
        for (_, _, seq) in ready {
            if out.len() == max as usize {
                break;
            }
            if self.msgs[&seq].timestamp + retention <= self.now {
                self.msgs.remove(&seq);
                self.counters[q.index()].expired += 1;
                continue;
            }
            let lease = self.next_lease;
            self.next_lease += 1;
            self.lease_seqs.insert(lease, seq);
            let deadline = self.now + visibility_ms;
            let msg = self.msgs.get_mut(&seq).expect("exists");
            msg.attempts += 1;
            msg.place = Place::Leased { deadline, lease };
            out.push((lease, msg.tag, msg.attempts, deadline));
        }
        Some(out)
    }

    /// Returns the report with stale leases as lease numbers.
    fn settle(
        &mut self,
        q: Qn,
        picks: &[(usize, Option<Option<u32>>)],
    ) -> (SettleReport, Vec<usize>) {
        // Expired leases are failed attempts before anything is settled, so a late
        // decision meets the message as the expiry left it, whatever the sweep timing.
        self.expire(false);
        let mut report = SettleReport::default();
        let mut stale = Vec::new();
        for &(lease, outcome) in picks {
            let found = self.lease_seqs.get(&lease).copied().and_then(|seq| {
                self.msgs
                    .get(&seq)
                    .filter(|m| m.queue == q)
                    .map(|m| (seq, m.place))
            });
            let Some((seq, place)) = found else {
                stale.push(lease);
                continue;
            };
            let current = matches!(place, Place::Leased { lease: l, .. } if l == lease);
            match (outcome, place) {
                // Current or late: an ack deletes the message.
                (None, _) => {
                    self.msgs.remove(&seq);
                    self.counters[q.index()].acked += 1;
                    report.acked += 1;
                }
                (Some(delay), _) if current => match self.fail_attempt(seq, delay) {
                    Fate::Retried => report.retried += 1,
                    Fate::DeadLettered => report.dead_lettered += 1,
                    Fate::Dropped => report.dropped += 1,
                },
                // Late, waiting again: the retry only moves its next delivery.
                (Some(delay), Place::Ready { .. }) => {
                    let delay = delay.unwrap_or(self.config[q.index()].retry_delay);
                    let visible_at = self.now + u64::from(delay) * 1000;
                    let ticket = self.ticket();
                    self.msgs.get_mut(&seq).expect("exists").place =
                        Place::Ready { visible_at, ticket };
                    report.retried += 1;
                }
                // Late, held by a newer lease.
                (Some(_), Place::Leased { .. }) => stale.push(lease),
            }
        }
        (report, stale)
    }

    fn sweep(&mut self) -> SweepReport {
        let leases_expired = self.expire(false);
        let mut messages_expired = 0;
        for q in [Qn::Dlq, Qn::Main] {
            let retention = self.config[q.index()].retention_ms;
            let before = self.msgs.len();
            let now = self.now;
            self.msgs
                .retain(|_, m| m.queue != q || m.timestamp + retention > now);
            let n = (before - self.msgs.len()) as u64;
            self.counters[q.index()].expired += n;
            messages_expired += n;
        }
        let before = self.dedup.len();
        let now = self.now;
        self.dedup.retain(|_, &mut until| until > now);
        SweepReport {
            leases_expired,
            messages_expired,
            dedup_keys_expired: (before - self.dedup.len()) as u64,
        }
    }

    fn peek(&self, q: Qn, limit: u32) -> Vec<(u64, u32, u64)> {
        let mut ready: Vec<(u64, u64, &Msg)> = self
            .msgs
            .values()
            .filter_map(|m| match m.place {
                Place::Ready { visible_at, ticket } if m.queue == q => {
                    Some((visible_at, ticket, m))
                }
                _ => None,
            })
            .collect();
        ready.sort_by_key(|&(v, t, _)| (v, t));
        ready
            .into_iter()
            .take(limit as usize)
            .map(|(_, _, m)| (m.tag, m.attempts, m.timestamp))
            .collect()
    }

    fn purge(&mut self, q: Qn) -> u64 {
        let before = self.msgs.len();
        self.msgs.retain(|_, m| m.queue != q);
        (before - self.msgs.len()) as u64
    }

    /// Moves up to `limit` of the oldest waiting messages of `dlq` to `q`.
    fn replay(&mut self, limit: u64) -> u64 {
        let seqs: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| m.queue == Qn::Dlq && matches!(m.place, Place::Ready { .. }))
            .map(|(&seq, _)| seq)
            .take(limit as usize)
            .collect();
        for &seq in &seqs {
            self.move_to(seq, Qn::Main);
        }
        seqs.len() as u64
    }

    /// What reopening does: every lease of the previous process is a failed attempt.
    fn restart(&mut self) {
        self.expire(true);
    }
}

enum Fate {
    Retried,
    DeadLettered,
    Dropped,
}

fn queue() -> impl Strategy<Value = Qn> {
    prop_oneof![3 => Just(Qn::Main), 1 => Just(Qn::Dlq)]
}

fn delay() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![3 => Just(None), 1 => Just(Some(0)), 1 => Just(Some(1)), 1 => Just(Some(5))]
}

fn op() -> impl Strategy<Value = Op> {
    let req = (
        delay(),
        prop_oneof![3 => Just(None), 1 => (0u8..3).prop_map(Some)],
    );
    prop_oneof![
        10 => (queue(), prop::collection::vec(req, 1..4), any::<bool>(), delay()).prop_map(
            |(queue, msgs, batch, batch_delay)| Op::Send { queue, msgs, batch, batch_delay }
        ),
        10 => (queue(), 1u32..4, prop_oneof![Just(500u64), Just(5_000), Just(60_000)])
            .prop_map(|(queue, max, visibility_ms)| Op::Lease { queue, max, visibility_ms }),
        10 => (
            queue(),
            prop::collection::vec(
                (any::<usize>(), prop_oneof![2 => Just(None), 1 => delay().prop_map(Some)]),
                1..4
            )
        )
            .prop_map(|(queue, picks)| Op::Settle { queue, picks }),
        6 => prop_oneof![Just(0u64), 1u64..2_000, 20_000u64..70_000].prop_map(Op::Advance),
        2 => Just(Op::Sweep),
        2 => (queue(), 1u32..5).prop_map(|(queue, limit)| Op::Peek { queue, limit }),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => queue().prop_map(Op::Purge),
        2 => (1u64..4).prop_map(Op::Replay),
        2 => Just(Op::Restart),
        2 => any::<u64>().prop_map(Op::PowerCut),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        0u32..3,
        prop_oneof![Just(0u32), Just(2)],
        prop_oneof![3 => Just(0u32), 1 => Just(3)],
    )
        .prop_map(|(max_retries, retry_delay, delivery_delay)| Setup {
            max_retries,
            retry_delay,
            delivery_delay,
        })
}

async fn open(disk: &SimulatedDisk, clock: &ManualClock) -> anyhow::Result<Arc<dyn Broker>> {
    open_sim(disk, clock, 1 << 20).await
}

/// Runs `ops` against a fresh broker and the model, comparing every answer.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per operation, each comparing the broker's answer with the model's"
)]
async fn run(setup: Setup, ops: Vec<Op>) -> anyhow::Result<()> {
    let mut model = Model::new(setup);
    let clock = ManualClock::new(START_MS);
    let mut disk = SimulatedDisk::new();
    let mut broker = open(&disk, &clock).await?;
    broker
        .create_queue("dlq", model.config[0].settings())
        .await?;
    broker.create_queue("q", model.config[1].settings()).await?;
    let mut leases: Vec<LeaseId> = Vec::new();
    let mut next_tag = 0u64;

    for (step, op) in ops.into_iter().enumerate() {
        let context = || format!("step {step}: {op:?}");
        match &op {
            &Op::Send {
                queue,
                ref msgs,
                batch,
                batch_delay,
            } => {
                let reqs: Vec<(u64, Req)> = msgs
                    .iter()
                    .map(|&r| {
                        next_tag += 1;
                        (next_tag, r)
                    })
                    .collect();
                let requests: Vec<SendRequest> = reqs
                    .iter()
                    .map(|&(tag, (delay, dedup))| {
                        let mut r = SendRequest::new(body(tag), wasmq_engine::ContentType::Text);
                        r.delay_seconds = delay;
                        r.dedup_key = dedup.map(|k| format!("key{k}"));
                        r
                    })
                    .collect();
                let (got, batch_delay) = if batch || requests.len() > 1 {
                    (
                        broker.send_batch(queue.name(), requests, batch_delay).await,
                        batch_delay,
                    )
                } else {
                    (
                        broker
                            .send(queue.name(), requests.into_iter().next().expect("one"))
                            .await,
                        None,
                    )
                };
                let want = model.send(queue, &reqs, batch_delay);
                ensure!(
                    got.as_ref() == Ok(&want),
                    "{}: got {got:?}, want {want:?}",
                    context()
                );
            }
            &Op::Lease {
                queue,
                max,
                visibility_ms,
            } => {
                let got = broker
                    .lease(queue.name(), LeaseOptions::new(max, visibility_ms))
                    .await;
                match (got, model.lease(queue, max, visibility_ms)) {
                    (Err(BrokerError::Paused(_)), None) => {}
                    (Ok(got), Some(want)) => {
                        let got_view: Vec<(u64, u32, u64)> = got
                            .iter()
                            .map(|m| {
                                (
                                    tag_of(&m.message.body).unwrap_or(u64::MAX),
                                    m.message.attempts,
                                    m.lease_deadline_ms,
                                )
                            })
                            .collect();
                        let want_view: Vec<(u64, u32, u64)> =
                            want.iter().map(|&(_, t, a, d)| (t, a, d)).collect();
                        ensure!(
                            got_view == want_view,
                            "{}: leased (tag, attempts, deadline) {got_view:?}, want \
                             {want_view:?}",
                            context()
                        );
                        for (m, &(lease, ..)) in got.iter().zip(&want) {
                            ensure!(lease == leases.len(), "lease numbering");
                            leases.push(m.lease);
                            ensure!(
                                m.message.body == body(tag_of(&m.message.body).unwrap_or(0)),
                                "{}: body altered",
                                context()
                            );
                        }
                    }
                    (got, want) => {
                        bail!("{}: got {got:?}, model says {want:?}", context())
                    }
                }
            }
            Op::Settle { queue, picks } => {
                if leases.is_empty() {
                    continue;
                }
                let picks: Vec<(usize, Option<Option<u32>>)> =
                    picks.iter().map(|&(i, o)| (i % leases.len(), o)).collect();
                let outcomes = picks
                    .iter()
                    .map(|&(i, o)| {
                        let outcome = match o {
                            None => Outcome::Ack,
                            Some(delay_seconds) => Outcome::Retry { delay_seconds },
                        };
                        (leases[i], outcome)
                    })
                    .collect();
                let got = broker.settle(queue.name(), outcomes).await;
                let (mut want, stale) = model.settle(*queue, &picks);
                want.stale = stale.iter().map(|&i| leases[i]).collect();
                ensure!(
                    got.as_ref() == Ok(&want),
                    "{}: got {got:?}, want {want:?}",
                    context()
                );
            }
            &Op::Advance(ms) => {
                clock.advance_ms(ms);
                model.now += ms;
            }
            Op::Sweep => {
                let got = broker.sweep().await;
                let want = model.sweep();
                ensure!(
                    got.as_ref() == Ok(&want),
                    "{}: got {got:?}, want {want:?}",
                    context()
                );
            }
            &Op::Peek { queue, limit } => {
                let got: Vec<(u64, u32, u64)> = broker
                    .peek(queue.name(), limit)
                    .await
                    .with_context(context)?
                    .iter()
                    .map(|m| {
                        (
                            tag_of(&m.body).unwrap_or(u64::MAX),
                            m.attempts,
                            m.timestamp_ms,
                        )
                    })
                    .collect();
                let want = model.peek(queue, limit);
                ensure!(got == want, "{}: got {got:?}, want {want:?}", context());
            }
            &Op::Pause(paused) => {
                broker.set_paused("q", paused).await.with_context(context)?;
                model.paused = paused;
            }
            &Op::Purge(queue) => {
                let got = broker.purge(queue.name()).await;
                let want = model.purge(queue);
                ensure!(got == Ok(want), "{}: got {got:?}, want {want}", context());
            }
            &Op::Replay(limit) => {
                let got = broker.replay("dlq", "q", limit).await;
                let want = model.replay(limit);
                ensure!(got == Ok(want), "{}: got {got:?}, want {want}", context());
            }
            Op::Restart => {
                broker.close().await?;
                broker = open(&disk, &clock).await.with_context(context)?;
                model.restart();
            }
            &Op::PowerCut(seed) => {
                // Every answer so far was Ok, so everything must be on the platter,
                // whatever happens to the drive's cache.
                disk.cut_power();
                let _ = broker.close().await;
                let survival = survival_for(seed);
                disk = disk.reboot(survival);
                broker = open(&disk, &clock)
                    .await
                    .with_context(|| format!("{}: reopening ({survival})", context()))?;
                model.restart();
            }
        }
        for q in [Qn::Dlq, Qn::Main] {
            let got = broker.metrics(q.name()).await.with_context(context)?;
            let want = model.metrics(q);
            ensure!(
                got == want,
                "{}: metrics of `{}`:\n got  {got:?}\n want {want:?}",
                context(),
                q.name()
            );
        }
    }
    broker.close().await?;
    Ok(())
}

fn config() -> Config {
    let seed = std::env::var("WASMQ_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    Config {
        cases: std::env::var("WASMQ_MODEL_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(128),
        rng_seed: RngSeed::Fixed(seed),
        // The shrunk case is printed; no regression file is written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The broker answers exactly like the reference model, across restarts and power
    /// cuts between operations. `WASMQ_MODEL_SEED` / `WASMQ_MODEL_CASES` change the
    /// generator's seed and the number of cases.
    #[test]
    fn model_matches_redb_broker(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(run(setup, ops))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
