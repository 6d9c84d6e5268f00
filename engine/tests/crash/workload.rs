//! The workload of the power-loss and SIGKILL designs and the journal of what its callers were
//! told. Producers send single messages, batches and repeated dedup sends to `jobs`; consumers
//! lease from `jobs` (and now and then from its dead-letter queue) and ack, retry or keep what
//! they got. Every body is a pure function of its tag ([`request_for`]), so the journal only
//! needs tags and a stored message can be checked byte for byte after a crash.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use rand::Rng;
use rand::rngs::StdRng;
use wasmq_engine::{
    Broker, BrokerError, ConsumerSettings, ContentType, LeaseOptions, Outcome, QueueSettings,
    SendRequest,
};

pub(crate) const JOBS: &str = "jobs";
pub(crate) const DLQ: &str = "jobs-dlq";
/// Retries before a message of `jobs` is dead-lettered.
pub(crate) const MAX_RETRIES: u32 = 2;
/// Leases taken by the workload outlive the test (the simulated clock does not move).
const WORKLOAD_VISIBILITY_MS: u64 = 600_000;

// ---------------------------------------------------------------------------------------------
// Messages and the journal of answers

/// The body, content type and dedup key of message `tag`: a pure function of the tag, so the
/// journal only needs tags, and a body names its tag ([`tag_of`]).
pub(crate) fn request_for(tag: u64) -> SendRequest {
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

pub(crate) fn is_dedup(tag: u64) -> bool {
    tag.is_multiple_of(4)
}

/// The tag a body was made for: the digits after the first `m` followed by eight digits.
pub(crate) fn tag_of(body: &[u8]) -> Option<u64> {
    body.windows(9)
        .find(|w| w[0] == b'm' && w[1..].iter().all(u8::is_ascii_digit))
        .and_then(|w| std::str::from_utf8(&w[1..]).ok()?.parse().ok())
}

/// What a caller did or was told. The child process prints these, one a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
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
pub(crate) struct Journal {
    pub sending: HashSet<u64>,
    pub sent: HashSet<u64>,
    /// Highest attempts seen in a lease of `jobs`, per tag.
    pub leased_from_jobs: HashMap<u64, u32>,
    /// Tags seen in any lease.
    pub leased: HashSet<u64>,
    /// Highest attempts of a `jobs` lease whose retry was attempted, per tag.
    retrying: HashMap<u64, u32>,
    pub acking: HashSet<u64>,
    /// Acks that returned Ok, per queue.
    pub acked: HashMap<u64, String>,
}

impl Journal {
    pub(crate) fn record(&mut self, event: Event) {
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

    pub(crate) fn acked_in(&self, queue: &str) -> u64 {
        self.acked.values().filter(|q| *q == queue).count() as u64
    }

    /// Messages of `jobs` in flight at the crash as far as the callers know: their latest
    /// lease returned Ok and no settle of it was attempted (an attempted one may have
    /// committed without answering), with the attempts of that lease.
    pub(crate) fn in_flight(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.leased_from_jobs
            .iter()
            .filter(|&(tag, attempts)| {
                !self.acking.contains(tag) && self.retrying.get(tag) != Some(attempts)
            })
            .map(|(&tag, &attempts)| (tag, attempts))
    }
}

/// Where workload tasks report events.
pub(crate) type Recorder = Arc<dyn Fn(Event) + Send + Sync>;

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

pub(crate) async fn create_queues(broker: &dyn Broker) -> anyhow::Result<()> {
    let (dlq, jobs) = queue_settings();
    broker.create_queue(DLQ, dlq).await?;
    broker.create_queue(JOBS, jobs).await?;
    Ok(())
}

/// Why a workload task stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
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
pub(crate) async fn producer(
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
pub(crate) async fn consumer(
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
        let applied = (report.acked + report.retries()) as usize;
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
