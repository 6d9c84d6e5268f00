//! The dashboard's view of every queue over time. Each sample is one `list_queues` read (the
//! queues' counters and gauges: O(queues), no message is looked at); the rates (sent, acked,
//! retried, dead-lettered per second) are the differences of the counters between two
//! samples, computed here on the server, so every open page shows the same figures and a page
//! opened late still gets the last minutes of history.
//!
//! Samples are taken on demand, when a dashboard request finds the last one older than
//! [`SAMPLE_EVERY`]: nothing is read while no page is open, and however many pages poll, the
//! broker is read at most once per [`SAMPLE_EVERY`]: they share the sample and its serialized
//! summary.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::engine::{Broker, BrokerError, Clock, QueueInfo, SystemClock};
use crate::http::consumers::{Attached, QueueConsumers, Wiring};
use crate::http::wire::Envelope;

/// How often the page asks for a summary.
pub(super) const REFRESH: Duration = Duration::from_secs(2);
/// A summary younger than this is served again instead of reading the queues anew.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(1500);
/// How much history is kept.
pub(super) const WINDOW: Duration = Duration::from_secs(300);
/// Two samples further apart than this (no page was open between them): the rate over the gap
/// is not shown as the rate "now".
const GAP: Duration = Duration::from_secs(10);

/// The counters rates are taken of: sent, acked, retried, dead-lettered.
type Counts = [u64; 4];

/// Messages per second over one interval, in the order of [`Counts`] (`None`: unknown, after
/// the first sample of a queue or a gap).
type Rates = [Option<f32>; 4];

fn counts(info: &QueueInfo) -> Counts {
    let m = &info.metrics;
    [m.sent, m.acked, m.retried, m.dead_lettered]
}

/// One queue's last counters and its rates, one per sample since it was first seen (aligned
/// with the end of [`State::times`]).
struct Series {
    last: Counts,
    rates: VecDeque<Rates>,
}

/// One sample: the queues as read, and the summary built from them.
pub(super) struct Snapshot {
    taken: Instant,
    /// The queues as read.
    pub(super) queues: Vec<QueueInfo>,
    /// The JSON answer of `GET /dashboard/api/summary` (an envelope), built once per sample.
    pub(super) summary: Bytes,
}

#[derive(Default)]
struct State {
    /// When each kept sample was taken (ms since the Unix epoch), oldest first.
    times: VecDeque<u64>,
    /// Per queue.
    series: HashMap<String, Series>,
    /// Every queue's rates added up, one per sample.
    totals: VecDeque<Rates>,
    last: Option<Arc<Snapshot>>,
}

/// Takes samples when asked and keeps the last [`WINDOW`] of rates.
pub(super) struct Sampler {
    broker: Arc<dyn Broker>,
    consumers: QueueConsumers,
    state: tokio::sync::Mutex<State>,
}

/// Rates over time: `at_ms[i]` is when the rates at `i` were measured (over the interval
/// before it). `null` where the rate is unknown.
#[derive(Debug, Default, Serialize)]
pub(super) struct History {
    at_ms: Vec<u64>,
    sent: Vec<Option<f32>>,
    acked: Vec<Option<f32>>,
    retried: Vec<Option<f32>>,
    dead_lettered: Vec<Option<f32>>,
}

impl History {
    fn of<'a>(times: &VecDeque<u64>, rates: impl ExactSizeIterator<Item = &'a Rates>) -> Self {
        let mut history = History {
            at_ms: times
                .iter()
                .skip(times.len() - rates.len())
                .copied()
                .collect(),
            ..History::default()
        };
        for [sent, acked, retried, dead_lettered] in rates {
            history.sent.push(*sent);
            history.acked.push(*acked);
            history.retried.push(*retried);
            history.dead_lettered.push(*dead_lettered);
        }
        history
    }
}

/// Rates as the summary shows them.
#[derive(Debug, Serialize)]
struct RateView {
    sent: Option<f32>,
    acked: Option<f32>,
    retried: Option<f32>,
    dead_lettered: Option<f32>,
}

impl From<Rates> for RateView {
    fn from([sent, acked, retried, dead_lettered]: Rates) -> Self {
        Self {
            sent,
            acked,
            retried,
            dead_lettered,
        }
    }
}

/// One row of the queues page.
#[derive(Debug, Serialize)]
struct QueueRow<'a> {
    name: &'a str,
    paused: bool,
    backlog: u64,
    backlog_bytes: u64,
    in_flight: u64,
    delayed: u64,
    /// How long the oldest stored message has waited (none: the queue is empty).
    oldest_age_ms: Option<u64>,
    /// The consumer component's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<&'a str>,
    /// Consumed over HTTP pull.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pull: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter_queue: Option<&'a str>,
    rates: RateView,
}

/// Every queue added up.
#[derive(Debug, Default, Serialize)]
struct Totals {
    queues: usize,
    paused: usize,
    backlog: u64,
    in_flight: u64,
    delayed: u64,
    rates: Option<RateView>,
}

