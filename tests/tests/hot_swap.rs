//! Hot swap in a running host (`run::start`, then `reload()` or `--watch`): components
//! replaced under load lose nothing and handle every batch leased after the swap; a broken
//! version leaves the previous one serving; manifest edits start and stop consumers, queues
//! and producers.
//!
//! Two example guests stand for two versions of one consumer: v1 is `worker` (acks), v2 is
//! `fanout` (forwards a copy to `OUT`, then acks), so the `handled-by-v2` queue shows which
//! version handled a message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wasmq_host::engine::{Broker, LeaseOptions, SendRequest};
use wasmq_host::run::RunningHost;
use wasmq_tests::manifest::{Component, Consumer, Manifest, Queue, Table, Value};
use wasmq_tests::{guest, guest_path, postgres, start_host};

struct Swappable {
    dir: TempDir,
    /// The `[host]` table's storage, if not the default.
    storage: Option<String>,
}

impl Swappable {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            storage: None,
        }
    }

    fn with_storage(url: &str) -> Self {
        Self {
            storage: Some(url.to_owned()),
            ..Self::new()
        }
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("manifest.toml")
    }

    fn component_path(&self) -> PathBuf {
        self.dir.path().join("consumer.wasm")
    }

    /// The manifest: the swappable consumer on `jobs`, forwarding to `handled-by-v2`.
    fn manifest(&self) -> Manifest {
        self.manifest_with(swappable_consumer())
    }

    /// The manifest with `consumer` (the swappable one, with more keys) in its place.
    fn manifest_with(&self, consumer: Component) -> Manifest {
        let mut manifest = Manifest::new();
        if let Some(url) = &self.storage {
            manifest = manifest.host("storage", url.as_str());
        }
        manifest
            .queue("jobs")
            .queue(Queue::new("handled-by-v2").pull_consumer(Table::new()))
            .component(consumer)
    }

    /// Writes `manifest` in place of the host's.
    fn write_manifest(&self, manifest: &Manifest) {
        manifest.write(self.dir.path());
    }

    /// Puts `bytes` in place of the consumer's file, atomically (as a build tool would).
    fn install(&self, bytes: &[u8]) {
        replace_file(&self.component_path(), bytes);
    }

    async fn start(&self) -> RunningHost {
        start_host(&self.manifest_path()).await
    }
}

/// The consumer on `jobs` whose two versions tell themselves apart through `handled-by-v2`.
fn swappable_consumer() -> Component {
    let consumer = Consumer::on("jobs")
        .max_batch_size(10)
        .max_batch_timeout(0)
        .max_concurrency(2);
    Component::new("consumer", "consumer.wasm")
        .consumer(consumer)
        .producer("OUT", "handled-by-v2")
}

