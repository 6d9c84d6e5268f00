//! Per-consumer batch statistics for `GET /metrics` and the dashboard: how long the component took per batch (a
//! Prometheus histogram) and how many batches succeeded or failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::metrics::{Histogram, family};
use crate::runtime::Failure;

/// Batch statistics of every consumer, shared by the dispatchers and the HTTP server.
#[derive(Clone, Default)]
pub struct ConsumerStats(Arc<Mutex<BTreeMap<ConsumerKey, BatchStats>>>);

/// A consumer: (component, queue).
type ConsumerKey = (String, String);

#[derive(Default)]
struct BatchStats {
    /// Batches the dispatcher currently lets run at once.
    concurrency: u32,
    /// How long the component took per batch.
    duration: Histogram,
    ok: u64,
    failed: u64,
    /// Failed batches by kind (`error`, `trap`, `out_of_memory`, `timeout`, `host_busy`).
    failures: BTreeMap<&'static str, u64>,
}

/// One consumer's statistics as the dashboard shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerSnapshot {
    /// Batches it may run at once now.
    pub concurrency: u32,
    /// Batches that succeeded.
    pub batches_ok: u64,
    /// Batches that failed.
    pub batches_failed: u64,
    /// Failed batches by kind (`error`, `trap`, `out_of_memory`, `timeout`, `host_busy`).
    pub failures: BTreeMap<String, u64>,
    /// How long the component took per batch.
    pub batch_seconds: BatchPercentiles,
}

/// Batch-time percentiles in seconds, estimated from the histogram's buckets (none before the
/// first batch).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchPercentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean (exact).
    pub mean: Option<f64>,
}

/// The kind of a failure, for `wasmq_consumer_failures_total`.
fn failure_kind(failure: &Failure) -> &'static str {
    match failure {
        Failure::Error(_) => "error",
        Failure::Trap(text) if text.contains("bytes of memory") => "out_of_memory",
        Failure::Trap(_) => "trap",
        Failure::Timeout => "timeout",
        Failure::HostBusy(_) => "host_busy",
    }
}

impl ConsumerStats {
    /// Records one batch of `component` on `queue` that ran for `elapsed` and failed with
    /// `failure`, if it did.
    pub fn record(
        &self,
        component: &str,
        queue: &str,
        elapsed: Duration,
        failure: Option<&Failure>,
    ) {
        let mut all = self.0.lock().expect("consumer stats lock");
        let stats = all
            .entry((component.to_owned(), queue.to_owned()))
            .or_default();
        stats.duration.observe(elapsed);
        match failure {
            Some(failure) => {
                stats.failed += 1;
                *stats.failures.entry(failure_kind(failure)).or_default() += 1;
            }
            None => stats.ok += 1,
        }
    }

    /// Notes how many batches `component` on `queue` may run at once now.
    pub fn set_concurrency(&self, component: &str, queue: &str, level: u32) {
        let mut all = self.0.lock().expect("consumer stats lock");
        all.entry((component.to_owned(), queue.to_owned()))
            .or_default()
            .concurrency = level;
    }

    /// How many batches `component` on `queue` may run at once now (0: unknown consumer).
    pub fn concurrency(&self, component: &str, queue: &str) -> u32 {
        let all = self.0.lock().expect("consumer stats lock");
        all.get(&(component.to_owned(), queue.to_owned()))
            .map_or(0, |s| s.concurrency)
    }

    /// Batches recorded for `component` on `queue`: (succeeded, failed).
    pub fn batches(&self, component: &str, queue: &str) -> (u64, u64) {
        let all = self.0.lock().expect("consumer stats lock");
        all.get(&(component.to_owned(), queue.to_owned()))
            .map_or((0, 0), |s| (s.ok, s.failed))
    }

    /// Everything recorded for `component` on `queue`, with batch-time percentiles (none: the
    /// consumer has not started).
    pub fn snapshot(&self, component: &str, queue: &str) -> Option<ConsumerSnapshot> {
        let all = self.0.lock().expect("consumer stats lock");
        let stats = all.get(&(component.to_owned(), queue.to_owned()))?;
        let seconds = |q| stats.duration.quantile(q);
        Some(ConsumerSnapshot {
            concurrency: stats.concurrency,
            batches_ok: stats.ok,
            batches_failed: stats.failed,
            failures: stats
                .failures
                .iter()
                .map(|(kind, count)| ((*kind).to_owned(), *count))
                .collect(),
            batch_seconds: BatchPercentiles {
                p50: seconds(0.5),
                p90: seconds(0.9),
                p99: seconds(0.99),
                mean: stats.duration.mean_seconds(),
            },
        })
    }

