//! Crash safety of the redb broker: the "Delivery" rules of `docs/semantics.md` under
//! process kills and power cuts.
//!
//! - `power_loss_at_random_*`: a broker on a [`SimulatedDisk`] runs a concurrent workload
//!   (sends, batches, dedup sends, leases, acks, retries, dead-lettering) until the power is cut
//!   after a random number of `sync_data` or `write` calls. The broker is "rebooted" from what
//!   survived (only synced bytes; every write, as if the cache had been flushed just in time;
//!   or the synced bytes plus a random subset of the unsynced writes or sectors) and checked
//!   against a journal of what the callers were told. Each run then cuts the power a second
//!   time, during or just after the recovery of the rebooted broker, and checks again.
//! - `sigkill_mid_load`: a real child process (this test binary, re-executed to run only
//!   [`sigkill_child`]) runs the same workload on a file and prints every answer it got; the
//!   parent kills it with SIGKILL mid-load, reopens the file and checks the same invariants.
//! - `model_*`: a proptest that runs random operation sequences against the broker and a small
//!   in-memory reference model, with clean restarts and power cuts between operations.
//!
//! The invariants checked after every restart ([`verify_after_restart`]):
//! 1. the database opens and nothing is in flight;
//! 2. a message whose send (or a lease of it) returned Ok is present unless an ack of it was
//!    attempted; a message whose ack returned Ok is absent;
//! 3. no message is stored twice (queue and dead-letter queue together), and only messages
//!    that some caller tried to send are stored; resending a dedup key whose send returned Ok
//!    stores nothing;
//! 4. the metrics' backlog count and bytes equal what can actually be leased out, and the
//!    counters agree with the backlog;
//! 5. a message leased with `attempts = a` (a lease that returned Ok) that is still in its queue
//!    comes back with `attempts >= a + 1`: the lease counted durably and the interrupted
//!    attempt counts as failed; a message in flight at the crash (no settle attempted) is
//!    visible again at once, in its queue, or in the dead-letter queue if that was its last
//!    attempt.
//!
//! Workload choices are made by generators seeded from the printed seed; thread scheduling
//! (and so the exact grouping of commits) is not under the test's control, so a seed
//! reproduces the workload, not necessarily the very same cut. `WASMQ_CRASH_SEED=<n>` runs a
//! single seed, `WASMQ_CRASH_SEEDS=<n>` sets how many seeds the power-loss tests run (60 by
//! default), `WASMQ_CRASH_DEBUG=1` prints what each power-loss run did.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmq_engine::{
    Broker, BrokerError, ConsumerSettings, ContentType, LeaseOptions, ManualClock, Outcome,
    QueueSettings, RedbBroker, RedbOptions, SendRequest,
};
use wasmq_testkit::START_MS;
use wasmq_testkit::power_loss::{SimulatedDisk, Survival};

const JOBS: &str = "jobs";
const DLQ: &str = "jobs-dlq";
/// Retries before a message of `jobs` is dead-lettered.
const MAX_RETRIES: u32 = 2;
/// Leases taken by the workload outlive the test (the simulated clock does not move).
const WORKLOAD_VISIBILITY_MS: u64 = 600_000;

// ---------------------------------------------------------------------------------------------
// Messages and the journal of answers

/// The body, content type and dedup key of message `tag`: a pure function of the tag, so the
/// journal only needs tags, and a body names its tag ([`tag_of`]).
fn request_for(tag: u64) -> SendRequest {
    let pad = match tag % 10 {
        0 => 3_000 + (tag % 7) as usize * 500,
        _ => (tag * 37 % 600) as usize,
    };
    let mut request = match tag % 3 {
        0 => SendRequest::text(format!("m{tag:08}|{}", "t".repeat(pad))),
        1 => SendRequest::new(
            format!(r#"{{"m":"m{tag:08}","pad":"{}"}}"#, "j".repeat(pad)),
            ContentType::Json,
        ),
        _ => {
            let mut body = format!("m{tag:08}").into_bytes();
            body.extend((0..pad).map(|i| (i as u64 * 131 + tag) as u8));
            SendRequest::new(body, ContentType::Bytes)
        }
    };
    if is_dedup(tag) {
        request = request.with_dedup_key(format!("key-{tag}"));
    }
    request
}

fn is_dedup(tag: u64) -> bool {
    tag.is_multiple_of(4)
}

/// The tag a body was made for: the digits after the first `m` followed by eight digits.
fn tag_of(body: &[u8]) -> Option<u64> {
    body.windows(9)
        .find(|w| w[0] == b'm' && w[1..].iter().all(u8::is_ascii_digit))
        .and_then(|w| std::str::from_utf8(&w[1..]).ok()?.parse().ok())
}

/// What a caller did or was told. The child process prints these, one a line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// About to send message `tag` (it may be stored from now on).
    Sending(u64),
    /// A send holding message `tag` returned Ok.
    Sent(u64),
    /// A lease of `queue` returned Ok with message `tag` at `attempts`.
    Leased {
        queue: String,
        tag: u64,
        attempts: u32,
    },
    /// About to retry message `tag`, leased from `jobs` with `attempts` (it may be requeued or
    /// dead-lettered from now on).
    Retrying { tag: u64, attempts: u32 },
    /// About to ack message `tag` (it may be deleted from now on).
    Acking(u64),
    /// A settle acking message `tag` in `queue` returned Ok.
    Acked { queue: String, tag: u64 },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Sending(tag) => write!(f, "P {tag}"),
            Event::Sent(tag) => write!(f, "S {tag}"),
            Event::Leased {
                queue,
                tag,
                attempts,
            } => write!(f, "L {queue} {tag} {attempts}"),
            Event::Retrying { tag, attempts } => write!(f, "R {tag} {attempts}"),
            Event::Acking(tag) => write!(f, "a {tag}"),
            Event::Acked { queue, tag } => write!(f, "A {queue} {tag}"),
        }
    }
}

