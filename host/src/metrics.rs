//! Statistics the host keeps for `GET /metrics` and the dashboard besides the queues' own
//! counters: HTTP requests by route and status (a latency histogram) and each component's last
//! load (digest, when, how long) and failure. The consumers' batch statistics are
//! `dispatch::ConsumerStats`; all share [`Histogram`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::engine::{Clock, SystemClock};
use crate::http::wire::ReloadReport;

/// Upper bounds (seconds) of every latency histogram's buckets.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram over [`BUCKETS`].
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), then the `+Inf` bucket.
    buckets: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    /// Counts one observation of `elapsed`.
    pub fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of the observations in seconds (none without any).
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds / self.count as f64)
    }

    /// The `q` quantile (0..=1) in seconds, estimated from the buckets as Prometheus'
    /// `histogram_quantile` does: linear within the bucket it falls in; the largest finite
    /// bound when it falls in the `+Inf` bucket. None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let (mut below, mut lower) = (0u64, 0.0);
        // The finite buckets; past them, the rank is in `+Inf`.
        for (&upper, count) in BUCKETS.iter().zip(self.buckets) {
            if count > 0 && (below + count) as f64 >= rank {
                let within = (rank - below as f64) / count as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += count;
            lower = upper;
        }
        BUCKETS.last().copied()
    }

    /// Writes the histogram's samples (`_bucket`, `_sum`, `_count`) for `labels` (already
    /// formatted, `a="x",b="y"`).
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Writes `# HELP` and `# TYPE` of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One kind of HTTP request: the route pattern that served it (never the raw path, which
/// clients choose), the method and the status.
type RequestKey = (String, String, u16);

/// HTTP requests by route, method and status, with their latency.
#[derive(Clone, Default)]
pub struct HttpStats(Arc<Mutex<BTreeMap<RequestKey, Histogram>>>);

impl HttpStats {
    /// Records one request on `route` answered `status` after `elapsed`.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut all = self.0.lock().expect("http stats lock");
        all.entry((route.to_owned(), method.to_owned(), status))
            .or_default()
            .observe(elapsed);
    }

    /// Appends the statistics in the Prometheus text format to `out`.
    pub fn write_prometheus(&self, out: &mut String) {
        let name = "wasmq_http_request_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "HTTP requests by route, method and status, and how long they took to answer.",
        );
        for ((route, method, status), histogram) in self.0.lock().expect("http stats lock").iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            histogram.write(out, name, &labels);
        }
    }
}

/// One successful load of a component: the version serving now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentLoad {
    /// SHA-256 of the component file, in hex: the version that serves.
    pub digest: String,
    /// The file it was loaded from.
    pub source: String,
    /// The queue it consumes, for a consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The route it answers, for a producer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// When it was loaded (ms since the Unix epoch): the start, or its last swap.
    pub at_ms: u64,
    /// How long loading took: compiling or reading the cache, and checking it.
    pub load_seconds: f64,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
}

/// A load that failed; the previous version (if any) kept serving.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadFailure {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Why.
    pub error: String,
}

/// What the host knows of one component.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ComponentRecord {
    /// The component's name in the manifest.
    pub name: String,
    /// The version serving now (none: it never loaded).
    pub loaded: Option<ComponentLoad>,
    /// How many times a new version or new settings were swapped in since the host started.
    pub swaps: u32,
    /// The last load that failed, unless a later one succeeded.
    pub failure: Option<LoadFailure>,
}

/// The last reload (`POST /reload`, `--watch`, SIGHUP) and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    /// When it finished (ms since the Unix epoch).
    pub at_ms: u64,
    /// What it changed, when the manifest could be applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ReloadReport>,
    /// Why nothing changed, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Default)]
struct Components {
    records: BTreeMap<String, ComponentRecord>,
    last_reload: Option<ReloadRecord>,
}

/// Every component's last load (its digest, when, how long it took) and failure, and the last
/// reload: for `GET /metrics` (load times) and the dashboard.
#[derive(Clone, Default)]
pub struct ComponentStats(Arc<Mutex<Components>>);

