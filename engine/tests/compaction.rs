//! The redb file gives space back after a large drain: on its own when the writer is idle,
//! and with [`wasmq_engine::compact_file`] for a stopped host. What is stored survives both.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmq_engine::{
    Broker, Compaction, ContentType, LeaseOptions, Outcome, QueueSettings, RedbOptions,
    SendRequest, Storage, compact_file,
};

const MESSAGES: u64 = 20_000;
const BODY_BYTES: usize = 1_000;

async fn open(path: &Path, compaction: Compaction) -> Arc<dyn Broker> {
    let options = RedbOptions {
        compaction,
        ..RedbOptions::default()
    };
    wasmq_engine::open(Storage::redb(path, options))
        .await
        .expect("open redb broker")
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the queue file").len()
}

/// Fills queue `q` with [`MESSAGES`] of [`BODY_BYTES`] and drains it, all acked; returns the
/// file's size when it was full.
async fn fill_and_drain(b: &dyn Broker, path: &Path) -> u64 {
    b.create_queue("q", QueueSettings::default())
        .await
        .expect("create");
    for batch in 0..MESSAGES / 100 {
        let requests = (0..100)
            .map(|i| {
                let mut body = vec![b'x'; BODY_BYTES];
                body[..8].copy_from_slice(&(batch * 100 + i).to_le_bytes());
                SendRequest::new(body, ContentType::Bytes)
            })
            .collect();
        b.send_batch("q", requests, None).await.expect("send");
    }
    let peak = file_size(path);
    let mut acks = Vec::new();
    loop {
        let (_, leased) = b
            .settle_and_lease("q", acks, LeaseOptions::new(100, 60_000))
            .await
            .expect("settle and lease");
        if leased.messages.is_empty() {
            break;
        }
        acks = leased
            .messages
            .iter()
            .map(|m| (m.lease, Outcome::Ack))
            .collect();
    }
    let m = b.metrics("q").await.expect("metrics");
    assert_eq!((m.acked, m.backlog.count), (MESSAGES, 0));
    peak
}

/// The queue still takes and hands out messages, and kept its counters.
async fn still_works(b: &dyn Broker) {
    b.send("q", SendRequest::new(b"after".to_vec(), ContentType::Bytes))
        .await
        .expect("send after compaction");
    let leased = b
        .lease("q", LeaseOptions::new(10, 60_000))
        .await
        .expect("lease after compaction");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].message.body, b"after");
    let m = b.metrics("q").await.expect("metrics");
    assert_eq!((m.sent, m.acked), (MESSAGES + 1, MESSAGES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_writer_compacts_a_drained_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queues.redb");
    let policy = Compaction {
        idle: Duration::from_millis(200),
        min_file_bytes: 1024 * 1024,
    };
    let b = open(&path, policy).await;
    let peak = fill_and_drain(&*b, &path).await;
    assert!(peak > 20_000_000, "the full file is {peak} bytes");
    // A running host sweeps every second; sweeps must not keep the writer from being idle.
    let sweeper = b.clone();
    let sweeps = tokio::spawn(async move {
        loop {
            sweeper.sweep().await.expect("sweep");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while file_size(&path) * 10 >= peak {
        assert!(
            Instant::now() < deadline,
            "the file is still {} bytes of its peak {peak}",
            file_size(&path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sweeps.abort();
    let _ = sweeps.await;
    still_works(&*b).await;
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_file_shrinks_a_stopped_hosts_file_and_refuses_an_open_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queues.redb");
    let never = Compaction {
        min_file_bytes: u64::MAX,
        ..Compaction::default()
    };
    let b = open(&path, never).await;
    let peak = fill_and_drain(&*b, &path).await;
    let refused = compact_file(&path).expect_err("the file is open");
    assert!(
        format!("{refused:#}").contains("is a host running on it?"),
        "{refused:#}"
    );
    b.close().await.expect("close");
    // Closing gives back the free pages at the end of the file, not those in between.
    let closed = file_size(&path);
    assert!(
        closed * 10 > peak,
        "{closed} of {peak} bytes left after closing"
    );

    let done = compact_file(&path).expect("compact");
    assert_eq!(done.before_bytes, closed);
    assert!(
        done.after_bytes * 10 < peak,
        "{} → {} bytes (peak {peak})",
        done.before_bytes,
        done.after_bytes
    );
    assert_eq!(file_size(&path), done.after_bytes);
    let b = open(&path, never).await;
    still_works(&*b).await;
    b.close().await.expect("close");
}