/// Sends probes to `jobs` until one is handled by v2; fails with `never` after 10 s.
async fn probe_until_v2(broker: &dyn Broker, never: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        broker
            .send("jobs", SendRequest::text("probe"))
            .await
            .unwrap();
        wait_drained(broker, "jobs").await;
        if broker.metrics("handled-by-v2").await.unwrap().backlog.count > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn v1() -> Vec<u8> {
    guest("worker")
}

fn v2() -> Vec<u8> {
    guest("fanout")
}

/// Waits until `queue` has no message left and none in flight.
async fn wait_drained(broker: &dyn Broker, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = broker.metrics(queue).await.unwrap();
        if m.backlog.count == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "`{queue}` still holds {m:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the message just sent to `jobs` has been leased (and so handled by the version
/// current at that time): leasing is oldest first, so once as many messages are acked as had
/// been sent, it must have been leased.
async fn wait_past_probe(broker: &dyn Broker) {
    let sent = broker.metrics("jobs").await.unwrap().sent;
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.metrics("jobs").await.unwrap().acked < sent {
        assert!(Instant::now() < deadline, "the consumer does not keep up");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every body stored in `queue` (leased for an hour, so each is read once).
async fn bodies(broker: &dyn Broker, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let leased = broker
            .lease(queue, LeaseOptions::new(100, 3_600_000))
            .await
            .unwrap();
        if leased.is_empty() {
            return out;
        }
        out.extend(
            leased
                .into_iter()
                .map(|m| String::from_utf8(m.message.body).unwrap()),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_loses_nothing_and_new_batches_use_the_new_version() {
    swap_under_load(Swappable::new()).await;
}

/// The same with the queues in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_on_postgresql() {
    let (url, _database) = postgres::fresh_database(&postgres::url());
    swap_under_load(Swappable::with_storage(&url)).await;
}

async fn swap_under_load(setup: Swappable) {
    setup.write_manifest(&setup.manifest());
    setup.install(&v1());
    let host = setup.start().await;
    let broker = host.broker();

    // A steady stream of messages while the consumer is swapped.
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (broker, sending) = (broker.clone(), sending.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while sending.load(Ordering::Relaxed) {
                let batch = (0..10)
                    .map(|i| SendRequest::text(format!("load-{}", sent + i)))
                    .collect();
                broker.send_batch("jobs", batch, None).await.unwrap();
                sent += 10;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };

    // Each probe names the version that must handle it.
    let mut probes: Vec<String> = Vec::new();
    let mut probe = |version: &str| {
        let name = format!("probe-{}-{version}", probes.len() + 1);
        probes.push(name.clone());
        SendRequest::text(name)
    };
    // Swaps every 50 ms or so: each waits until the previous probe has been leased.
    for round in 0..3 {
        for (version, bytes) in [("v2", v2()), ("v1", v1())] {
            tokio::time::sleep(Duration::from_millis(50)).await;
            setup.install(&bytes);
            let report = host.reload().await.unwrap();
            assert_eq!(report.swapped, ["consumer"], "round {round}: {report:?}");
            assert!(report.failed.is_empty(), "{report:?}");
            broker.send("jobs", probe(version)).await.unwrap();
            wait_past_probe(&*broker).await;
        }
    }
    // A broken v3 leaves v2 serving.
    setup.install(&v2());
    host.reload().await.unwrap();
    setup.install(b"\0asm but not really a component");
    let report = host.reload().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].component, "consumer");
    assert!(report.swapped.is_empty(), "{report:?}");
    broker.send("jobs", probe("v2")).await.unwrap();

    sending.store(false, Ordering::Relaxed);
    let sent = sender.await.unwrap() + probes.len() as u64;
    wait_drained(&*broker, "jobs").await;
    let jobs = broker.metrics("jobs").await.unwrap();
    // Every message acked exactly once: no loss, no redelivery caused by the swaps.
    assert_eq!((jobs.sent, jobs.acked, jobs.retried), (sent, sent, 0));

    let forwarded = bodies(&*broker, "handled-by-v2").await;
    // v2 forwards what it handles, v1 does not: exactly the probes meant for v2 are there.
    for name in &probes {
        assert_eq!(
            forwarded.contains(name),
            name.ends_with("-v2"),
            "{name}: handled by the wrong version"
        );
    }
    let v2_probes = forwarded.iter().filter(|b| b.starts_with("probe-")).count();
    assert_eq!(v2_probes, 4, "{forwarded:?}");
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_edits_start_and_stop_consumers_queues_and_producers() {
    let setup = Swappable::new();
    setup.write_manifest(&setup.manifest());
    setup.install(&v1());
    let host = setup.start().await;
    let broker = host.broker();
    let extra = setup
        .manifest()
        .queue("extra")
        .component(
            Component::new("extra-worker", guest_path("worker"))
                .consumer(Consumer::on("extra").max_batch_timeout(0)),
        )
        .component(
            Component::new("hook", guest_path("webhook"))
                .route("/hook")
                .producer("JOBS", "extra"),
        );
    setup.write_manifest(&extra);
    let report = host.reload().await.unwrap();
    assert_eq!(report.queues_created, ["extra"]);
    assert_eq!(report.started, ["extra-worker", "hook"]);
    assert_eq!(report.unchanged, ["consumer"]);

    // The new producer queues into the new queue; the new consumer drains it.
    let url = format!("http://{}/hook", host.addr());
    let response = reqwest::Client::new()
        .post(&url)
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_drained(&*broker, "extra").await;
    assert_eq!(broker.metrics("extra").await.unwrap().acked, 1);

    // Removing them: the consumer stops, the route is gone, the queue stays.
    setup.write_manifest(&setup.manifest().queue("extra"));
    let report = host.reload().await.unwrap();
    assert_eq!(report.stopped, ["extra-worker", "hook"]);
    let response = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    broker
        .send("extra", SendRequest::text("nobody reads this"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(broker.metrics("extra").await.unwrap().backlog.count, 1);

    // A manifest that does not parse changes nothing.
    std::fs::write(setup.manifest_path(), "[host\n").unwrap();
    let err = host.reload().await.unwrap_err();
    assert!(format!("{err:#}").contains("manifest.toml:1"), "{err:#}");
    broker
        .send("jobs", SendRequest::text("still served"))
        .await
        .unwrap();
    wait_drained(&*broker, "jobs").await;
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_swaps_when_the_file_changes() {
    let setup = Swappable::new();
    setup.write_manifest(&setup.manifest());
    setup.install(&v1());
    let mut host = setup.start().await;
    host.watch().unwrap();
    let broker = host.broker();

    let changed = Instant::now();
    setup.install(&v2());
    probe_until_v2(&*broker, "--watch never swapped").await;
    println!(
        "file change to first batch on the new version: {:.0} ms (includes compiling it)",
        changed.elapsed().as_secs_f64() * 1000.0
    );
    host.shutdown().await.unwrap();
}

/// `--watch` with `watch` globs: editing a source runs the component's `build` and swaps the
/// result in; a build that fails leaves the running version serving. The "build" records the
/// version the source names in `builds.log`, then copies that version into place, so the test
/// exercises the watching, the build and the swap without a compiler in the loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rebuilds_when_a_source_changes() {
    let setup = Swappable::new();
    let dir = setup.dir.path();
    std::fs::write(dir.join("v1.wasm"), v1()).unwrap();
    std::fs::write(dir.join("v2.wasm"), v2()).unwrap();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/version.txt"), "v1").unwrap();
    let build = "v=\"$(cat src/version.txt)\" && echo \"$v\" >> builds.log \
        && cp \"$v.wasm\" consumer.wasm.tmp && mv consumer.wasm.tmp consumer.wasm";
    let consumer = swappable_consumer()
        .set("build", build)
        .set("watch", Value::Array(vec!["src/*.txt".into()]));
    setup.write_manifest(&setup.manifest_with(consumer));
    let mut host = setup.start().await;
    assert_eq!(builds(dir), ["v1"], "the start runs the build once");
    host.watch().unwrap();
    let broker = host.broker();

    // A build that runs and fails (there is no v9.wasm) keeps v1.
    std::fs::write(dir.join("src/version.txt"), "v9").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !builds(dir).iter().any(|v| v == "v9") {
        assert!(
            Instant::now() < deadline,
            "--watch never ran the build: {:?}",
            builds(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker
        .send("jobs", SendRequest::text("after a failed build"))
        .await
        .unwrap();
    wait_drained(&*broker, "jobs").await;
    assert_eq!(
        broker.metrics("handled-by-v2").await.unwrap().backlog.count,
        0
    );

    let edited = Instant::now();
    std::fs::write(dir.join("src/version.txt"), "v2").unwrap();
    probe_until_v2(&*broker, "--watch never rebuilt and swapped").await;
    println!(
        "source edit to first batch on the rebuilt version: {:.0} ms (build, compile, swap)",
        edited.elapsed().as_secs_f64() * 1000.0
    );
    host.shutdown().await.unwrap();
}

/// The versions the `build` of [`watch_rebuilds_when_a_source_changes`] ran for, in order.
fn builds(dir: &Path) -> Vec<String> {
    match std::fs::read_to_string(dir.join("builds.log")) {
        Ok(log) => log.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("builds.log: {e}"),
    }
}
