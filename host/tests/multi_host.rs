//! Several real `wasmq run` processes sharing one PostgreSQL database: competing consumers
//! under load, a host killed with SIGKILL mid-load, and the database server restarted
//! mid-load.
//!
//! Every host is its own process on its own loopback port (`listen = "127.0.0.1:0"`, the port
//! read from its stdout) with its own `data_dir`, all pointed at the same database. Messages go
//! in through the hosts' HTTP API, spread over the hosts; bodies carry a number (`msg-N`), and
//! the consumer guests print one line per delivered message (`[worker] jobs <id> attempt <n>:
//! msg-N`, or `[scripted] <id> attempt <n>: …msg-N…`), which each host logs on its stderr:
//! that is how a test sees which host handled which message, and on which attempt.
//!
//! The server: `WASMQ_TEST_POSTGRES_URL`, or one throwaway cluster for this test binary
//! (`tests/src/postgres.rs`); each test gets a database of its own. The restart test always
//! starts a throwaway cluster of its own, since it stops and starts the server. Without
//! PostgreSQL the tests fail, with instructions. Tests run one at a time: each starts two or
//! three hosts, and their timing (lease expiry) should not depend on the others' load.
//!
//! Needs the example guests: `scripts/build-guests.sh`.

pub mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmq_testkit::postgres;

use common::{Component, HostProcess, HostRun, Manifest, Spawned, guest_path};

/// One test at a time (see the module comment).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a host is told where the queues are.
#[derive(Debug, Clone, Copy)]
enum StorageFrom {
    /// `[host] storage = "postgres://…"`.
    Manifest,
    /// The `WASMQ_STORAGE` environment variable.
    Env,
}

/// A `wasmq run` child process, numbered.
struct Host {
    index: usize,
    process: HostProcess,
}

/// A host being started: its process runs, its address is not known yet.
struct Starting {
    index: usize,
    spawned: Spawned,
}

/// The consumer a host runs on queue `jobs`.
#[derive(Debug, Clone, Copy)]
enum Consumer {
    /// The `worker` example: prints each message and acks the batch.
    Worker,
    /// The `scripted` test guest: runs the commands in each body (`sleep:MS`…).
    Scripted,
}

impl Starting {
    fn spawn(index: usize, storage: &str, from: StorageFrom, consumer: Consumer) -> Self {
        let guest = match consumer {
            Consumer::Worker => "worker",
            Consumer::Scripted => "scripted",
        };
        let settings = common::Consumer::on("jobs")
            .max_batch_size(10)
            .max_batch_timeout(0)
            .max_concurrency(2)
            .max_retries(5);
        let mut manifest = Manifest::new().host("shutdown_timeout", "3s");
        if let StorageFrom::Manifest = from {
            manifest = manifest.host("storage", storage);
        }
        let manifest = manifest.queue("jobs").component(
            Component::new("consumer", guest_path(guest))
                .consumer(settings)
                .limit("timeout", "1s"),
        );
        // The notification listener says at debug level when it listens (again).
        let mut run = HostRun::manifest(&manifest)
            .env("WASMQ_LOG", "info,wasmq_engine::postgres::listen=debug");
        if let StorageFrom::Env = from {
            run = run.env("WASMQ_STORAGE", storage);
        }
        Self {
            index,
            spawned: run.spawn(),
        }
    }

    /// Waits for `wasmq host listening on http://…` on stdout.
    fn ready(self) -> Host {
        let process = self.spawned.ready(Duration::from_secs(90));
        println!("host {} listening on {}", self.index, process.url);
        Host {
            index: self.index,
            process,
        }
    }
}

/// Starts `count` hosts (numbered from `first`) together and waits until they all listen.
/// Odd-numbered hosts get the storage URL from `WASMQ_STORAGE`, the others from the manifest.
fn start_hosts(first: usize, count: usize, storage: &str, consumer: Consumer) -> Vec<Host> {
    let starting: Vec<Starting> = (first..first + count)
        .map(|i| {
            let from = if i % 2 == 1 {
                StorageFrom::Env
            } else {
                StorageFrom::Manifest
            };
            Starting::spawn(i, storage, from, consumer)
        })
        .collect();
    starting.into_iter().map(Starting::ready).collect()
}

