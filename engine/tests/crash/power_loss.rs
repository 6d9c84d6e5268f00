//! Power loss on a simulated disk: a broker on a [`SimulatedDisk`] runs the concurrent
//! [`workload`](crate::workload) until the power is cut after a random number of `sync_data`
//! or `write` calls, is rebooted from what survived in every [`Survival`] mode and checked
//! ([`verify_after_restart`]); then the power is cut again while the rebooted broker recovers.
//! This proves what SIGKILL cannot: the operating system's page cache survives a killed
//! process, not a power cut, so only here does a commit that was not synced go missing.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmq_engine::{BrokerError, ManualClock, SendRequest};
use wasmq_testkit::START_MS;
use wasmq_testkit::power_loss::{SimulatedDisk, Survival};

use crate::check::verify_after_restart;
use crate::workload::{
    DLQ, JOBS, Journal, Recorder, Stop, consumer, create_queues, producer, request_for,
};
use crate::{open_sim, seeds, survival_for};

/// The tag of a message sent outside the workload (never used by it).
const MARKER_TAG: u64 = 99_999_999;

/// Where the power is cut.
#[derive(Debug, Clone, Copy)]
enum CutAt {
    /// After a random number of further successful `sync_data` calls (up to this many).
    Syncs(u64),
    /// After a random number of further successful `write` calls (up to this many).
    Writes(u64),
}

/// What one power-loss run did, for the test's summary.
#[derive(Debug, Default)]
struct RunStats {
    sent: usize,
    acked: usize,
    stored: usize,
    in_dlq: usize,
    leased_before: usize,
    in_flight_back: usize,
}

