//! Statistics the host keeps for `GET /metrics` besides the queues' own counters: HTTP requests
//! by route and status (a latency histogram) and how long each component took to load. The
//! consumers' batch statistics are `dispatch::ConsumerStats`; all share [`Histogram`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// How long each component's last load took (compiling, or reading the cache, and linking).
#[derive(Clone, Default)]
pub struct ComponentStats(Arc<Mutex<BTreeMap<String, Duration>>>);

impl ComponentStats {
    /// Notes that loading `component` took `elapsed`.
    pub fn loaded(&self, component: &str, elapsed: Duration) {
        self.0
            .lock()
            .expect("component stats lock")
            .insert(component.to_owned(), elapsed);
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
        for (component, elapsed) in self.0.lock().expect("component stats lock").iter() {
            let _ = writeln!(
                out,
                "{name}{{component=\"{component}\"}} {}",
                elapsed.as_secs_f64()
            );
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
}
