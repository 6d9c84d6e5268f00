//! Shutdown and crash recovery of the real `host run` process: SIGTERM lets running batches
//! finish and settle before exiting 0; after SIGKILL every message that was in flight comes
//! back with its attempt counted; a message that kills the host every time still ends in its
//! dead-letter queue after `max_retries`.

mod common;

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{HostProcess, guest, host_run};

/// A folder with a manifest whose `jobs` queue is consumed by the `scripted` guest, and whose
/// host waits `shutdown_timeout` for running batches.
fn manifest_dir(consumer: &str, shutdown_timeout: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        format!(
            r#"
[host]
data_dir = "data"
listen = "127.0.0.1:0"
shutdown_timeout = "{shutdown_timeout}"

[queues.jobs]
[queues.jobs-dlq]

[components.scripted]
source = "{}"
consumer = {{ queue = "jobs", {consumer} }}
limits = {{ timeout = "60s" }}
"#,
            guest("scripted").display()
        ),
    )
    .unwrap();
    dir
}

/// A running `host run` child on a folder made by [`manifest_dir`].
struct Host {
    process: HostProcess,
}

impl Host {
    fn start(dir: &Path) -> Self {
        Self {
            process: HostProcess::start(host_run(&dir.join("manifest.toml"))),
        }
    }

    fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    fn wait_log(&self, needle: &str) {
        self.process.wait_log(needle);
    }

    /// Waits for the exit; returns the status and every line logged.
    fn wait(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let status = self.process.wait_exit(within);
        let log = self.process.log.lock().unwrap();
        (status, log.iter().map(|(_, line)| line.clone()).collect())
    }

    fn queue(&self, name: &str) -> Value {
        let text = http("GET", &format!("{}/queues/{name}", self.process.url), None);
        let value: Value = serde_json::from_str(&text).unwrap();
        value["result"].clone()
    }

    fn send_batch(&self, bodies: &[&str]) {
        let messages: Vec<Value> = bodies
            .iter()
            .map(|b| json!({"body": b, "content_type": "text"}))
            .collect();
        let answer = http(
            "POST",
            &format!("{}/queues/jobs/messages/batch", self.process.url),
            Some(json!({ "messages": messages })),
        );
        assert!(answer.contains("\"success\":true"), "{answer}");
    }

    /// Waits until `check` holds for queue `name`.
    fn wait_queue(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let q = self.queue(name);
            if check(&q) {
                return q;
            }
            assert!(Instant::now() < deadline, "`{name}` never {what}: {q}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A blocking HTTP call with `curl`-like simplicity over reqwest's blocking-free API: a tiny
/// runtime per call keeps these tests synchronous.
fn http(method: &str, url: &str, body: Option<Value>) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let request = match method {
            "GET" => client.get(url),
            _ => client.post(url),
        };
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.unwrap().text().await.unwrap()
    })
}

fn attempts_logged(log: &[String], attempt: u32) -> usize {
    let needle = format!("attempt {attempt}:");
    log.iter()
        .filter(|l| l.contains("[scripted]") && l.contains(&needle))
        .count()
}