/// One seed: workload, cut, reboot in every survival mode, check.
#[expect(
    clippy::too_many_lines,
    reason = "one seed's whole story: workload, cut, a reboot per survival mode, a second cut"
)]
async fn power_loss_run(seed: u64, cut: CutAt) -> anyhow::Result<RunStats> {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimulatedDisk::new();
    let clock = ManualClock::new(START_MS);
    // Small caches make redb evict and reread pages, and write some before the commit.
    let cache = [64 << 10, 256 << 10, 4 << 20][rng.random_range(0..3)];
    let broker = open_sim(&disk, &clock, cache).await?;
    create_queues(&*broker).await?;

    let journal = Arc::new(Mutex::new(Journal::default()));
    let record: Recorder = {
        let journal = journal.clone();
        Arc::new(move |event| journal.lock().unwrap().record(event))
    };
    let tags = Arc::new(AtomicU64::new(1));

    // Something to consume from the start.
    producer(
        broker.clone(),
        tags.clone(),
        StdRng::seed_from_u64(rng.random()),
        record.clone(),
        Some(rng.random_range(1..=6)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("preloading: {e:?}"))?;

    match cut {
        CutAt::Syncs(max) => disk.cut_after_syncs(rng.random_range(0..=max)),
        CutAt::Writes(max) => disk.cut_after_writes(rng.random_range(0..=max)),
    }
    let producers = rng.random_range(1..=3);
    let consumers = rng.random_range(1..=3);
    let mut tasks = Vec::new();
    for _ in 0..producers {
        tasks.push(tokio::spawn(producer(
            broker.clone(),
            tags.clone(),
            StdRng::seed_from_u64(rng.random()),
            record.clone(),
            Some(40),
        )));
    }
    for _ in 0..consumers {
        tasks.push(tokio::spawn(consumer(
            broker.clone(),
            StdRng::seed_from_u64(rng.random()),
            record.clone(),
            Some(60),
        )));
    }
    for task in tasks {
        match task.await? {
            Ok(()) | Err(Stop::Unavailable) => {}
            Err(Stop::Bug(bug)) => bail!("workload: {bug}"),
        }
    }
    if !disk.is_cut() {
        // The workload finished first: cut now, between commits.
        disk.cut_power();
    }
    // A failed commit is fatal for writes.
    match broker.send(JOBS, SendRequest::text("after the cut")).await {
        Err(BrokerError::Unavailable(_)) => {}
        other => bail!("a send after the power cut answered {other:?}"),
    }
    ensure!(
        Arc::strong_count(&broker) == 1,
        "the workload's tasks are done but still hold the broker"
    );
    broker.close().await?;

    let journal = std::mem::take(&mut *journal.lock().unwrap());
    let debug = std::env::var("WASMQ_CRASH_DEBUG").is_ok();
    if debug {
        eprintln!(
            "seed {seed}: cache {cache}, {:?}, {} sent, {} acked",
            disk.stats(),
            journal.sent.len(),
            journal.acked.len()
        );
    }
    let mut stats = RunStats {
        sent: journal.sent.len(),
        acked: journal.acked.len(),
        ..RunStats::default()
    };
    for survival in [
        Survival::Strict,
        Survival::Everything,
        Survival::TornWrites { seed },
        Survival::TornSectors { seed },
    ] {
        let rebooted = disk.reboot(survival);
        let clock = ManualClock::new(START_MS + 60_000);
        let broker = open_sim(&rebooted, &clock, cache)
            .await
            .with_context(|| format!("{survival}: reopening after the power cut"))?;
        let summary = verify_after_restart(&*broker, &journal)
            .await
            .with_context(|| format!("{survival}: after the power cut"))?;
        if debug {
            eprintln!("  {survival}: {summary:?}");
        }
        stats.stored = stats.stored.max(summary.stored);
        stats.in_dlq = stats.in_dlq.max(summary.in_dlq);
        stats.leased_before = stats.leased_before.max(summary.leased_before);
        stats.in_flight_back = stats.in_flight_back.max(summary.in_flight_back);

        // The rebooted broker writes and survives a clean shutdown.
        broker
            .send(JOBS, SendRequest::text("after the reboot"))
            .await
            .with_context(|| format!("{survival}: sending after the reboot"))?;
        broker.close().await?;
        let again = open_sim(&rebooted.reboot(Survival::Strict), &clock, cache)
            .await
            .with_context(|| format!("{survival}: reopening after a clean close"))?;
        let stored =
            again.metrics(JOBS).await?.backlog.count + again.metrics(DLQ).await?.backlog.count;
        ensure!(
            stored == summary.stored as u64 + 1,
            "{survival}: {} messages stored after a clean close, expected {}",
            stored,
            summary.stored + 1
        );
        again.close().await?;
    }

    // A second power cut while the rebooted broker recovers (expiring the leases of the
    // crashed one); the next boot must still find everything.
    let first = survival_for(rng.random());
    let rebooting = disk.reboot(first);
    rebooting.cut_after_writes(rng.random_range(0..40));
    let clock = ManualClock::new(START_MS + 60_000);
    let during = open_sim(&rebooting, &clock, cache).await;
    if debug {
        eprintln!(
            "  second cut: {} recovery ({:?})",
            if during.is_ok() { "after" } else { "during" },
            rebooting.stats()
        );
    }
    if let Ok(broker) = during {
        // The cut came after the recovery: it lands on the next write instead.
        let _ = broker.send(JOBS, request_for(MARKER_TAG)).await;
        rebooting.cut_power();
        let _ = broker.close().await;
    }
    let second = survival_for(rng.random());
    let rebooted = rebooting.reboot(second);
    let broker = open_sim(&rebooted, &clock, cache)
        .await
        .with_context(|| format!("reopening after cuts in {first} then in {second} mode"))?;
    let mut journal = journal;
    // The message sent between the cuts may be stored.
    journal.sending.insert(MARKER_TAG);
    verify_after_restart(&*broker, &journal)
        .await
        .with_context(|| format!("after a cut during recovery ({first}, then {second})"))?;
    broker.close().await?;
    Ok(stats)
}

async fn power_loss_test(name: &str, cut: CutAt) {
    let started = Instant::now();
    let seeds = seeds(60);
    let mut totals = RunStats::default();
    for &seed in &seeds {
        match power_loss_run(seed, cut).await {
            Ok(stats) => {
                totals.sent += stats.sent;
                totals.acked += stats.acked;
                totals.stored += stats.stored;
                totals.in_dlq += stats.in_dlq;
                totals.leased_before += stats.leased_before;
                totals.in_flight_back += stats.in_flight_back;
            }
            Err(err) => {
                panic!("{name}: seed {seed} failed (rerun with WASMQ_CRASH_SEED={seed}): {err:#}")
            }
        }
    }
    eprintln!(
        "{name}: {} seeds in {:?}: {totals:?}",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() >= 10 {
        // The workload did exercise what the checks are about.
        assert!(totals.sent > 0 && totals.acked > 0 && totals.in_flight_back > 0);
    }
}

/// The power goes off when a commit syncs: nothing of that commit is durable (strict) or part
/// of it is (torn modes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_random_syncs() {
    power_loss_test("power_loss_at_random_syncs", CutAt::Syncs(60)).await;
}

/// The power goes off in the middle of writing a commit (or between commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_random_writes() {
    power_loss_test("power_loss_at_random_writes", CutAt::Writes(600)).await;
}