impl FromStr for Event {
    type Err = anyhow::Error;

    fn from_str(line: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            parts
                .get(i)
                .context("missing field")?
                .parse()
                .context("bad number")
        };
        Ok(match parts[0] {
            "P" => Event::Sending(num(1)?),
            "S" => Event::Sent(num(1)?),
            "L" => Event::Leased {
                queue: parts.get(1).context("missing queue")?.to_string(),
                tag: num(2)?,
                attempts: u32::try_from(num(3)?)?,
            },
            "R" => Event::Retrying {
                tag: num(1)?,
                attempts: u32::try_from(num(2)?)?,
            },
            "a" => Event::Acking(num(1)?),
            "A" => Event::Acked {
                queue: parts.get(1).context("missing queue")?.to_string(),
                tag: num(2)?,
            },
            other => bail!("unknown event `{other}` in line `{line}`"),
        })
    }
}

/// Everything the callers were told before the crash.
#[derive(Debug, Default)]
struct Journal {
    sending: HashSet<u64>,
    sent: HashSet<u64>,
    /// Highest attempts seen in a lease of `jobs`, per tag.
    leased_from_jobs: HashMap<u64, u32>,
    /// Tags seen in any lease.
    leased: HashSet<u64>,
    /// Highest attempts of a `jobs` lease whose retry was attempted, per tag.
    retrying: HashMap<u64, u32>,
    acking: HashSet<u64>,
    /// Acks that returned Ok, per queue.
    acked: HashMap<u64, String>,
}

impl Journal {
    fn record(&mut self, event: Event) {
        match event {
            Event::Sending(tag) => {
                self.sending.insert(tag);
            }
            Event::Sent(tag) => {
                self.sent.insert(tag);
            }
            Event::Leased {
                queue,
                tag,
                attempts,
            } => {
                self.leased.insert(tag);
                if queue == JOBS {
                    let seen = self.leased_from_jobs.entry(tag).or_default();
                    *seen = (*seen).max(attempts);
                }
            }
            Event::Retrying { tag, attempts } => {
                let seen = self.retrying.entry(tag).or_default();
                *seen = (*seen).max(attempts);
            }
            Event::Acking(tag) => {
                self.acking.insert(tag);
            }
            Event::Acked { queue, tag } => {
                self.acked.insert(tag, queue);
            }
        }
    }

    fn acked_in(&self, queue: &str) -> u64 {
        self.acked.values().filter(|q| *q == queue).count() as u64
    }

    /// Messages of `jobs` in flight at the crash as far as the callers know: their latest
    /// lease returned Ok and no settle of it was attempted (an attempted one may have
    /// committed without answering), with the attempts of that lease.
    fn in_flight(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.leased_from_jobs
            .iter()
            .filter(|&(tag, attempts)| {
                !self.acking.contains(tag) && self.retrying.get(tag) != Some(attempts)
            })
            .map(|(&tag, &attempts)| (tag, attempts))
    }
}

/// Where workload tasks report events.
type Recorder = Arc<dyn Fn(Event) + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// The workload

fn queue_settings() -> (QueueSettings, QueueSettings) {
    let dlq = QueueSettings {
        consumer: ConsumerSettings {
            // Nothing in the dead-letter queue is ever dropped by these tests' retries.
            max_retries: 100,
            ..ConsumerSettings::default()
        },
        ..QueueSettings::default()
    };
    let jobs = QueueSettings {
        dedup_window: 3_600,
        consumer: ConsumerSettings {
            max_retries: MAX_RETRIES,
            retry_delay: 0,
            dead_letter_queue: Some(DLQ.to_owned()),
            ..ConsumerSettings::default()
        },
        ..QueueSettings::default()
    };
    (dlq, jobs)
}