impl ComponentStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Components> {
        self.0.lock().expect("component stats lock")
    }

    /// Changes `component`'s record (made on first use) with `change`.
    fn update(&self, component: &str, change: impl FnOnce(&mut ComponentRecord)) {
        let mut all = self.lock();
        let record = all
            .records
            .entry(component.to_owned())
            .or_insert_with(|| ComponentRecord {
                name: component.to_owned(),
                ..ComponentRecord::default()
            });
        change(record);
    }

    /// Notes that `component` was loaded (for the first time, or swapped in).
    pub fn loaded(&self, component: &str, load: ComponentLoad) {
        self.update(component, |record| {
            if record.loaded.is_some() {
                record.swaps += 1;
            }
            record.loaded = Some(load);
            record.failure = None;
        });
    }

    /// Notes that loading `component` failed with `error`.
    pub fn failed(&self, component: &str, error: String) {
        self.update(component, |record| {
            record.failure = Some(LoadFailure {
                at_ms: SystemClock.now_ms(),
                error,
            });
        });
    }

    /// Forgets every component `keep` says no to: the manifest no longer has them.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().records.retain(|name, _| keep(name));
    }

    /// Notes the outcome of a reload.
    pub fn reloaded(&self, outcome: Result<&ReloadReport, &anyhow::Error>) {
        let (report, error) = match outcome {
            Ok(report) => (Some(report.clone()), None),
            Err(err) => (None, Some(format!("{err:#}"))),
        };
        self.lock().last_reload = Some(ReloadRecord {
            at_ms: SystemClock.now_ms(),
            report,
            error,
        });
    }

    /// Every component, by name, and the last reload (none since the start: `None`).
    pub fn snapshot(&self) -> (Vec<ComponentRecord>, Option<ReloadRecord>) {
        let all = self.lock();
        (
            all.records.values().cloned().collect(),
            all.last_reload.clone(),
        )
    }

    /// The record of `component`, if the host knows it.
    pub fn get(&self, component: &str) -> Option<ComponentRecord> {
        self.lock().records.get(component).cloned()
    }

    /// Appends the statistics in the Prometheus text format to `out`.
    pub fn write_prometheus(&self, out: &mut String) {
        let name = "wasmq_component_load_seconds";
        family(
            out,
            name,
            "gauge",
            "How long the component's last load took (compile or cache read, and link).",
        );
        for (component, record) in &self.lock().records {
            if let Some(load) = &record.loaded {
                let _ = writeln!(
                    out,
                    "{name}{{component=\"{component}\"}} {}",
                    load.load_seconds
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let stats = HttpStats::default();
        stats.record("/queues/{queue}", "GET", 200, Duration::from_micros(500));
        stats.record("/queues/{queue}", "GET", 200, Duration::from_millis(30));
        stats.record("/queues/{queue}", "GET", 404, Duration::from_millis(1));
        let mut text = String::new();
        stats.write_prometheus(&mut text);
        let ok = "route=\"/queues/{queue}\",method=\"GET\",status=\"200\"";
        assert!(text.contains(&format!(
            "wasmq_http_request_duration_seconds_bucket{{{ok},le=\"0.001\"}} 1"
        )));
        assert!(text.contains(&format!(
            "wasmq_http_request_duration_seconds_count{{{ok}}} 2"
        )));
        let missing = "route=\"/queues/{queue}\",method=\"GET\",status=\"404\"";
        assert!(text.contains(&format!(
            "wasmq_http_request_duration_seconds_count{{{missing}}} 1"
        )));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..50 {
            h.observe(Duration::from_micros(500)); // (0, 1 ms]
        }
        for _ in 0..50 {
            h.observe(Duration::from_millis(4)); // (2.5 ms, 5 ms]
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.001).abs() < 1e-12, "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - (0.0025 + 0.0025 * 0.98)).abs() < 1e-12, "{p99}");
        assert_eq!(h.count(), 100);
        h.observe(Duration::from_secs(100)); // +Inf
        assert_eq!(h.quantile(1.0), Some(30.0));
    }

    #[test]
    fn a_component_record_keeps_its_load_swaps_and_last_failure() {
        let stats = ComponentStats::default();
        let load = |digest: &str| ComponentLoad {
            digest: digest.into(),
            source: "worker.wasm".into(),
            queue: Some("jobs".into()),
            route: None,
            at_ms: 1,
            load_seconds: 0.25,
            from_cache: false,
        };
        stats.loaded("worker", load("aaa"));
        stats.failed("worker", "not a component".into());
        let record = stats.get("worker").unwrap();
        assert_eq!(record.loaded.as_ref().unwrap().digest, "aaa");
        assert_eq!(record.failure.as_ref().unwrap().error, "not a component");
        stats.loaded("worker", load("bbb"));
        let record = stats.get("worker").unwrap();
        assert_eq!((record.swaps, record.failure), (1, None));
        let mut text = String::new();
        stats.write_prometheus(&mut text);
        assert!(text.contains("wasmq_component_load_seconds{component=\"worker\"} 0.25"));
        stats.retain(|name| name != "worker");
        assert_eq!(stats.snapshot().0, vec![]);
    }
}
