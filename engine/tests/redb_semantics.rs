//! The semantic suite against the embedded redb backend, plus what only a file-backed broker
//! can show: state survives closing and reopening the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use wasmq_engine::{
    Broker, ConsumerSettings, LeaseOptions, LeasedMessage, ManualClock, QueueSettings, RedbOptions,
    SendRequest, Storage, SweepReport,
};
use wasmq_testkit::{Ctx, START_MS};

/// A fresh broker on a new file in a temporary directory that lives as long as the [`Ctx`].
async fn redb_ctx() -> Ctx {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START_MS);
    let broker = open(&dir.path().join("queues.redb"), &clock).await;
    Ctx::new(broker, clock, dir)
}

wasmq_testkit::semantic_suite!(redb_ctx);

// ---------------------------------------------------------------------------------------------
// Durability across reopen

async fn open(path: &Path, clock: &ManualClock) -> Arc<dyn Broker> {
    wasmq_engine::open(Storage::redb(path, RedbOptions::with_clock(clock.clone())))
        .await
        .expect("open redb broker")
}

fn db_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queues.redb");
    (dir, path)
}

/// Leases for an hour, longer than any clock step here.
async fn lease_all(b: &dyn Broker, q: &str) -> Vec<LeasedMessage> {
    b.lease(q, LeaseOptions::new(100, 3_600_000))
        .await
        .expect("lease")
}

/// Queues, settings, messages and metrics survive close and reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_queues_and_messages() {
    let (_dir, path) = db_path();
    let clock = ManualClock::new(START_MS);
    let settings = QueueSettings {
        delivery_delay: 0,
        message_retention_period: 7_200,
        dedup_window: 30,
        consumer: ConsumerSettings {
            max_retries: 5,
            ..Default::default()
        },
    };

    let b = open(&path, &clock).await;
    b.create_queue("q", settings.clone()).await.unwrap();
    b.send("q", SendRequest::text("kept").with_dedup_key("k"))
        .await
        .unwrap();
    b.send("q", SendRequest::text("later").with_delay(60))
        .await
        .unwrap();
    b.set_paused("q", true).await.unwrap();
    b.close().await.unwrap();

    clock.advance_secs(1);
    let b = open(&path, &clock).await;
    let info = b.queue_info("q").await.unwrap();
    assert_eq!(info.settings, settings);
    assert!(info.paused);
    assert_eq!((info.metrics.backlog.count, info.metrics.sent), (2, 2));
    assert_eq!(info.metrics.delayed, 1);
    // The dedup key survived too.
    b.send("q", SendRequest::text("dup").with_dedup_key("k"))
        .await
        .unwrap();
    assert_eq!(b.metrics("q").await.unwrap().backlog.count, 2);

    b.set_paused("q", false).await.unwrap();
    let leased = lease_all(&*b, "q").await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].message.body, b"kept");
    assert_eq!(leased[0].message.timestamp_ms, START_MS);
    assert_eq!(leased[0].message.attempts, 1);
    clock.advance_secs(60);
    let later = lease_all(&*b, "q").await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].message.body, b"later");
    b.close().await.unwrap();
}

/// A message leased but never settled before close comes back at once after reopen, its
/// attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_lease_counts_as_failed_attempt_after_reopen() {
    let (_dir, path) = db_path();
    let clock = ManualClock::new(START_MS);

    let b = open(&path, &clock).await;
    b.create_queue("q", QueueSettings::default()).await.unwrap();
    b.send("q", SendRequest::text("m")).await.unwrap();
    let first = lease_all(&*b, "q").await;
    assert_eq!(first[0].message.attempts, 1);
    b.close().await.unwrap();

    // The clock has not moved: the old lease would still hold, but its process is gone.
    let b = open(&path, &clock).await;
    let again = lease_all(&*b, "q").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.id, first[0].message.id);
    assert_eq!(again[0].message.attempts, 2);
    let m = b.metrics("q").await.unwrap();
    assert_eq!((m.retried, m.in_flight, m.backlog.count), (1, 1, 1));
    // An ack with the lease from before the restart is late but still taken (the message is
    // stored); the newer lease then finds it gone.
    let ack = |lease| vec![(lease, wasmq_engine::Outcome::Ack)];
    let r = b.settle("q", ack(first[0].lease)).await.unwrap();
    assert_eq!((r.acked, r.stale.len()), (1, 0));
    let r = b.settle("q", ack(again[0].lease)).await.unwrap();
    assert_eq!(r.stale, vec![again[0].lease]);
    b.close().await.unwrap();
}

/// A message leased on its last allowed attempt reaches the DLQ even if the process dies
/// before settling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_last_attempt_dead_letters_after_reopen() {
    let (_dir, path) = db_path();
    let clock = ManualClock::new(START_MS);

    let b = open(&path, &clock).await;
    b.create_queue("dlq", QueueSettings::default())
        .await
        .unwrap();
    let src = QueueSettings {
        consumer: ConsumerSettings {
            max_retries: 0,
            dead_letter_queue: Some("dlq".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    b.create_queue("src", src).await.unwrap();
    b.send("src", SendRequest::text("m")).await.unwrap();
    let leased = lease_all(&*b, "src").await;
    b.close().await.unwrap();

    let b = open(&path, &clock).await;
    assert!(lease_all(&*b, "src").await.is_empty());
    assert_eq!(b.metrics("src").await.unwrap().dead_lettered, 1);
    let dead = lease_all(&*b, "dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.id, leased[0].message.id);
    assert_eq!(dead[0].message.attempts, 1);
    b.close().await.unwrap();
}

/// A sweep that finds nothing to clean commits nothing: an idle host, which sweeps every
/// second, costs no fsync and wakes no consumer. One that does clean commits as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_sweep_commits_nothing() {
    let (_dir, path) = db_path();
    let clock = ManualClock::new(START_MS);
    let b = open(&path, &clock).await;
    b.create_queue("q", QueueSettings::default()).await.unwrap();
    b.send("q", SendRequest::text("m")).await.unwrap();
    let mut changes = b.changes();
    changes.borrow_and_update();
    for _ in 0..3 {
        assert_eq!(b.sweep().await.unwrap(), SweepReport::default());
    }
    assert!(!changes.has_changed().unwrap(), "an empty sweep committed");

    let leased = b.lease("q", LeaseOptions::new(1, 1_000)).await.unwrap();
    assert_eq!(leased.len(), 1);
    changes.borrow_and_update();
    clock.advance_ms(1_001);
    assert_eq!(b.sweep().await.unwrap().leases_expired, 1);
    assert!(
        changes.has_changed().unwrap(),
        "the expiry was not committed"
    );
    assert_eq!(lease_all(&*b, "q").await[0].message.attempts, 2);
    b.close().await.unwrap();
}