async fn create_queues(broker: &dyn Broker) -> anyhow::Result<()> {
    let (dlq, jobs) = queue_settings();
    broker.create_queue(DLQ, dlq).await?;
    broker.create_queue(JOBS, jobs).await?;
    Ok(())
}

/// Why a workload task stopped early.
#[derive(Debug)]
enum Stop {
    /// The storage failed, as it does after a power cut.
    Unavailable,
    /// Anything else is a bug.
    Bug(String),
}

fn stop(op: &str, err: BrokerError) -> Stop {
    match err {
        BrokerError::Unavailable(_) => Stop::Unavailable,
        other => Stop::Bug(format!("{op} failed with an unexpected error: {other}")),
    }
}

/// Sends single messages, batches and repeated dedup sends, `ops` times (forever if `None`).
async fn producer(
    broker: Arc<dyn Broker>,
    tags: Arc<AtomicU64>,
    mut rng: StdRng,
    record: Recorder,
    ops: Option<u64>,
) -> Result<(), Stop> {
    let mut done = 0;
    while ops.is_none_or(|ops| done < ops) {
        done += 1;
        let n = if rng.random_bool(0.5) {
            1
        } else {
            rng.random_range(2..=20)
        };
        let batch: Vec<u64> = (0..n)
            .map(|_| tags.fetch_add(1, Ordering::SeqCst))
            .collect();
        let mut requests = Vec::new();
        for &tag in &batch {
            requests.push(request_for(tag));
            // A dedup key sent twice in one batch is stored once.
            if is_dedup(tag) && n > 1 && rng.random_bool(0.3) {
                requests.push(request_for(tag));
            }
        }
        for &tag in &batch {
            record(Event::Sending(tag));
        }
        let result = if requests.len() == 1 && rng.random_bool(0.7) {
            broker.send(JOBS, requests.remove(0)).await
        } else {
            broker.send_batch(JOBS, requests, None).await
        };
        result.map_err(|e| stop("send", e))?;
        for &tag in &batch {
            record(Event::Sent(tag));
        }
        // A second send with the same dedup key is accepted and stores nothing.
        for &tag in batch.iter().filter(|&&t| is_dedup(t)) {
            if rng.random_bool(0.3) {
                broker
                    .send(JOBS, request_for(tag))
                    .await
                    .map_err(|e| stop("dedup resend", e))?;
            }
        }
    }
    Ok(())
}