impl Host {
    /// SIGKILL: no shutdown, no settling; its leases stay in the database until they expire.
    fn kill(&mut self) {
        self.process.kill();
    }

    /// Still running (not exited)?
    fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        self.process.stop("-TERM");
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.process.logged_since(needle, None)
    }

    /// Whether a line containing `needle` was read (at or after `since`).
    fn logged_since(&self, needle: &str, since: Option<Instant>) -> bool {
        self.process.logged_since(needle, since)
    }

    /// The messages this host's consumer was handed so far.
    fn deliveries(&self) -> Vec<Delivery> {
        self.process
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, line)| Delivery::parse(self.index, *at, line))
            .collect()
    }

    /// How many deliveries this host logged so far.
    fn delivery_count(&self) -> usize {
        self.process
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, line)| line.contains(" attempt ") && line.contains("msg-"))
            .count()
    }
}

/// One message handed to a consumer, from the guest's log line.
#[derive(Debug, Clone)]
struct Delivery {
    host: usize,
    at: Instant,
    id: String,
    attempt: u32,
    /// The `N` of `msg-N` in the body.
    n: u64,
}

impl Delivery {
    /// Reads `… [worker] jobs <id> attempt <n>: msg-N` or `… [scripted] <id> attempt <n>:
    /// …msg-N…`.
    fn parse(host: usize, at: Instant, line: &str) -> Option<Self> {
        if !(line.contains("[worker] ") || line.contains("[scripted] ")) {
            return None;
        }
        let (head, tail) = line.split_once(" attempt ")?;
        let id = head.rsplit(' ').next()?.to_owned();
        let (attempt, body) = tail.split_once(": ")?;
        let number = body.split_once("msg-")?.1;
        let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
        Some(Self {
            host,
            at,
            id,
            attempt: attempt.trim().parse().ok()?,
            n: digits.parse().ok()?,
        })
    }
}

/// Every delivery of every host.
fn deliveries(hosts: &[&Host]) -> Vec<Delivery> {
    hosts.iter().flat_map(|h| h.deliveries()).collect()
}

/// Deliveries by message number, in the order they were read.
fn by_message(deliveries: &[Delivery]) -> BTreeMap<u64, Vec<Delivery>> {
    let mut map: BTreeMap<u64, Vec<Delivery>> = BTreeMap::new();
    for d in deliveries {
        map.entry(d.n).or_default().push(d.clone());
    }
    for list in map.values_mut() {
        list.sort_by_key(|d| (d.attempt, d.at));
    }
    map
}

/// Checks what at-least-once promises over `deliveries`: every message in `expected` was
/// delivered; one message id per number; no attempt of a message was handed out twice (two
/// hosts never lease the same message at once). Returns the redeliveries (attempt > 1).
fn check_deliveries(deliveries: &[Delivery], expected: impl Iterator<Item = u64>) -> Vec<Delivery> {
    let map = by_message(deliveries);
    let missing: Vec<u64> = expected.filter(|n| !map.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} message(s) never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut redelivered = Vec::new();
    for (n, list) in &map {
        let ids: HashSet<&str> = list.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 1, "msg-{n} carried several ids: {list:?}");
        let attempts: Vec<u32> = list.iter().map(|d| d.attempt).collect();
        let distinct: HashSet<u32> = attempts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            attempts.len(),
            "msg-{n}: one attempt was delivered twice (a double lease): {list:?}"
        );
        redelivered.extend(list.iter().filter(|d| d.attempt > 1).cloned());
    }
    redelivered
}

