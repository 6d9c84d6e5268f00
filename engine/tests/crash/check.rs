//! The check after a restart, shared by the power-loss and SIGKILL designs: whatever killed the
//! broker, what it stores afterwards must agree with what its callers were told. The
//! invariants checked after every restart ([`verify_after_restart`]):
//! 1. the database opens and nothing is in flight;
//! 2. a message whose send (or a lease of it) returned Ok is present unless an ack of it was
//!    attempted; a message whose ack returned Ok is absent;
//! 3. no message is stored twice (queue and dead-letter queue together), and only messages
//!    that some caller tried to send are stored; resending a dedup key whose send returned Ok
//!    stores nothing;
//! 4. the metrics' backlog count and bytes equal what can actually be leased out, and the
//!    counters agree with the backlog;
//! 5. a message leased with `attempts = a` (a lease that returned Ok) that is still in its queue
//!    comes back with `attempts >= a + 1`: the lease counted durably and the interrupted
//!    attempt counts as failed; a message in flight at the crash (no settle attempted) is
//!    visible again at once, in its queue, or in the dead-letter queue if that was its last
//!    attempt.

use std::collections::HashMap;

use anyhow::{Context, bail, ensure};
use wasmq_engine::{Broker, LeaseOptions};

use crate::workload::{DLQ, JOBS, Journal, MAX_RETRIES, is_dedup, request_for, tag_of};

/// One stored message, as leased out after the restart.
#[derive(Debug)]
struct Found {
    queue: &'static str,
    attempts: u32,
}

/// What [`verify_after_restart`] saw.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub stored: usize,
    pub in_dlq: usize,
    /// Messages leased from `jobs` before the crash found there again, attempts counted.
    pub leased_before: usize,
    /// Messages in flight at the crash ([`Journal::in_flight`]) found again.
    pub in_flight_back: usize,
}

