//! Shutdown and crash recovery of the real `host run` process: SIGTERM lets running batches
//! finish and settle before exiting 0; after SIGKILL every message that was in flight comes
//! back with its attempt counted; a message that kills the host every time still ends in its
//! dead-letter queue after `max_retries`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HOST: &str = env!("CARGO_BIN_EXE_host");

fn scripted() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-examples/target/wasm32-wasip2/release/scripted.wasm");
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests.sh",
        path.display()
    );
    path
}

/// A folder with a manifest whose `jobs` queue is consumed by the `scripted` guest.
fn manifest_dir(consumer: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        format!(
            r#"
[host]
data_dir = "data"
listen = "127.0.0.1:0"
shutdown_timeout = "20s"

[queues.jobs]
[queues.jobs-dlq]

[components.scripted]
source = "{}"
consumer = {{ queue = "jobs", {consumer} }}
limits = {{ timeout = "60s" }}
"#,
            scripted().display()
        ),
    )
    .unwrap();
    dir
}

/// A running `host run` child and everything it logged.
struct Host {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Host {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(HOST)
            .arg("run")
            .arg(dir.join("manifest.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(stdout) as Box<dyn BufRead + Send>,
            Box::new(BufReader::new(child.stderr.take().unwrap())),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in stream.lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        Self { child, url, log }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log threads drain.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log.lock().unwrap().clone());
            }
            assert!(
                Instant::now() < deadline,
                "the host did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn queue(&self, name: &str) -> Value {
        let text = http("GET", &format!("{}/queues/{name}", self.url), None);
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
            &format!("{}/queues/jobs/messages/batch", self.url),
            Some(json!({ "messages": messages })),
        );
        assert!(answer.contains("\"success\":true"), "{answer}");
    }

    /// Waits until a log line contains `needle`.
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
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

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let dir = manifest_dir("max_batch_size = 10, max_batch_timeout = 0, max_concurrency = 2");
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

#[test]
fn after_sigkill_in_flight_messages_come_back_with_the_attempt_counted() {
    let dir = manifest_dir("max_batch_size = 5, max_batch_timeout = 0, max_concurrency = 2");
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