/// How many deliveries each host made.
fn per_host(deliveries: &[Delivery]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for d in deliveries {
        *counts.entry(d.host).or_insert(0) += 1;
    }
    counts
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST /queues/jobs/messages/batch` with `msg-N` bodies for `numbers`, each body being
/// `body(N)`. Returns the status and the envelope.
async fn publish(
    client: &reqwest::Client,
    url: &str,
    numbers: std::ops::Range<u64>,
    body: &(dyn Fn(u64) -> String + Sync),
) -> Result<(u16, Value), reqwest::Error> {
    let messages: Vec<Value> = numbers
        .map(|n| json!({ "body": body(n), "content_type": "text" }))
        .collect();
    let response = client
        .post(format!("{url}/queues/jobs/messages/batch"))
        .json(&json!({ "messages": messages }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let envelope = response.json().await.unwrap_or(Value::Null);
    Ok((status, envelope))
}

/// Sends `numbers` in batches of `batch`, `senders` requests at a time, batch `i` to
/// `urls[i % len]`; every send must succeed.
async fn send_all(
    urls: &[String],
    numbers: std::ops::Range<u64>,
    batch: u64,
    senders: usize,
    body: fn(u64) -> String,
) {
    let client = client();
    let next = Arc::new(AtomicU64::new(0));
    let batches = (numbers.end - numbers.start).div_ceil(batch);
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, next, urls) = (client.clone(), next.clone(), urls.to_vec());
        let start = numbers.start;
        let end = numbers.end;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches {
                    return;
                }
                let from = start + i * batch;
                let to = (from + batch).min(end);
                let url = &urls[i as usize % urls.len()];
                let (status, envelope) = publish(&client, url, from..to, &body)
                    .await
                    .unwrap_or_else(|e| panic!("sending to {url}: {e}"));
                assert_eq!(status, 200, "sending to {url}: {envelope}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// `GET /queues/jobs`'s metrics.
async fn metrics(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client
        .get(format!("{url}/queues/jobs"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let envelope: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {envelope}"));
    }
    Ok(envelope["result"]["metrics"].clone())
}

/// Waits until the queue has acked `acked` messages in all and holds nothing (no backlog,
/// nothing in flight); returns the metrics.
async fn wait_drained(url: &str, acked: u64, within: Duration) -> Value {
    let client = client();
    let deadline = Instant::now() + within;
    loop {
        let last = match metrics(&client, url).await {
            Ok(m) if m["acked"] == acked && m["backlog"]["count"] == 0 && m["in_flight"] == 0 => {
                return m;
            }
            Ok(m) => m,
            Err(err) => Value::String(err),
        };
        assert!(
            Instant::now() < deadline,
            "the queue did not drain to {acked} acked within {within:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker_body(n: u64) -> String {
    format!("msg-{n}")
}

/// Each message takes 10 ms in the `scripted` guest, so hosts hold leases for a while.
fn slow_body(n: u64) -> String {
    format!("sleep:10;print:msg-{n}")
}

/// Two hosts, then three, compete for one queue under load: every message is delivered and
/// acked, `acked` equals what was sent, the backlog drains, and every host takes part.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_share_one_queue_under_load() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (storage, _db) = postgres::fresh_database(&postgres::url());
    const PER_PHASE: u64 = 3_000;

    let mut hosts = start_hosts(0, 2, &storage, Consumer::Worker);
    println!("two hosts up after {:.1?}", started.elapsed());
    let urls: Vec<String> = hosts.iter().map(|h| h.process.url.clone()).collect();
    let phase = Instant::now();
    send_all(&urls, 0..PER_PHASE, 20, 6, worker_body).await;
    let m = wait_drained(&urls[0], PER_PHASE, Duration::from_secs(60)).await;
    println!(
        "two hosts: {PER_PHASE} messages sent through both APIs, handled and acked in {:.2?}",
        phase.elapsed()
    );
    assert_eq!(m["sent"], PER_PHASE, "{m}");
    let all: Vec<&Host> = hosts.iter().collect();
    let seen = deliveries(&all);
    let redelivered = check_deliveries(&seen, 0..PER_PHASE);
    let counts = per_host(&seen);
    println!(
        "two hosts: deliveries per host {counts:?}, redeliveries {}",
        redelivered.len()
    );
    assert_eq!(
        counts.len(),
        2,
        "both hosts must have handled messages: {counts:?}"
    );
    explain_redeliveries(&all, &redelivered);

    hosts.extend(start_hosts(2, 1, &storage, Consumer::Worker));
    let urls: Vec<String> = hosts.iter().map(|h| h.process.url.clone()).collect();
    let before: HashMap<usize, usize> = hosts
        .iter()
        .map(|h| (h.index, h.delivery_count()))
        .collect();
    let phase = Instant::now();
    send_all(&urls, PER_PHASE..2 * PER_PHASE, 20, 6, worker_body).await;
    // Any host answers for the whole queue.
    let m = wait_drained(&urls[2], 2 * PER_PHASE, Duration::from_secs(60)).await;
    println!(
        "three hosts: {PER_PHASE} more messages handled and acked in {:.2?}",
        phase.elapsed()
    );
    assert_eq!(m["sent"], 2 * PER_PHASE, "{m}");
    let all: Vec<&Host> = hosts.iter().collect();
    let seen = deliveries(&all);
    let redelivered = check_deliveries(&seen, 0..2 * PER_PHASE);
    let phase_counts: BTreeMap<usize, usize> = hosts
        .iter()
        .map(|h| (h.index, h.delivery_count() - before[&h.index]))
        .collect();
    println!(
        "three hosts: deliveries per host in this phase {phase_counts:?}, redeliveries in all {}",
        redelivered.len()
    );
    let busy = phase_counts.values().filter(|&&c| c > 0).count();
    assert!(
        busy >= 2,
        "more than one host must have handled messages: {phase_counts:?}"
    );
    explain_redeliveries(&all, &redelivered);
    for host in hosts {
        host.stop();
    }
    println!("done in {:.1?}", started.elapsed());
}

/// With no host dying, a message is delivered again only when its lease ran out before its
/// batch was settled: the host that ran late says so in its log.
fn explain_redeliveries(hosts: &[&Host], redelivered: &[Delivery]) {
    if redelivered.is_empty() {
        return;
    }
    let explained = hosts.iter().any(|h| {
        h.log_contains("leases expired before the batch was settled")
            || h.log_contains("swept expired leases")
    });
    assert!(
        explained,
        "{} redeliveries without any expired lease: {:?}",
        redelivered.len(),
        &redelivered[..redelivered.len().min(5)]
    );
}

/// A host killed with SIGKILL mid-load loses nothing: the batches it held reach the other
/// hosts once their leases expire (attempt 2), the backlog drains and `acked` equals `sent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_host_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (storage, _db) = postgres::fresh_database(&postgres::url());
    const HALF: u64 = 800;

    let mut hosts = start_hosts(0, 3, &storage, Consumer::Scripted);
    let urls: Vec<String> = hosts.iter().map(|h| h.process.url.clone()).collect();
    send_all(&urls, 0..HALF, 10, 4, slow_body).await;
    // Mid-load: the victim is busy with batches (each message sleeps 10 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    while hosts[0].delivery_count() < 50 {
        assert!(Instant::now() < deadline, "host 0 handled nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hosts[0].kill();
    let killed_at = Instant::now();
    let victim_seen = hosts[0].deliveries();
    println!(
        "killed host 0 (SIGKILL) after it handled {} messages, {:.1?} into the test",
        victim_seen.len(),
        started.elapsed()
    );

    let survivors: Vec<String> = urls[1..].to_vec();
    send_all(&survivors, HALF..2 * HALF, 10, 4, slow_body).await;
    let m = wait_drained(&survivors[0], 2 * HALF, Duration::from_secs(60)).await;
    println!("drained {:.1?} after the kill: {m}", killed_at.elapsed());
    assert_eq!(m["sent"], 2 * HALF, "{m}");

    let all: Vec<&Host> = hosts.iter().collect();
    let seen = deliveries(&all);
    let redelivered = check_deliveries(&seen, 0..2 * HALF);
    let counts = per_host(&seen);
    println!(
        "deliveries per host {counts:?}; redeliveries {}",
        redelivered.len()
    );
    assert!(
        !redelivered.is_empty(),
        "the batches host 0 held when it was killed must be redelivered"
    );
    let survivor_first: HashSet<u64> = seen
        .iter()
        .filter(|d| d.host != 0 && d.attempt == 1)
        .map(|d| d.n)
        .collect();
    for d in &redelivered {
        assert_ne!(d.host, 0, "the dead host delivered nothing after its death");
        assert_eq!(d.attempt, 2, "one failed attempt only: {d:?}");
        assert!(
            !survivor_first.contains(&d.n),
            "msg-{} was redelivered although a live host had it first",
            d.n
        );
        let after = d.at.saturating_duration_since(killed_at);
        // The lease was taken shortly before the kill and lasts 1 s (timeout) + 5 s (margin).
        assert!(
            after >= Duration::from_secs(4),
            "msg-{} came back {after:?} after the kill, before its lease could expire",
            d.n
        );
    }
    let first_back = redelivered.iter().map(|d| d.at).min().unwrap();
    println!(
        "{} message(s) host 0 held came back as attempt 2 on the survivors, the first {:.2?} after the kill",
        redelivered.len(),
        first_back.saturating_duration_since(killed_at)
    );
    for (i, host) in hosts.into_iter().enumerate() {
        if i > 0 {
            host.stop();
        }
    }
    println!("done in {:.1?}", started.elapsed());
}

/// What became of one publish request in the restart test.
#[derive(Debug, Clone)]
struct Attempted {
    numbers: std::ops::Range<u64>,
    began: Instant,
    ended: Instant,
    /// HTTP status; 0 for a transport error.
    status: u16,
    code: String,
    message: String,
}

/// The database server stops mid-load and starts again: meanwhile sends answer 503
/// `unavailable`; the hosts recover by themselves; every acknowledged message is delivered
/// and acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario told in order: load, restart the server, recover, check every message"
)]
async fn hosts_ride_out_a_database_restart() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // A server of its own: it is stopped and started again.
    let cluster = Arc::new(postgres::PgCluster::start().unwrap_or_else(|err| panic!("{err}")));
    let storage = cluster.url();
    let mut hosts = start_hosts(0, 2, &storage, Consumer::Worker);
    let urls: Vec<String> = hosts.iter().map(|h| h.process.url.clone()).collect();

    let stop_sending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::<Attempted>::new()));
    let next = Arc::new(AtomicU64::new(0));
    let client = client();
    let mut senders = Vec::new();
    for s in 0..4usize {
        let (client, next, urls) = (client.clone(), next.clone(), urls.clone());
        let (stop_sending, attempts) = (stop_sending.clone(), attempts.clone());
        senders.push(tokio::spawn(async move {
            let mut i = s;
            while !stop_sending.load(Ordering::Relaxed) {
                let from = next.fetch_add(5, Ordering::Relaxed);
                let url = &urls[i % urls.len()];
                i += 1;
                let began = Instant::now();
                let result = publish(&client, url, from..from + 5, &worker_body).await;
                let ended = Instant::now();
                let (status, envelope) = result.unwrap_or((0, Value::Null));
                let error = &envelope["errors"][0];
                attempts.lock().unwrap().push(Attempted {
                    numbers: from..from + 5,
                    began,
                    ended,
                    status,
                    code: error["code"].as_str().unwrap_or_default().to_owned(),
                    message: error["message"].as_str().unwrap_or_default().to_owned(),
                });
                let pause = if status == 200 { 5 } else { 50 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    let acknowledged = |attempts: &Mutex<Vec<Attempted>>| {
        attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.status == 200)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged(&attempts) < 100 {
        assert!(Instant::now() < deadline, "sends did not succeed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopping = Instant::now();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("stopping PostgreSQL: {err}"));
    let stopped = Instant::now();
    println!(
        "PostgreSQL stopped (pg_ctl stop -m fast, {:.2?}) {:.1?} into the test",
        stopped - stopping,
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarting = Instant::now();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("starting PostgreSQL again: {err}"));
    let restarted = Instant::now();
    println!(
        "PostgreSQL started again after {:.1?} down",
        restarted - stopped
    );
    let before_restart = acknowledged(&attempts);
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged(&attempts) < before_restart + 100 {
        assert!(
            Instant::now() < deadline,
            "the hosts did not recover within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_sending.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    for host in &mut hosts {
        assert!(host.alive(), "host {} died", host.index);
        // The LISTEN connection came back too (the 1 s poll would hide it if not).
        assert!(
            host.log_contains("notification listener lost its connection; reconnecting"),
            "host {} did not notice its notification connection dropping",
            host.index
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !host.logged_since("listening for PostgreSQL notifications", Some(restarted)) {
            assert!(
                Instant::now() < deadline,
                "host {} does not listen for notifications again",
                host.index
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let attempts = attempts.lock().unwrap().clone();
    let first_ok_after = attempts
        .iter()
        .filter(|a| a.status == 200 && a.began >= restarted)
        .map(|a| a.ended)
        .min()
        .expect("sends succeed after the restart");
    let unexpected: Vec<&Attempted> = attempts
        .iter()
        .filter(|a| {
            a.status != 200
                && !(a.status == 503 && (a.code == "unavailable" || a.code == "outcome_unknown"))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "a send failed other than with 503 unavailable or outcome_unknown: {:?}",
        &unexpected[..unexpected.len().min(5)]
    );
    let while_down: Vec<&Attempted> = attempts
        .iter()
        .filter(|a| a.began >= stopped && a.ended <= restarting)
        .collect();
    assert!(
        !while_down.is_empty(),
        "no send was tried while the server was down"
    );
    for a in &while_down {
        assert_eq!(
            (a.status, a.code.as_str()),
            (503, "unavailable"),
            "a send succeeded while the server was down: {a:?}"
        );
        assert!(a.message.contains("PostgreSQL"), "{a:?}");
    }
    let slowest_refusal = while_down.iter().map(|a| a.ended - a.began).max().unwrap();
    let rejected = attempts.iter().filter(|a| a.status == 503).count();
    let ok: Vec<&Attempted> = attempts.iter().filter(|a| a.status == 200).collect();
    let acknowledged_messages: u64 = ok.iter().map(|a| a.numbers.end - a.numbers.start).sum();
    println!(
        "{} publish requests: {} acknowledged ({acknowledged_messages} messages), {rejected} answered 503 unavailable ({} while the server was down, the slowest in {slowest_refusal:.2?}); e.g. {:?}",
        attempts.len(),
        ok.len(),
        while_down.len(),
        while_down[0].message
    );
    println!(
        "first acknowledged send {:.2?} after the server was back",
        first_ok_after.saturating_duration_since(restarted)
    );

    // Every acknowledged message is delivered; the queue drains (messages leased when the
    // server stopped come back when their leases expire).
    let m = {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = crate::client();
        loop {
            let m = metrics(&client, &urls[0]).await.unwrap();
            if m["acked"] == m["sent"] && m["backlog"]["count"] == 0 && m["in_flight"] == 0 {
                break m;
            }
            assert!(Instant::now() < deadline, "the queue did not drain: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let sent = m["sent"].as_u64().unwrap();
    assert!(
        sent >= acknowledged_messages,
        "fewer messages stored ({sent}) than acknowledged ({acknowledged_messages}): {m}"
    );
    let all: Vec<&Host> = hosts.iter().collect();
    let seen = deliveries(&all);
    // "Refused means nothing stored": no message of a send answered `unavailable` was stored
    // (a commit whose reply was lost is looked up, and answered 200 if it went through).
    let refused: std::collections::BTreeSet<u64> = attempts
        .iter()
        .filter(|a| a.code == "unavailable")
        .flat_map(|a| a.numbers.clone())
        .collect();
    let stored_though_refused: Vec<u64> = seen
        .iter()
        .map(|d| d.n)
        .filter(|n| refused.contains(n))
        .collect();
    assert!(
        stored_though_refused.is_empty(),
        "messages of sends answered 503 unavailable were stored: {stored_though_refused:?}"
    );
    let expected: Vec<u64> = ok.iter().flat_map(|a| a.numbers.clone()).collect();
    let redelivered = check_deliveries(&seen, expected.into_iter());
    println!(
        "stored {sent} messages ({} of them from sends answered outcome_unknown), all acked; deliveries per host {:?}; redeliveries {}",
        sent - acknowledged_messages,
        per_host(&seen),
        redelivered.len()
    );
    for host in hosts {
        host.stop();
    }
    println!("done in {:.1?}", started.elapsed());
}
