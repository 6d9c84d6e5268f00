//! Shutdown and crash recovery of the real `wasmq run` process: SIGTERM lets running batches
//! finish and settle before exiting 0; after SIGKILL every message that was in flight comes
//! back with its attempt counted; a message that kills the host every time still ends in its
//! dead-letter queue after `max_retries`.

pub mod common;

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Component, Consumer, HostProcess, HostRun, Manifest, guest_path};

/// A folder with a manifest whose `jobs` queue is consumed by the `scripted` guest as
/// `consumer` says, and whose host waits `shutdown_timeout` for running batches.
fn manifest_dir(consumer: Consumer, shutdown_timeout: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Manifest::new()
        .host("shutdown_timeout", shutdown_timeout)
        .queue("jobs")
        .queue("jobs-dlq")
        .component(
            Component::new("scripted", guest_path("scripted"))
                .consumer(consumer)
                .limit("timeout", "60s"),
        )
        .write(dir.path());
    dir
}

/// A `wasmq run` child on a folder made by [`manifest_dir`].
fn start(dir: &Path) -> HostProcess {
    HostRun::new(&dir.join("manifest.toml")).start()
}

/// Waits for the exit; returns the status and every line logged.
fn wait(mut host: HostProcess, within: Duration) -> (ExitStatus, Vec<String>) {
    let status = host.wait_exit(within);
    (status, host.lines())
}

/// Sends text messages with `bodies` to `jobs` in one batch.
fn send_batch(host: &HostProcess, bodies: &[&str]) {
    let messages: Vec<Value> = bodies
        .iter()
        .map(|b| json!({"body": b, "content_type": "text"}))
        .collect();
    let answer = host.post_json(
        "/queues/jobs/messages/batch",
        &json!({ "messages": messages }),
    );
    assert!(answer.contains("\"success\":true"), "{answer}");
}

fn attempts_logged(log: &[String], attempt: u32) -> usize {
    let needle = format!("attempt {attempt}:");
    log.iter()
        .filter(|l| l.contains("[scripted]") && l.contains(&needle))
        .count()
}

#[test]
fn sigterm_mid_load_finishes_running_batches_and_exits_0() {
    let consumer = Consumer::on("jobs")
        .max_batch_size(10)
        .max_batch_timeout(0)
        .max_concurrency(2);
    let dir = manifest_dir(consumer, "20s");
    let mut host = start(dir.path());
    let bodies = vec!["sleep:30"; 100];
    for chunk in bodies.chunks(50) {
        send_batch(&host, chunk);
    }
    host.wait_queue("jobs", "got busy", |q| q["metrics"]["in_flight"] != 0);
    host.stop("-TERM");
    let log = host.lines();
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

    let mut host = start(dir.path());
    let q = host.wait_queue("jobs", "drained", |q| q["metrics"]["acked"] == 100);
    assert_eq!(q["metrics"]["retried"], 0, "{q}");
    assert_eq!(q["metrics"]["backlog"]["count"], 0, "{q}");
    host.stop("-INT");
    let log = host.lines();
    assert_eq!(attempts_logged(&log, 2), 0);
    assert_eq!(attempts_logged(&log, 1), 100 - handled);
}

/// SIGTERM while a guest sleeps past the shutdown deadline: the host abandons the batch at the
/// deadline (it is redelivered after the next start) and exits cleanly, with no panic.
#[test]
fn sigterm_while_a_guest_sleeps_exits_cleanly_at_the_deadline() {
    let dir = manifest_dir(Consumer::on("jobs").max_batch_timeout(0), "1s");
    let host = start(dir.path());
    send_batch(&host, &["sleep:30000"]);
    host.wait_log("attempt 1: sleep:30000");
    let signalled = Instant::now();
    host.signal("-TERM");
    let (status, log) = wait(host, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let log = log.join("\n");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("abandoned"), "{log}");
}

#[test]
fn after_sigkill_in_flight_messages_come_back_with_the_attempt_counted() {
    let consumer = Consumer::on("jobs")
        .max_batch_size(5)
        .max_batch_timeout(0)
        .max_concurrency(2);
    let dir = manifest_dir(consumer, "20s");
    let host = start(dir.path());
    send_batch(&host, &vec!["sleep:100"; 40]);
    let q = host.wait_queue("jobs", "got busy", |q| q["metrics"]["in_flight"] != 0);
    assert!(q["metrics"]["in_flight"].as_u64().unwrap() <= 10, "{q}");
    host.signal("-KILL");
    wait(host, Duration::from_secs(5));

    let mut host = start(dir.path());
    let q = host.wait_queue("jobs", "drained", |q| q["metrics"]["acked"] == 40);
    assert_eq!(q["metrics"]["backlog"]["count"], 0, "{q}");
    host.stop("-INT");
    let log = host.lines();
    // The batches killed in flight come back once each, as attempt 2, and count as retries.
    let second = attempts_logged(&log, 2);
    assert!((1..=10).contains(&second), "{second} redelivered");
    assert_eq!(q["metrics"]["retried"], second as u64, "{q}");
    assert_eq!(attempts_logged(&log, 3), 0);
}

#[test]
fn a_message_that_kills_the_host_every_time_ends_in_the_dead_letter_queue() {
    let consumer = Consumer::on("jobs")
        .max_batch_size(1)
        .max_batch_timeout(0)
        .max_retries(1)
        .dead_letter_queue("jobs-dlq");
    let dir = manifest_dir(consumer, "20s");
    let host = start(dir.path());
    send_batch(&host, &["sleep:600000"]);
    // Attempts 1 and 2 (max_retries = 1) each die with the host.
    let mut host = host;
    for attempt in 1..=2 {
        host.wait_log(&format!("attempt {attempt}: sleep:600000"));
        host.signal("-KILL");
        let (_, log) = wait(host, Duration::from_secs(5));
        assert_eq!(attempts_logged(&log, attempt), 1, "attempt {attempt}");
        host = start(dir.path());
    }
    host.wait_queue("jobs-dlq", "received it", |q| {
        q["metrics"]["backlog"]["count"] == 1
    });
    let jobs = host.queue("jobs");
    assert_eq!(jobs["metrics"]["backlog"]["count"], 0, "{jobs}");
    assert_eq!(jobs["metrics"]["dead_lettered"], 1, "{jobs}");
    host.stop("-INT");
}