/// `GET /dashboard/api/summary`.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    at_ms: u64,
    /// How often the page should ask again.
    refresh_ms: u64,
    /// How far back `history` goes at most.
    window_seconds: u64,
    totals: Totals,
    /// Every queue's rates added up, over time.
    history: History,
    queues: Vec<QueueRow<'a>>,
}

/// Messages per second from `before` to `now` over `seconds`, rounded to 0.01 (a counter
/// that went down, as when a queue is deleted and created again, counts as 0).
fn rates(before: Counts, now: Counts, seconds: f64) -> Rates {
    std::array::from_fn(|i| {
        Some(round(
            now[i].saturating_sub(before[i]) as f32 / seconds as f32,
        ))
    })
}

fn round(rate: f32) -> f32 {
    (rate * 100.0).round() / 100.0
}

impl State {
    /// Adds a sample of `queues` taken at `at_ms` and forgets what is older than [`WINDOW`].
    fn record(&mut self, queues: &[QueueInfo], at_ms: u64) {
        // Rates over a long gap (no page open meanwhile) are no rates "now".
        let interval = self
            .times
            .back()
            .map(|&before| at_ms.saturating_sub(before))
            .filter(|&ms| ms > 0 && ms <= GAP.as_millis() as u64);
        let mut totals = [0f32; 4];
        let mut series = HashMap::with_capacity(queues.len());
        for info in queues {
            let now = counts(info);
            let (rate, mut kept) = match self.series.remove(&info.name) {
                Some(kept) => {
                    let rate = match interval {
                        Some(ms) => rates(kept.last, now, ms as f64 / 1000.0),
                        None => [None; 4],
                    };
                    (rate, kept)
                }
                // First seen now: nothing to take a difference with.
                None => (
                    [None; 4],
                    Series {
                        last: now,
                        rates: VecDeque::new(),
                    },
                ),
            };
            for (total, rate) in totals.iter_mut().zip(rate) {
                *total += rate.unwrap_or(0.0);
            }
            kept.last = now;
            kept.rates.push_back(rate);
            series.insert(info.name.clone(), kept);
        }
        // Queues no longer there are forgotten with their history.
        self.series = series;
        self.totals
            .push_back(totals.map(|total| interval.map(|_| round(total))));
        self.times.push_back(at_ms);
        self.forget_before(at_ms.saturating_sub(WINDOW.as_millis() as u64));
    }

    /// Drops the samples taken before `cutoff_ms`.
    fn forget_before(&mut self, cutoff_ms: u64) {
        while self.times.front().is_some_and(|&at| at < cutoff_ms) {
            let kept = self.times.len();
            for series in self.series.values_mut() {
                if series.rates.len() == kept {
                    series.rates.pop_front();
                }
            }
            if self.totals.len() == kept {
                self.totals.pop_front();
            }
            self.times.pop_front();
        }
    }
}

/// The summary of `queues` as sampled at `at_ms`, with the rates `state` has for them.
fn summary<'a>(
    state: &State,
    queues: &'a [QueueInfo],
    wiring: &'a Wiring,
    at_ms: u64,
) -> Summary<'a> {
    let totals_rates = state.totals.back().copied();
    let mut totals = Totals {
        queues: queues.len(),
        rates: totals_rates.map(RateView::from),
        ..Totals::default()
    };
    let rows = queues
        .iter()
        .map(|info| {
            let m = &info.metrics;
            totals.paused += usize::from(info.paused);
            totals.backlog += m.backlog.count;
            totals.in_flight += m.in_flight;
            totals.delayed += m.delayed;
            let consumer = wiring.consumers.get(&info.name);
            QueueRow {
                name: &info.name,
                paused: info.paused,
                backlog: m.backlog.count,
                backlog_bytes: m.backlog.bytes,
                in_flight: m.in_flight,
                delayed: m.delayed,
                oldest_age_ms: m
                    .backlog
                    .oldest_timestamp_ms
                    .map(|oldest| at_ms.saturating_sub(oldest)),
                consumer: consumer.and_then(Attached::component),
                pull: matches!(consumer, Some(Attached::Pull(_))),
                dead_letter_queue: info.settings.consumer.dead_letter_queue.as_deref(),
                rates: state
                    .series
                    .get(&info.name)
                    .and_then(|s| s.rates.back().copied())
                    .unwrap_or([None; 4])
                    .into(),
            }
        })
        .collect();
    Summary {
        at_ms,
        refresh_ms: REFRESH.as_millis() as u64,
        window_seconds: WINDOW.as_secs(),
        totals,
        history: History::of(&state.times, state.totals.iter()),
        queues: rows,
    }
}