#[test]
fn sigterm_mid_load_finishes_running_batches_and_exits_0() {
    let dir = manifest_dir(
        "max_batch_size = 10, max_batch_timeout = 0, max_concurrency = 2",
        "20s",
    );
    let host = Host::start(dir.path());
    let bodies = vec!["sleep:30"; 100];
    for chunk in bodies.chunks(50) {
        host.send_batch(chunk);
    }
    host.wait_queue("jobs", "got busy", |q| q["metrics"]["in_flight"] != 0);
    host.signal("-TERM");
    let (status, log) = host.wait(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    assert!(
        log.iter()
            .any(|l| l.contains("stopping: finishing running batches"))
    );
    // Everything it started, it finished: attempt 1 only.
    assert_eq!(attempts_logged(&log, 2), 0);
    let handled = attempts_logged(&log, 1);
    assert!(
        handled > 0 && handled < 100,
        "{handled} handled before the stop"
    );

    let host = Host::start(dir.path());
    let q = host.wait_queue("jobs", "drained", |q| q["metrics"]["acked"] == 100);
    assert_eq!(q["metrics"]["retried"], 0, "{q}");
    assert_eq!(q["metrics"]["backlog"]["count"], 0, "{q}");
    host.signal("-INT");
    let (status, log) = host.wait(Duration::from_secs(20));
    assert!(status.success());
    assert_eq!(attempts_logged(&log, 2), 0);
    assert_eq!(attempts_logged(&log, 1), 100 - handled);
}

/// SIGTERM while a guest sleeps past the shutdown deadline: the host abandons the batch at the
/// deadline (it is redelivered after the next start) and exits cleanly, with no panic.
#[test]
fn sigterm_while_a_guest_sleeps_exits_cleanly_at_the_deadline() {
    let dir = manifest_dir("max_batch_timeout = 0", "1s");
    let host = Host::start(dir.path());
    host.send_batch(&["sleep:30000"]);
    host.wait_log("attempt 1: sleep:30000");
    let signalled = Instant::now();
    host.signal("-TERM");
    let (status, log) = host.wait(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let log = log.join("\n");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("abandoned"), "{log}");
}

#[test]
fn after_sigkill_in_flight_messages_come_back_with_the_attempt_counted() {
    let dir = manifest_dir(
        "max_batch_size = 5, max_batch_timeout = 0, max_concurrency = 2",
        "20s",
    );
    let host = Host::start(dir.path());
    host.send_batch(&vec!["sleep:100"; 40]);
    let q = host.wait_queue("jobs", "got busy", |q| q["metrics"]["in_flight"] != 0);
    assert!(q["metrics"]["in_flight"].as_u64().unwrap() <= 10, "{q}");
    host.signal("-KILL");
    host.wait(Duration::from_secs(5));

    let host = Host::start(dir.path());
    let q = host.wait_queue("jobs", "drained", |q| q["metrics"]["acked"] == 40);
    assert_eq!(q["metrics"]["backlog"]["count"], 0, "{q}");
    host.signal("-INT");
    let (status, log) = host.wait(Duration::from_secs(20));
    assert!(status.success());
    // The batches killed in flight come back once each, as attempt 2, and count as retries.
    let second = attempts_logged(&log, 2);
    assert!((1..=10).contains(&second), "{second} redelivered");
    assert_eq!(q["metrics"]["retried"], second as u64, "{q}");
    assert_eq!(attempts_logged(&log, 3), 0);
}

#[test]
fn a_message_that_kills_the_host_every_time_ends_in_the_dead_letter_queue() {
    let dir = manifest_dir(
        "max_batch_size = 1, max_batch_timeout = 0, max_retries = 1, dead_letter_queue = \"jobs-dlq\"",
        "20s",
    );
    let host = Host::start(dir.path());
    host.send_batch(&["sleep:600000"]);
    // Attempts 1 and 2 (max_retries = 1) each die with the host.
    let mut host = host;
    for attempt in 1..=2 {
        host.wait_log(&format!("attempt {attempt}: sleep:600000"));
        host.signal("-KILL");
        let (_, log) = host.wait(Duration::from_secs(5));
        assert_eq!(attempts_logged(&log, attempt), 1, "attempt {attempt}");
        host = Host::start(dir.path());
    }
    host.wait_queue("jobs-dlq", "received it", |q| {
        q["metrics"]["backlog"]["count"] == 1
    });
    let jobs = host.queue("jobs");
    assert_eq!(jobs["metrics"]["backlog"]["count"], 0, "{jobs}");
    assert_eq!(jobs["metrics"]["dead_lettered"], 1, "{jobs}");
    host.signal("-INT");
    let (status, log) = host.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {log:#?}");
}