/// Leases from `jobs` (and now and then from the dead-letter queue) and acks, retries or keeps
/// what it got, `ops` times (forever if `None`).
async fn consumer(
    broker: Arc<dyn Broker>,
    mut rng: StdRng,
    record: Recorder,
    ops: Option<u64>,
) -> Result<(), Stop> {
    let mut done = 0;
    while ops.is_none_or(|ops| done < ops) {
        done += 1;
        let queue = if rng.random_bool(0.85) { JOBS } else { DLQ };
        let options = LeaseOptions::new(rng.random_range(1..=10), WORKLOAD_VISIBILITY_MS);
        let leased = broker
            .lease(queue, options)
            .await
            .map_err(|e| stop("lease", e))?;
        if leased.is_empty() {
            tokio::task::yield_now().await;
            continue;
        }
        let mut outcomes = Vec::new();
        let mut acks = Vec::new();
        let mut retries = Vec::new();
        for m in &leased {
            let tag = tag_of(&m.message.body)
                .ok_or_else(|| Stop::Bug(format!("a leased body has no tag: {:?}", m.message)))?;
            if m.message.attempts == 0 {
                return Err(Stop::Bug(format!("message {tag} leased with attempts 0")));
            }
            record(Event::Leased {
                queue: queue.to_owned(),
                tag,
                attempts: m.message.attempts,
            });
            let roll: f64 = rng.random();
            if roll < 0.55 {
                outcomes.push((m.lease, Outcome::Ack));
                acks.push(tag);
            } else if roll < 0.8 && queue == JOBS {
                let delay_seconds = rng.random_bool(0.5).then_some(0);
                outcomes.push((m.lease, Outcome::Retry { delay_seconds }));
                retries.push((tag, m.message.attempts));
            }
            // Otherwise the lease is kept: the message is in flight when the crash comes.
        }
        if outcomes.is_empty() {
            continue;
        }
        for &tag in &acks {
            record(Event::Acking(tag));
        }
        for &(tag, attempts) in &retries {
            record(Event::Retrying { tag, attempts });
        }
        let expected = outcomes.len();
        let report = broker
            .settle(queue, outcomes)
            .await
            .map_err(|e| stop("settle", e))?;
        let applied =
            (report.acked + report.retried + report.dead_lettered + report.dropped) as usize;
        if !report.stale.is_empty() || applied != expected || report.acked as usize != acks.len() {
            return Err(Stop::Bug(format!(
                "settle of {expected} live leases ({} acks) reported {report:?}",
                acks.len()
            )));
        }
        for tag in acks {
            record(Event::Acked {
                queue: queue.to_owned(),
                tag,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The check after a restart

/// One stored message, as leased out after the restart.
#[derive(Debug)]
struct Found {
    queue: &'static str,
    attempts: u32,
}

/// What [`verify_after_restart`] saw.
#[derive(Debug, Default)]
struct Summary {
    stored: usize,
    in_dlq: usize,
    /// Messages leased from `jobs` before the crash found there again, attempts counted.
    leased_before: usize,
    /// Messages in flight at the crash ([`Journal::in_flight`]) found again.
    in_flight_back: usize,
}

/// Checks the invariants of the module docs on a broker just reopened after a crash, leasing
/// out every stored message (so call it once per reopened database).
async fn verify_after_restart(broker: &dyn Broker, journal: &Journal) -> anyhow::Result<Summary> {
    ensure!(
        journal.sent.is_subset(&journal.sending),
        "the journal lost events: {} sends returned Ok that were never announced",
        journal.sent.difference(&journal.sending).count()
    );
    for queue in [JOBS, DLQ] {
        let m = broker.metrics(queue).await?;
        ensure!(
            m.in_flight == 0,
            "{queue}: {} messages in flight right after the restart",
            m.in_flight
        );
    }

    // Lease out everything, counting what is stored.
    let mut found: HashMap<u64, Found> = HashMap::new();
    for queue in [JOBS, DLQ] {
        let metrics = broker.metrics(queue).await?;
        let (mut count, mut bytes) = (0u64, 0u64);
        loop {
            let leased = broker
                .lease(queue, LeaseOptions::new(100, 3_600_000))
                .await?;
            if leased.is_empty() {
                break;
            }
            for m in leased {
                count += 1;
                bytes += m.message.body.len() as u64;
                let tag = tag_of(&m.message.body)
                    .with_context(|| format!("{queue}: a stored body has no tag: {m:?}"))?;
                ensure!(
                    journal.sending.contains(&tag),
                    "{queue}: message {tag} is stored but nobody tried to send it"
                );
                ensure!(
                    m.message == request_message(tag, &m.message),
                    "{queue}: message {tag} came back altered: {:?}",
                    m.message
                );
                let previous = found.insert(
                    tag,
                    Found {
                        queue,
                        attempts: m.message.attempts,
                    },
                );
                if let Some(previous) = previous {
                    bail!(
                        "message {tag} is stored twice: in {} and in {queue}",
                        previous.queue
                    );
                }
            }
        }
        ensure!(
            (metrics.backlog.count, metrics.backlog.bytes) == (count, bytes),
            "{queue}: metrics say {} messages / {} bytes are stored, {count} / {bytes} could be \
             leased",
            metrics.backlog.count,
            metrics.backlog.bytes
        );
        ensure!(
            metrics.delayed == 0,
            "{queue}: {} delayed messages",
            metrics.delayed
        );
        let leased_out = broker.metrics(queue).await?;
        ensure!(
            leased_out.in_flight == count,
            "{queue}: {count} messages leased out but in_flight is {}",
            leased_out.in_flight
        );
    }

    // The counters agree with the backlog.
    let jobs = broker.metrics(JOBS).await?;
    let dlq = broker.metrics(DLQ).await?;
    ensure!(
        jobs.sent - jobs.acked - jobs.dead_lettered - jobs.dropped - jobs.expired
            == jobs.backlog.count,
        "{JOBS}: counters do not add up to the backlog: {jobs:?}"
    );
    ensure!(
        jobs.dead_lettered - dlq.acked - dlq.dropped - dlq.expired == dlq.backlog.count,
        "{DLQ}: counters do not add up to the backlog: {dlq:?} (dead-lettered by {JOBS}: {})",
        jobs.dead_lettered
    );
    ensure!(
        jobs.sent >= journal.sent.len() as u64 && jobs.sent <= journal.sending.len() as u64,
        "{JOBS}: sent is {} but {} sends returned Ok and {} were tried",
        jobs.sent,
        journal.sent.len(),
        journal.sending.len()
    );
    ensure!(
        jobs.acked >= journal.acked_in(JOBS) && dlq.acked >= journal.acked_in(DLQ),
        "acked counters {} / {} are below the acks that returned Ok ({} / {})",
        jobs.acked,
        dlq.acked,
        journal.acked_in(JOBS),
        journal.acked_in(DLQ)
    );

    // Nothing acknowledged is lost, nothing acked comes back.
    let mut must_exist: Vec<u64> = journal
        .sent
        .union(&journal.leased)
        .copied()
        .filter(|t| !journal.acking.contains(t))
        .collect();
    must_exist.sort_unstable();
    let lost: Vec<u64> = must_exist
        .iter()
        .copied()
        .filter(|t| !found.contains_key(t))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged messages were lost (never acked): {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let mut back: Vec<(&u64, &Found)> = found
        .iter()
        .filter(|(t, _)| journal.acked.contains_key(t))
        .collect();
    back.sort_unstable_by_key(|(t, _)| **t);
    ensure!(
        back.is_empty(),
        "{} messages whose ack returned Ok came back: {:?}",
        back.len(),
        &back[..back.len().min(20)]
    );

    // Attempts were counted durably, and the interrupted one counts as failed.
    let mut leased_before = 0;
    for (tag, f) in &found {
        ensure!(f.attempts >= 1, "message {tag} leased with attempts 0");
        if f.queue == JOBS
            && let Some(&seen) = journal.leased_from_jobs.get(tag)
        {
            ensure!(
                f.attempts > seen,
                "message {tag} was leased from {JOBS} with attempts {seen} before the crash and \
                 now comes back with attempts {}",
                f.attempts
            );
            leased_before += 1;
        }
    }
    // In-flight messages come back visible (they were all just leased out), in `jobs` with
    // their attempt counted, or in the dead-letter queue if that was their last attempt.
    let mut in_flight_back = 0;
    for (tag, attempts) in journal.in_flight() {
        let f = found
            .get(&tag)
            .with_context(|| format!("message {tag}, in flight at the crash, is gone"))?;
        ensure!(
            f.queue == DLQ || f.attempts > attempts,
            "message {tag} was in flight with attempts {attempts} and is in {} with attempts {}",
            f.queue,
            f.attempts
        );
        ensure!(
            f.queue == JOBS || attempts > MAX_RETRIES,
            "message {tag} was in flight with attempts {attempts} (retries left) and was \
             dead-lettered"
        );
        in_flight_back += 1;
    }
    // Dedup keys whose send returned Ok are remembered: resending stores nothing.
    let before = broker.metrics(JOBS).await?;
    let mut dedup: Vec<u64> = journal
        .sent
        .iter()
        .copied()
        .filter(|&t| is_dedup(t))
        .collect();
    dedup.sort_unstable();
    for chunk in dedup.chunks(50) {
        let requests = chunk.iter().map(|&t| request_for(t)).collect();
        broker
            .send_batch(JOBS, requests, None)
            .await
            .context("resending dedup keys")?;
    }
    let after = broker.metrics(JOBS).await?;
    let leased = broker
        .lease(JOBS, LeaseOptions::new(100, 3_600_000))
        .await?;
    ensure!(
        (after.sent, after.backlog) == (before.sent, before.backlog) && leased.is_empty(),
        "resending {} acknowledged dedup keys stored messages: before {before:?}, after \
         {after:?}, leased {leased:?}",
        dedup.len()
    );

    Ok(Summary {
        stored: found.len(),
        in_dlq: found.values().filter(|f| f.queue == DLQ).count(),
        leased_before,
        in_flight_back,
    })
}

/// `stored` as it should be if it is message `tag`: the body and content type of
/// [`request_for`], the stored id, timestamp and attempts.
fn request_message(tag: u64, stored: &wasmq_engine::Message) -> wasmq_engine::Message {
    let request = request_for(tag);
    wasmq_engine::Message {
        body: request.body,
        content_type: request.content_type,
        ..stored.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Power loss on a simulated disk

/// The tag of a message sent outside the workload (never used by it).
const MARKER_TAG: u64 = 99_999_999;

fn survival_for(seed: u64) -> Survival {
    match seed % 4 {
        0 => Survival::Strict,
        1 => Survival::Everything,
        2 => Survival::TornWrites { seed },
        _ => Survival::TornSectors { seed },
    }
}

/// Where the power is cut.
#[derive(Debug, Clone, Copy)]
enum CutAt {
    /// After a random number of further successful `sync_data` calls (up to this many).
    Syncs(u64),
    /// After a random number of further successful `write` calls (up to this many).
    Writes(u64),
}

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("WASMQ_CRASH_SEED") {
        return vec![seed.parse().expect("WASMQ_CRASH_SEED is a number")];
    }
    let n = std::env::var("WASMQ_CRASH_SEEDS")
        .map(|n| n.parse().expect("WASMQ_CRASH_SEEDS is a number"))
        .unwrap_or(default);
    (0..n).collect()
}

fn open_sim(disk: &SimulatedDisk, clock: &ManualClock, cache: usize) -> anyhow::Result<RedbBroker> {
    RedbBroker::open_with_backend(
        disk.backend(),
        RedbOptions {
            cache_size_bytes: cache,
            ..RedbOptions::with_clock(clock.clone())
        },
    )
}

/// What one power-loss run did, for the test's summary.
#[derive(Debug, Default)]
struct RunStats {
    sent: usize,
    acked: usize,
    stored: usize,
    in_dlq: usize,
    leased_before: usize,
    in_flight_back: usize,
}

/// One seed: workload, cut, reboot in every survival mode, check.
async fn power_loss_run(seed: u64, cut: CutAt) -> anyhow::Result<RunStats> {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimulatedDisk::new();
    let clock = ManualClock::new(START_MS);
    // Small caches make redb evict and reread pages, and write some before the commit.
    let cache = [64 << 10, 256 << 10, 4 << 20][rng.random_range(0..3)];
    let broker = Arc::new(open_sim(&disk, &clock, cache)?);
    create_queues(&*broker).await?;

    let journal = Arc::new(Mutex::new(Journal::default()));
    let record: Recorder = {
        let journal = journal.clone();
        Arc::new(move |event| journal.lock().unwrap().record(event))
    };
    let tags = Arc::new(AtomicU64::new(1));

    // Something to consume from the start.
    producer(
        broker.clone(),
        tags.clone(),
        StdRng::seed_from_u64(rng.random()),
        record.clone(),
        Some(rng.random_range(1..=6)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("preloading: {e:?}"))?;

    match cut {
        CutAt::Syncs(max) => disk.cut_after_syncs(rng.random_range(0..=max)),
        CutAt::Writes(max) => disk.cut_after_writes(rng.random_range(0..=max)),
    }
    let producers = rng.random_range(1..=3);
    let consumers = rng.random_range(1..=3);
    let mut tasks = Vec::new();
    for _ in 0..producers {
        tasks.push(tokio::spawn(producer(
            broker.clone(),
            tags.clone(),
            StdRng::seed_from_u64(rng.random()),
            record.clone(),
            Some(40),
        )));
    }
    for _ in 0..consumers {
        tasks.push(tokio::spawn(consumer(
            broker.clone(),
            StdRng::seed_from_u64(rng.random()),
            record.clone(),
            Some(60),
        )));
    }
    for task in tasks {
        match task.await? {
            Ok(()) | Err(Stop::Unavailable) => {}
            Err(Stop::Bug(bug)) => bail!("workload: {bug}"),
        }
    }
    if !disk.is_cut() {
        // The workload finished first: cut now, between commits.
        disk.cut_power();
    }
    // A failed commit is fatal for writes.
    match broker.send(JOBS, SendRequest::text("after the cut")).await {
        Err(BrokerError::Unavailable(_)) => {}
        other => bail!("a send after the power cut answered {other:?}"),
    }
    let broker = Arc::into_inner(broker).expect("tasks are done");
    broker.close().await?;

    let journal = std::mem::take(&mut *journal.lock().unwrap());
    let debug = std::env::var("WASMQ_CRASH_DEBUG").is_ok();
    if debug {
        eprintln!(
            "seed {seed}: cache {cache}, {:?}, {} sent, {} acked",
            disk.stats(),
            journal.sent.len(),
            journal.acked.len()
        );
    }
    let mut stats = RunStats {
        sent: journal.sent.len(),
        acked: journal.acked.len(),
        ..RunStats::default()
    };
    for survival in [
        Survival::Strict,
        Survival::Everything,
        Survival::TornWrites { seed },
        Survival::TornSectors { seed },
    ] {
        let rebooted = disk.reboot(survival);
        let clock = ManualClock::new(START_MS + 60_000);
        let broker = open_sim(&rebooted, &clock, cache)
            .with_context(|| format!("{survival}: reopening after the power cut"))?;
        let summary = verify_after_restart(&broker, &journal)
            .await
            .with_context(|| format!("{survival}: after the power cut"))?;
        if debug {
            eprintln!("  {survival}: {summary:?}");
        }
        stats.stored = stats.stored.max(summary.stored);
        stats.in_dlq = stats.in_dlq.max(summary.in_dlq);
        stats.leased_before = stats.leased_before.max(summary.leased_before);
        stats.in_flight_back = stats.in_flight_back.max(summary.in_flight_back);

        // The rebooted broker writes and survives a clean shutdown.
        broker
            .send(JOBS, SendRequest::text("after the reboot"))
            .await
            .with_context(|| format!("{survival}: sending after the reboot"))?;
        broker.close().await?;
        let again = open_sim(&rebooted.reboot(Survival::Strict), &clock, cache)
            .with_context(|| format!("{survival}: reopening after a clean close"))?;
        let stored =
            again.metrics(JOBS).await?.backlog.count + again.metrics(DLQ).await?.backlog.count;
        ensure!(
            stored == summary.stored as u64 + 1,
            "{survival}: {} messages stored after a clean close, expected {}",
            stored,
            summary.stored + 1
        );
        again.close().await?;
    }

    // A second power cut while the rebooted broker recovers (expiring the leases of the
    // crashed one); the next boot must still find everything.
    let first = survival_for(rng.random());
    let rebooting = disk.reboot(first);
    rebooting.cut_after_writes(rng.random_range(0..40));
    let clock = ManualClock::new(START_MS + 60_000);
    let during = open_sim(&rebooting, &clock, cache);
    if debug {
        eprintln!(
            "  second cut: {} recovery ({:?})",
            if during.is_ok() { "after" } else { "during" },
            rebooting.stats()
        );
    }
    if let Ok(broker) = during {
        // The cut came after the recovery: it lands on the next write instead.
        let _ = broker.send(JOBS, request_for(MARKER_TAG)).await;
        rebooting.cut_power();
        let _ = broker.close().await;
    }
    let second = survival_for(rng.random());
    let rebooted = rebooting.reboot(second);
    let broker = open_sim(&rebooted, &clock, cache)
        .with_context(|| format!("reopening after cuts in {first} then in {second} mode"))?;
    let mut journal = journal;
    // The message sent between the cuts may be stored.
    journal.sending.insert(MARKER_TAG);
    verify_after_restart(&broker, &journal)
        .await
        .with_context(|| format!("after a cut during recovery ({first}, then {second})"))?;
    broker.close().await?;
    Ok(stats)
}

async fn power_loss_test(name: &str, cut: CutAt) {
    let started = Instant::now();
    let seeds = seeds(60);
    let mut totals = RunStats::default();
    for &seed in &seeds {
        match power_loss_run(seed, cut).await {
            Ok(stats) => {
                totals.sent += stats.sent;
                totals.acked += stats.acked;
                totals.stored += stats.stored;
                totals.in_dlq += stats.in_dlq;
                totals.leased_before += stats.leased_before;
                totals.in_flight_back += stats.in_flight_back;
            }
            Err(err) => {
                panic!("{name}: seed {seed} failed (rerun with WASMQ_CRASH_SEED={seed}): {err:#}")
            }
        }
    }
    eprintln!(
        "{name}: {} seeds in {:?}: {totals:?}",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() >= 10 {
        // The workload did exercise what the checks are about.
        assert!(totals.sent > 0 && totals.acked > 0 && totals.in_flight_back > 0);
    }
}

/// The power goes off when a commit syncs: nothing of that commit is durable (strict) or part
/// of it is (torn modes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_random_syncs() {
    power_loss_test("power_loss_at_random_syncs", CutAt::Syncs(60)).await;
}

/// The power goes off in the middle of writing a commit (or between commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_random_writes() {
    power_loss_test("power_loss_at_random_writes", CutAt::Writes(600)).await;
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of a real process

const CHILD_ENV: &str = "WASMQ_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "WASMQ_CRASH_CHILD_SEED";
/// Sends acknowledged to the parent before it kills the child (at least).
const KILL_AFTER_SENT: usize = 2_000;

/// Not a test on its own: when `WASMQ_CRASH_CHILD` names a database, runs the workload on it
/// forever, printing every event on stdout, until [`sigkill_mid_load`] kills the process.
/// Without the variable it returns at once.
#[test]
fn sigkill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let broker: Arc<dyn Broker> =
            Arc::new(RedbBroker::open(&path, RedbOptions::default()).expect("child: open"));
        fn record_raw(line: &str) {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").expect("child: stdout");
            out.flush().expect("child: stdout");
        }
        let record: Recorder = Arc::new(|event| record_raw(&event.to_string()));
        // libtest has written "test sigkill_child ... " without a newline: end that line so
        // the first event gets one of its own.
        record_raw("");
        let tags = Arc::new(AtomicU64::new(1));
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(tokio::spawn(producer(
                broker.clone(),
                tags.clone(),
                StdRng::seed_from_u64(rng.random()),
                record.clone(),
                None,
            )));
        }
        for _ in 0..2 {
            tasks.push(tokio::spawn(consumer(
                broker.clone(),
                StdRng::seed_from_u64(rng.random()),
                record.clone(),
                None,
            )));
        }
        let all = async {
            for task in tasks {
                if let Err(stop) = task.await.expect("child: task") {
                    panic!("child: workload stopped: {stop:?}");
                }
            }
        };
        // The parent kills us long before this.
        if tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .is_err()
        {
            panic!("child: never killed");
        }
    });
}

/// Kills a child process running the workload with SIGKILL after it reported at least
/// [`KILL_AFTER_SENT`] acknowledged sends, then reopens its database and checks the
/// invariants. Three rounds (seeds 0..3, or `WASMQ_CRASH_SEED`), each killing later.
#[test]
fn sigkill_mid_load() {
    let seeds = match std::env::var("WASMQ_CRASH_SEED") {
        Ok(_) => seeds(1),
        Err(_) => (0..3).collect(),
    };
    for seed in seeds {
        let started = Instant::now();
        let kill_after = KILL_AFTER_SENT + seed as usize % 4 * 500;
        let (journal, summary) = sigkill_round(seed, kill_after);
        eprintln!(
            "sigkill_mid_load seed {seed}: {} sent, {} acked, {} in flight at the kill; \
             {summary:?} in {:?}",
            journal.sent.len(),
            journal.acked.len(),
            journal.in_flight().count(),
            started.elapsed()
        );
        assert!(
            !journal.acked.is_empty(),
            "seed {seed}: the child acked nothing"
        );
        assert!(
            summary.in_flight_back > 0,
            "seed {seed}: nothing was in flight at the kill"
        );
    }
}

/// One child run killed after `kill_after` acknowledged sends; panics naming the seed if an
/// invariant breaks.
fn sigkill_round(seed: u64, kill_after: usize) -> (Journal, Summary) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queues.redb");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let broker = RedbBroker::open(&path, RedbOptions::default()).expect("open");
        create_queues(&broker).await.expect("create queues");
        broker.close().await.expect("close");
    });

    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "sigkill_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    // Complete lines only: the last one may be cut short by the kill.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = lines_tx.send(complete.to_owned());
            }
            line.clear();
        }
    });

    let mut journal = Journal::default();
    let record_line = |line: &str, journal: &mut Journal| {
        // libtest's own output ("running 1 test") is not an event.
        if let Ok(event) = line.parse::<Event>() {
            journal.record(event);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while journal.sent.len() < kill_after {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(timeout) {
            Ok(line) => record_line(&line, &mut journal),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "seed {seed}: the child stopped or stalled after {} acknowledged sends; its \
                     stderr:\n{}",
                    journal.sent.len(),
                    stderr.join().unwrap_or_default()
                );
            }
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    // What the child wrote before it died counts too.
    for line in lines.try_iter() {
        record_line(&line, &mut journal);
    }
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        !status.success(),
        "seed {seed}: the child exited by itself ({status}); its stderr:\n{stderr}"
    );

    let summary = runtime.block_on(async {
        let broker =
            RedbBroker::open(&path, RedbOptions::default()).expect("reopening after SIGKILL");
        let summary = verify_after_restart(&broker, &journal).await;
        broker.close().await.expect("close");
        summary
    });
    let summary = summary.unwrap_or_else(|err| {
        panic!(
            "after SIGKILL (rerun with WASMQ_CRASH_SEED={seed}): {err:#}\nchild stderr:\n{stderr}"
        )
    });
    (journal, summary)
}