    /// Appends the statistics in the Prometheus text format to `out`.
    pub fn write_prometheus(&self, out: &mut String) {
        let all = self.0.lock().expect("consumer stats lock");
        let name = "wasmq_consumer_batch_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Time a consumer component took per batch.",
        );
        for ((component, queue), stats) in all.iter() {
            let labels = format!("component=\"{component}\",queue=\"{queue}\"");
            stats.duration.write(out, name, &labels);
        }
        let name = "wasmq_consumer_concurrency";
        family(
            out,
            name,
            "gauge",
            "Batches the consumer may run at once (scaled with the backlog).",
        );
        for ((component, queue), stats) in all.iter() {
            let _ = writeln!(
                out,
                "{name}{{component=\"{component}\",queue=\"{queue}\"}} {}",
                stats.concurrency
            );
        }
        let name = "wasmq_consumer_batches_total";
        family(
            out,
            name,
            "counter",
            "Batches handed to consumer components, by result.",
        );
        for ((component, queue), stats) in all.iter() {
            let labels = format!("component=\"{component}\",queue=\"{queue}\"");
            let _ = writeln!(out, "{name}{{{labels},result=\"ok\"}} {}", stats.ok);
            let _ = writeln!(out, "{name}{{{labels},result=\"failed\"}} {}", stats.failed);
        }
        let name = "wasmq_consumer_failures_total";
        family(
            out,
            name,
            "counter",
            "Failed batches by kind: error, trap, out_of_memory, timeout, host_busy.",
        );
        for ((component, queue), stats) in all.iter() {
            for (kind, count) in &stats.failures {
                let _ = writeln!(
                    out,
                    "{name}{{component=\"{component}\",queue=\"{queue}\",kind=\"{kind}\"}} {count}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_split_by_result() {
        let stats = ConsumerStats::default();
        stats.record("worker", "jobs", Duration::from_micros(800), None);
        stats.record("worker", "jobs", Duration::from_millis(20), None);
        stats.record(
            "worker",
            "jobs",
            Duration::from_secs(40),
            Some(&Failure::Timeout),
        );
        let mut text = String::new();
        stats.write_prometheus(&mut text);
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let labels = "component=\"worker\",queue=\"jobs\"";
        let bucket = format!("wasmq_consumer_batch_duration_seconds_bucket{{{labels}");
        assert_eq!(line(&format!("{bucket},le=\"0.001\"}}")), "1");
        assert_eq!(line(&format!("{bucket},le=\"0.01\"}}")), "1");
        assert_eq!(line(&format!("{bucket},le=\"0.025\"}}")), "2");
        assert_eq!(line(&format!("{bucket},le=\"30\"}}")), "2");
        assert_eq!(line(&format!("{bucket},le=\"+Inf\"}}")), "3");
        let sum: f64 = line("wasmq_consumer_batch_duration_seconds_sum")
            .parse()
            .unwrap();
        assert!((sum - 40.0208).abs() < 1e-9, "{sum}");
        assert_eq!(
            line(&format!(
                "wasmq_consumer_batches_total{{{labels},result=\"ok\"}}"
            )),
            "2"
        );
        assert_eq!(
            line(&format!(
                "wasmq_consumer_batches_total{{{labels},result=\"failed\"}}"
            )),
            "1"
        );
        assert_eq!(
            line(
                "wasmq_consumer_failures_total{component=\"worker\",queue=\"jobs\",kind=\"timeout\"}"
            ),
            "1"
        );
        assert_eq!(stats.batches("worker", "jobs"), (2, 1));
        let snapshot = stats.snapshot("worker", "jobs").unwrap();
        assert_eq!((snapshot.batches_ok, snapshot.batches_failed), (2, 1));
        assert_eq!(snapshot.failures.get("timeout"), Some(&1));
        let p50 = snapshot.batch_seconds.p50.unwrap();
        assert!((0.01..=0.025).contains(&p50), "{p50}");
        assert_eq!(snapshot.batch_seconds.p99, Some(30.0));
        assert!(stats.snapshot("worker", "other").is_none());
        assert_eq!(stats.batches("worker", "other"), (0, 0));
    }

    #[test]
    fn failures_are_counted_by_kind_and_the_concurrency_gauge_follows_the_last_level() {
        let stats = ConsumerStats::default();
        for failure in [
            Failure::Error("boom".into()),
            Failure::Trap("wasm trap: unreachable".into()),
            Failure::Trap("wanted 70000000 bytes of memory".into()),
            Failure::Trap("unreachable again".into()),
            Failure::HostBusy("no instance slot free".into()),
        ] {
            stats.record("worker", "jobs", Duration::ZERO, Some(&failure));
        }
        assert_eq!(stats.concurrency("worker", "jobs"), 0);
        stats.set_concurrency("worker", "jobs", 3);
        stats.set_concurrency("worker", "jobs", 2);
        assert_eq!(stats.concurrency("worker", "jobs"), 2);
        assert_eq!(stats.concurrency("worker", "other"), 0, "unknown consumer");
        let mut text = String::new();
        stats.write_prometheus(&mut text);
        let kinds: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wasmq_consumer_failures_total{"))
            .collect();
        let labels = "component=\"worker\",queue=\"jobs\"";
        assert_eq!(
            kinds,
            [
                format!("wasmq_consumer_failures_total{{{labels},kind=\"error\"}} 1"),
                format!("wasmq_consumer_failures_total{{{labels},kind=\"host_busy\"}} 1"),
                format!("wasmq_consumer_failures_total{{{labels},kind=\"out_of_memory\"}} 1"),
                format!("wasmq_consumer_failures_total{{{labels},kind=\"trap\"}} 2"),
            ]
        );
        assert!(
            text.lines()
                .any(|l| l == format!("wasmq_consumer_concurrency{{{labels}}} 2")),
            "{text}"
        );
        assert_eq!(stats.batches("worker", "jobs"), (0, 5));
    }
}