impl Sampler {
    /// A sampler of `broker`'s queues, showing the consumers `consumers` wires to them.
    pub(super) fn new(broker: Arc<dyn Broker>, consumers: QueueConsumers) -> Self {
        Self {
            broker,
            consumers,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The last sample if it is younger than [`SAMPLE_EVERY`], else a new one. Requests that
    /// arrive while a sample is being taken wait for it and share it.
    pub(super) async fn current(&self) -> Result<Arc<Snapshot>, BrokerError> {
        let mut state = self.state.lock().await;
        if let Some(last) = &state.last
            && last.taken.elapsed() < SAMPLE_EVERY
        {
            return Ok(last.clone());
        }
        let queues = self.broker.list_queues().await?;
        let at_ms = SystemClock.now_ms();
        state.record(&queues, at_ms);
        let wiring = self.consumers.wiring();
        let envelope = Envelope {
            success: true,
            errors: vec![],
            result: Some(summary(&state, &queues, &wiring, at_ms)),
        };
        let summary = Bytes::from(serde_json::to_vec(&envelope).expect("a summary serializes"));
        let snapshot = Arc::new(Snapshot {
            taken: Instant::now(),
            queues,
            summary,
        });
        state.last = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The rates of `queue` over the kept window (empty if it was never sampled).
    pub(super) async fn history(&self, queue: &str) -> History {
        let state = self.state.lock().await;
        match state.series.get(queue) {
            Some(series) => History::of(&state.times, series.rates.iter()),
            None => History::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{QueueMetrics, QueueSettings};

    fn queue(name: &str, sent: u64, acked: u64) -> QueueInfo {
        QueueInfo {
            name: name.into(),
            settings: QueueSettings::default(),
            paused: false,
            metrics: QueueMetrics {
                sent,
                acked,
                ..QueueMetrics::default()
            },
        }
    }

    #[test]
    fn rates_are_counter_differences_over_the_interval() {
        let mut state = State::default();
        state.record(&[queue("jobs", 10, 0)], 1_000);
        // The first sample of a queue has no rate.
        assert_eq!(state.series["jobs"].rates.back(), Some(&[None; 4]));
        state.record(&[queue("jobs", 30, 5)], 3_000);
        assert_eq!(
            state.series["jobs"].rates.back(),
            Some(&[Some(10.0), Some(2.5), Some(0.0), Some(0.0)])
        );
        // A queue that appears later starts without a rate; the totals count what is known.
        state.record(&[queue("jobs", 40, 15), queue("new", 7, 0)], 4_000);
        assert_eq!(state.series["new"].rates.back(), Some(&[None; 4]));
        assert_eq!(state.totals.back().unwrap()[0], Some(10.0));
        let history = History::of(&state.times, state.series["new"].rates.iter());
        assert_eq!(history.at_ms, vec![4_000]);
        let history = History::of(&state.times, state.series["jobs"].rates.iter());
        assert_eq!(history.at_ms, vec![1_000, 3_000, 4_000]);
        assert_eq!(history.acked, vec![None, Some(2.5), Some(10.0)]);
    }

    #[test]
    fn a_gap_has_no_rate_and_old_samples_are_forgotten() {
        let mut state = State::default();
        state.record(&[queue("jobs", 0, 0)], 1_000);
        state.record(&[queue("jobs", 100, 0)], 2_000);
        state.record(&[queue("jobs", 200, 0)], 2_000 + GAP.as_millis() as u64 + 1);
        assert_eq!(state.series["jobs"].rates.back(), Some(&[None; 4]));
        assert_eq!(state.totals.back(), Some(&[None; 4]));
        let later = 2_000 + WINDOW.as_millis() as u64 + 500;
        state.record(&[queue("jobs", 300, 0)], later);
        // Only the samples within the window are kept, and the series stay aligned.
        assert_eq!(state.times.len(), 2);
        assert_eq!(state.series["jobs"].rates.len(), 2);
        assert_eq!(state.totals.len(), 2);
        // A queue that is gone is forgotten.
        state.record(&[], later + 1_000);
        assert!(state.series.is_empty());
    }

    #[test]
    fn the_summary_shows_each_queue_with_its_consumer_and_the_totals() {
        let mut state = State::default();
        let mut jobs = queue("jobs", 0, 0);
        jobs.metrics.backlog.count = 3;
        jobs.metrics.backlog.oldest_timestamp_ms = Some(500);
        let queues = vec![jobs, queue("pulled", 0, 0)];
        state.record(&queues, 1_000);
        let wiring = Wiring {
            consumers: [
                (
                    "jobs".to_owned(),
                    Attached::Component {
                        name: "worker".into(),
                        max_concurrency: None,
                    },
                ),
                (
                    "pulled".to_owned(),
                    Attached::Pull(crate::manifest::PullConsumerConfig {
                        visibility_timeout_ms: 1_000,
                    }),
                ),
            ]
            .into(),
            ..Wiring::default()
        };
        let value = serde_json::to_value(summary(&state, &queues, &wiring, 1_000)).unwrap();
        assert_eq!(value["totals"]["backlog"], 3);
        assert_eq!(value["queues"][0]["consumer"], "worker");
        assert_eq!(value["queues"][0]["oldest_age_ms"], 500);
        assert_eq!(value["queues"][0]["rates"]["sent"], serde_json::Value::Null);
        assert_eq!(value["queues"][1]["pull"], true);
        assert!(value["queues"][1].get("consumer").is_none());
    }
}