// ---------------------------------------------------------------------------------------------
// Model-based: random operation sequences against an in-memory reference

mod model {
    //! A reference model of one queue (`q`) with a dead-letter queue (`dlq`): sends (single,
    //! batch, delays, dedup keys), leases, settles (acks, retries, stale leases), sweeps,
    //! retention, pause, purge, replay, and restarts (clean, or a power cut between operations,
    //! after which everything that returned Ok must have survived). Every answer and both
    //! queues' metrics are compared after every operation.

    use std::collections::{BTreeMap, HashMap};

    use anyhow::{Context, bail, ensure};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestCaseError};
    use wasmq_engine::{
        Backlog, Broker, BrokerError, ConsumerSettings, LeaseId, LeaseOptions, ManualClock,
        Outcome, QueueMetrics, QueueSettings, RedbBroker, RedbOptions, SendRequest, SettleReport,
        SweepReport,
    };
    use wasmq_testkit::START_MS;
    use wasmq_testkit::power_loss::{SimulatedDisk, Survival};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Qn {
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
    pub struct Setup {
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
    pub enum Op {
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
                    .filter(|m| matches!(m.place, Place::Ready { visible_at, .. } if visible_at > self.now))
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
                self.msgs.get_mut(&seq).expect("exists").place =
                    Place::Ready { visible_at, ticket };
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
                    Place::Ready { visible_at, ticket }
                        if m.queue == q && visible_at <= self.now =>
                    {
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

    fn open(disk: &SimulatedDisk, clock: &ManualClock) -> anyhow::Result<RedbBroker> {
        RedbBroker::open_with_backend(
            disk.backend(),
            RedbOptions {
                cache_size_bytes: 1 << 20,
                ..RedbOptions::with_clock(clock.clone())
            },
        )
    }

    /// Runs `ops` against a fresh broker and the model, comparing every answer.
    async fn run(setup: Setup, ops: Vec<Op>) -> anyhow::Result<()> {
        let mut model = Model::new(setup);
        let clock = ManualClock::new(START_MS);
        let mut disk = SimulatedDisk::new();
        let mut broker = open(&disk, &clock)?;
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
                            let mut r =
                                SendRequest::new(body(tag), wasmq_engine::ContentType::Text);
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
                    broker = open(&disk, &clock).with_context(context)?;
                    model.restart();
                }
                &Op::PowerCut(seed) => {
                    // Every answer so far was Ok, so everything must be on the platter,
                    // whatever happens to the drive's cache.
                    disk.cut_power();
                    let _ = broker.close().await;
                    let survival = match seed % 4 {
                        0 => Survival::Strict,
                        1 => Survival::Everything,
                        2 => Survival::TornWrites { seed },
                        _ => Survival::TornSectors { seed },
                    };
                    disk = disk.reboot(survival);
                    broker = open(&disk, &clock)
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
}