/// Checks the invariants of the module docs on a broker just reopened after a crash, leasing
/// out every stored message (so call it once per reopened database).
#[expect(
    clippy::too_many_lines,
    reason = "the invariants of the module docs, checked one after another as listed there"
)]
pub(crate) async fn verify_after_restart(
    broker: &dyn Broker,
    journal: &Journal,
) -> anyhow::Result<Summary> {
    ensure!(
        journal.sent.is_subset(&journal.sending),
        "the journal lost events: {} sends returned Ok that were never announced",
        journal.sent.difference(&journal.sending).count()
    );
    for queue in [JOBS, DLQ] {
        let m = broker.metrics(queue).await?;
        ensure!(
            m.in_flight == 0,
            "{queue}: {} messages in flight right after the restart",
            m.in_flight
        );
    }

    // Lease out everything, counting what is stored.
    let mut found: HashMap<u64, Found> = HashMap::new();
    for queue in [JOBS, DLQ] {
        let metrics = broker.metrics(queue).await?;
        let (mut count, mut bytes) = (0u64, 0u64);
        loop {
            let leased = broker
                .lease(queue, LeaseOptions::new(100, 3_600_000))
                .await?;
            if leased.is_empty() {
                break;
            }
            for m in leased {
                count += 1;
                bytes += m.message.body.len() as u64;
                let tag = tag_of(&m.message.body)
                    .with_context(|| format!("{queue}: a stored body has no tag: {m:?}"))?;
                ensure!(
                    journal.sending.contains(&tag),
                    "{queue}: message {tag} is stored but nobody tried to send it"
                );
                ensure!(
                    m.message == request_message(tag, &m.message),
                    "{queue}: message {tag} came back altered: {:?}",
                    m.message
                );
                let previous = found.insert(
                    tag,
                    Found {
                        queue,
                        attempts: m.message.attempts,
                    },
                );
                if let Some(previous) = previous {
                    bail!(
                        "message {tag} is stored twice: in {} and in {queue}",
                        previous.queue
                    );
                }
            }
        }
        ensure!(
            (metrics.backlog.count, metrics.backlog.bytes) == (count, bytes),
            "{queue}: metrics say {} messages / {} bytes are stored, {count} / {bytes} could be \
             leased",
            metrics.backlog.count,
            metrics.backlog.bytes
        );
        ensure!(
            metrics.delayed == 0,
            "{queue}: {} delayed messages",
            metrics.delayed
        );
        let leased_out = broker.metrics(queue).await?;
        ensure!(
            leased_out.in_flight == count,
            "{queue}: {count} messages leased out but in_flight is {}",
            leased_out.in_flight
        );
    }

    // The counters agree with the backlog.
    let jobs = broker.metrics(JOBS).await?;
    let dlq = broker.metrics(DLQ).await?;
    ensure!(
        jobs.sent - jobs.acked - jobs.dead_lettered - jobs.dropped - jobs.expired
            == jobs.backlog.count,
        "{JOBS}: counters do not add up to the backlog: {jobs:?}"
    );
    ensure!(
        jobs.dead_lettered - dlq.acked - dlq.dropped - dlq.expired == dlq.backlog.count,
        "{DLQ}: counters do not add up to the backlog: {dlq:?} (dead-lettered by {JOBS}: {})",
        jobs.dead_lettered
    );
    ensure!(
        jobs.sent >= journal.sent.len() as u64 && jobs.sent <= journal.sending.len() as u64,
        "{JOBS}: sent is {} but {} sends returned Ok and {} were tried",
        jobs.sent,
        journal.sent.len(),
        journal.sending.len()
    );
    ensure!(
        jobs.acked >= journal.acked_in(JOBS) && dlq.acked >= journal.acked_in(DLQ),
        "acked counters {} / {} are below the acks that returned Ok ({} / {})",
        jobs.acked,
        dlq.acked,
        journal.acked_in(JOBS),
        journal.acked_in(DLQ)
    );

    // Nothing acknowledged is lost, nothing acked comes back.
    let mut must_exist: Vec<u64> = journal
        .sent
        .union(&journal.leased)
        .copied()
        .filter(|t| !journal.acking.contains(t))
        .collect();
    must_exist.sort_unstable();
    let lost: Vec<u64> = must_exist
        .iter()
        .copied()
        .filter(|t| !found.contains_key(t))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged messages were lost (never acked): {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let mut back: Vec<(&u64, &Found)> = found
        .iter()
        .filter(|(t, _)| journal.acked.contains_key(t))
        .collect();
    back.sort_unstable_by_key(|(t, _)| **t);
    ensure!(
        back.is_empty(),
        "{} messages whose ack returned Ok came back: {:?}",
        back.len(),
        &back[..back.len().min(20)]
    );

    // Attempts were counted durably, and the interrupted one counts as failed.
    let mut leased_before = 0;
    for (tag, f) in &found {
        ensure!(f.attempts >= 1, "message {tag} leased with attempts 0");
        if f.queue == JOBS
            && let Some(&seen) = journal.leased_from_jobs.get(tag)
        {
            ensure!(
                f.attempts > seen,
                "message {tag} was leased from {JOBS} with attempts {seen} before the crash and \
                 now comes back with attempts {}",
                f.attempts
            );
            leased_before += 1;
        }
    }
    // In-flight messages come back visible (they were all just leased out), in `jobs` with
    // their attempt counted, or in the dead-letter queue if that was their last attempt.
    let mut in_flight_back = 0;
    for (tag, attempts) in journal.in_flight() {
        let f = found
            .get(&tag)
            .with_context(|| format!("message {tag}, in flight at the crash, is gone"))?;
        ensure!(
            f.queue == DLQ || f.attempts > attempts,
            "message {tag} was in flight with attempts {attempts} and is in {} with attempts {}",
            f.queue,
            f.attempts
        );
        ensure!(
            f.queue == JOBS || attempts > MAX_RETRIES,
            "message {tag} was in flight with attempts {attempts} (retries left) and was \
             dead-lettered"
        );
        in_flight_back += 1;
    }
    // Dedup keys whose send returned Ok are remembered: resending stores nothing.
    let before = broker.metrics(JOBS).await?;
    let mut dedup: Vec<u64> = journal
        .sent
        .iter()
        .copied()
        .filter(|&t| is_dedup(t))
        .collect();
    dedup.sort_unstable();
    for chunk in dedup.chunks(50) {
        let requests = chunk.iter().map(|&t| request_for(t)).collect();
        broker
            .send_batch(JOBS, requests, None)
            .await
            .context("resending dedup keys")?;
    }
    let after = broker.metrics(JOBS).await?;
    let leased = broker
        .lease(JOBS, LeaseOptions::new(100, 3_600_000))
        .await?;
    ensure!(
        (after.sent, after.backlog) == (before.sent, before.backlog) && leased.is_empty(),
        "resending {} acknowledged dedup keys stored messages: before {before:?}, after \
         {after:?}, leased {leased:?}",
        dedup.len()
    );

    Ok(Summary {
        stored: found.len(),
        in_dlq: found.values().filter(|f| f.queue == DLQ).count(),
        leased_before,
        in_flight_back,
    })
}

/// `stored` as it should be if it is message `tag`: the body and content type of
/// [`request_for`], the stored id, timestamp and attempts.
fn request_message(tag: u64, stored: &wasmq_engine::Message) -> wasmq_engine::Message {
    let request = request_for(tag);
    wasmq_engine::Message {
        body: request.body,
        content_type: request.content_type,
        ..stored.clone()
    }
}
