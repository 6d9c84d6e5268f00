//! The state transitions, each run inside the writer's group transaction.
//!
//! Every operation checks its input before its first write, so an input error leaves the
//! transaction (shared with other callers' operations) untouched.
//!
//! A settled message is taken out of the message table first ([`Txn::take`]); whatever becomes
//! of it then writes it back (retried, dead-lettered) or not (acked, dropped), so an ack costs
//! one write to that table and a retry two.

use redb::ReadableTable;

use super::records::{Counters, LeaseRecord, MessageState, Placement, QueueRecord, Stored};
use super::writer::Txn;
use crate::error::{BrokerError, BrokerResult};
use crate::precedence;
use crate::types::{
    Backlog, LeaseId, LeaseOptions, LeasedBatch, LeasedMessage, MessageId, Outcome, QueueMetrics,
    QueueSettings, SendRequest, SettleReport, SweepReport,
};

/// What became of a message whose attempt failed.
enum Fate {
    Retried,
    DeadLettered,
    Dropped,
}

impl Txn<'_> {
    fn queue(&self, name: &str) -> BrokerResult<&QueueRecord> {
        self.state
            .queues
            .get(name)
            .ok_or_else(|| BrokerError::UnknownQueue(name.to_owned()))
    }

    fn queue_by_id(&self, id: u32) -> BrokerResult<&QueueRecord> {
        self.state
            .names
            .get(&id)
            .and_then(|name| self.state.queues.get(name))
            .ok_or_else(|| corrupt(format!("no queue has id {id}")))
    }

    fn check_dead_letter(&self, name: &str, settings: &QueueSettings) -> BrokerResult<()> {
        match &settings.consumer.dead_letter_queue {
            Some(dlq) if !self.state.queues.contains_key(dlq) => {
                Err(BrokerError::UnknownDeadLetterQueue {
                    queue: name.to_owned(),
                    dead_letter_queue: dlq.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    fn put_queue(&mut self, name: &str, record: QueueRecord) -> BrokerResult<()> {
        let json = serde_json::to_vec(&record).expect("queue records serialize");
        self.queues.insert(name, json.as_slice())?;
        self.state.names.insert(record.id, name.to_owned());
        self.state.queues.insert(name.to_owned(), record);
        Ok(())
    }

    pub(super) fn create_queue(&mut self, name: &str, settings: QueueSettings) -> BrokerResult<()> {
        if self.state.queues.contains_key(name) {
            return Err(BrokerError::QueueExists(name.to_owned()));
        }
        self.check_dead_letter(name, &settings)?;
        let id = self.state.next_queue_id;
        self.state.next_queue_id += 1;
        let record = QueueRecord {
            id,
            settings,
            paused: false,
        };
        self.put_queue(name, record)?;
        self.counters_mut(id);
        Ok(())
    }

    pub(super) fn configure_queue(
        &mut self,
        name: &str,
        settings: QueueSettings,
    ) -> BrokerResult<()> {
        let mut record = self.queue(name)?.clone();
        self.check_dead_letter(name, &settings)?;
        record.settings = settings;
        self.put_queue(name, record)
    }

    pub(super) fn set_paused(&mut self, name: &str, paused: bool) -> BrokerResult<()> {
        let mut record = self.queue(name)?.clone();
        record.paused = paused;
        self.put_queue(name, record)
    }

    pub(super) fn delete_queue(&mut self, name: &str) -> BrokerResult<u64> {
        let id = self.queue(name)?.id;
        if let Some(used_by) = self.state.queues.iter().find_map(|(other, record)| {
            (other != name && record.settings.consumer.dead_letter_queue.as_deref() == Some(name))
                .then(|| other.clone())
        }) {
            return Err(BrokerError::DeadLetterInUse {
                queue: name.to_owned(),
                used_by,
            });
        }
        let deleted = self.purge_id(id)?;
        let keys = self
            .dedup
            .range((id, "")..(id + 1, ""))?
            .map(|entry| entry.map(|(k, v)| (k.value().1.to_owned(), v.value())))
            .collect::<Result<Vec<_>, _>>()?;
        for (key, until) in keys {
            self.dedup.remove((id, key.as_str()))?;
            self.dedup_expiry.remove((until, id, key.as_str()))?;
        }
        self.queues.remove(name)?;
        self.state.queues.remove(name);
        self.state.names.remove(&id);
        self.drop_counters(id)?;
        Ok(deleted)
    }

    /// Stores already-validated messages.
    pub(super) fn send(
        &mut self,
        queue: &str,
        requests: Vec<SendRequest>,
        batch_delay: Option<u32>,
    ) -> BrokerResult<Backlog> {
        let record = self.queue(queue)?;
        let (id, delivery_delay, dedup_ms) = (
            record.id,
            record.settings.delivery_delay,
            u64::from(record.settings.dedup_window) * 1000,
        );
        let now = self.now;
        for request in requests {
            if let Some(key) = request.dedup_key.as_deref().filter(|_| dedup_ms > 0) {
                let previous = self.dedup.get((id, key))?.map(|until| until.value());
                if let Some(until) = previous {
                    if until > now {
                        continue;
                    }
                    self.dedup_expiry.remove((until, id, key))?;
                }
                self.dedup.insert((id, key), now + dedup_ms)?;
                self.dedup_expiry.insert((now + dedup_ms, id, key), ())?;
            }
            let delay = request
                .delay_seconds
                .or(batch_delay)
                .unwrap_or(delivery_delay);
            let seq = self.next_seq();
            let size = request.body.len() as u32;
            let state = MessageState {
                timestamp_ms: now,
                attempts: 0,
                size,
                placement: Placement::Ready {
                    visible_at: now + u64::from(delay) * 1000,
                    // A seq is never handed out again, so it is a fresh ticket too.
                    ticket: seq,
                },
            };
            let mut stored = Stored::new(
                state,
                &MessageId::random(),
                request.content_type,
                &request.body,
            );
            self.place(id, seq, &mut stored)?;
            let counters = self.counters_mut(id);
            counters.add_message(size);
            counters.sent += 1;
        }
        self.backlog(id)
    }

    fn backlog(&self, id: u32) -> BrokerResult<Backlog> {
        let counters = self.state.counters.get(&id).copied().unwrap_or_default();
        backlog_of(&counters, &self.messages, id)
    }

    pub(super) fn lease(
        &mut self,
        queue: &str,
        options: LeaseOptions,
    ) -> BrokerResult<Vec<LeasedMessage>> {
        let record = self.queue(queue)?;
        if record.paused {
            return Err(BrokerError::Paused(queue.to_owned()));
        }
        let id = record.id;
        let retention_ms = u64::from(record.settings.message_retention_period) * 1000;
        self.expire_leases(false)?;

        let now = self.now;
        let deadline = now + options.visibility_timeout_ms;
        let ticket = self.next_seq();
        let max = options.max_messages as usize;
        let mut leased = Vec::with_capacity(max);
        while leased.len() < max {
            let candidates = self
                .ready
                .range((id, 0, 0)..=(id, now, u64::MAX))?
                .take(max - leased.len())
                .map(|entry| entry.map(|(_, seq)| seq.value()))
                .collect::<Result<Vec<_>, _>>()?;
            if candidates.is_empty() {
                break;
            }
            for seq in candidates {
                let mut stored = self.load(id, seq)?;
                if stored.state.timestamp_ms + retention_ms <= now {
                    self.delete_message(id, seq, &stored.state)?;
                    self.counters_mut(id).expired += 1;
                    continue;
                }
                self.unplace(id, &stored.state)?;
                stored.state.attempts += 1;
                stored.state.placement = Placement::Leased { deadline, ticket };
                self.place(id, seq, &mut stored)?;
                leased.push(LeasedMessage {
                    message: stored.message(),
                    lease: LeaseId { seq, ticket },
                    lease_deadline_ms: deadline,
                });
            }
        }
        if !leased.is_empty() {
            let record = LeaseRecord {
                held: leased.len() as u32,
                seqs: leased.iter().map(|m: &LeasedMessage| m.lease.seq).collect(),
            };
            self.leases
                .insert((deadline, id, ticket), record.encode().as_slice())?;
        }
        Ok(leased)
    }

    pub(super) fn settle(
        &mut self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
    ) -> BrokerResult<SettleReport> {
        let id = self.queue(queue)?.id;
        // A lease past its deadline is a failed attempt even if no sweep has run yet: it is
        // expired first, so a late decision below always meets the message as the expiry left
        // it (waiting again, held by a newer lease, or gone to the dead-letter queue).
        self.expire_leases(false)?;
        let mut report = SettleReport::default();
        for (lease, outcome) in outcomes {
            let Some(mut stored) = self.take(id, lease.seq)? else {
                report.stale.push(lease);
                continue;
            };
            let state = stored.state;
            let current = matches!(state.placement, Placement::Leased { ticket, .. } if ticket == lease.ticket);
            match (outcome, state.placement) {
                // Current or late: the consumer is done with the message.
                (Outcome::Ack, _) => {
                    self.forget(id, &state)?;
                    self.counters_mut(id).acked += 1;
                    report.acked += 1;
                }
                (Outcome::Retry { delay_seconds }, _) if current => {
                    match self.fail_attempt(id, lease.seq, stored, delay_seconds)? {
                        Fate::Retried => report.retried += 1,
                        Fate::DeadLettered => report.dead_lettered += 1,
                        Fate::Dropped => report.dropped += 1,
                    }
                }
                // Late, the message waiting again: the expiry counted the failed attempt; the
                // retry only says when it is delivered next.
                (Outcome::Retry { delay_seconds }, Placement::Ready { .. }) => {
                    let retry_delay = self.queue_by_id(id)?.settings.consumer.retry_delay;
                    let delay = u64::from(delay_seconds.unwrap_or(retry_delay));
                    self.requeue(id, lease.seq, stored, self.now + delay * 1000)?;
                    report.retried += 1;
                }
                // Late, and a newer lease holds the message: its holder decides.
                (Outcome::Retry { .. }, Placement::Leased { .. }) => {
                    self.messages.insert((id, lease.seq), stored.record())?;
                    report.stale.push(lease);
                }
            }
        }
        Ok(report)
    }

    pub(super) fn settle_and_lease(
        &mut self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
        options: LeaseOptions,
    ) -> BrokerResult<(SettleReport, LeasedBatch)> {
        let report = self.settle(queue, outcomes)?;
        // `lease` refuses a paused queue before its first write: the settlement stands.
        let messages = match self.lease(queue, options) {
            Err(BrokerError::Paused(_)) => Vec::new(),
            leased => leased?,
        };
        let backlog = self.backlog(self.queue(queue)?.id)?;
        Ok((report, LeasedBatch { messages, backlog }))
    }

    /// A failed attempt of a message taken out of the message table: redeliver after the
    /// delay, or dead-letter / drop once the queue's `max_retries` are used up.
    fn fail_attempt(
        &mut self,
        id: u32,
        seq: u64,
        stored: Stored,
        delay_seconds: Option<u32>,
    ) -> BrokerResult<Fate> {
        let state = stored.state;
        let record = self.queue_by_id(id)?;
        let consumer = &record.settings.consumer;
        let dlq = match precedence::fate(state.attempts, consumer, delay_seconds) {
            precedence::Fate::Retry { delay_seconds } => {
                let visible_at = self.now + u64::from(delay_seconds) * 1000;
                self.requeue(id, seq, stored, visible_at)?;
                self.counters_mut(id).retried += 1;
                return Ok(Fate::Retried);
            }
            precedence::Fate::DeadLetter => consumer
                .dead_letter_queue
                .as_ref()
                .and_then(|name| self.state.queues.get(name))
                .map(|dlq| dlq.id),
            precedence::Fate::Drop => None,
        };
        let queue = self.state.names[&id].clone();
        let message_id = stored.id();
        match dlq {
            Some(dlq) => {
                self.move_message(id, seq, stored, dlq)?;
                self.counters_mut(id).dead_lettered += 1;
                let dead_letter_queue = &self.state.names[&dlq];
                tracing::warn!(%queue, %message_id, attempts = state.attempts, %dead_letter_queue, "retries exhausted; moved to the dead-letter queue");
                Ok(Fate::DeadLettered)
            }
            None => {
                self.forget(id, &state)?;
                self.counters_mut(id).dropped += 1;
                tracing::warn!(%queue, %message_id, attempts = state.attempts, "retries exhausted and no dead_letter_queue is set; message dropped");
                Ok(Fate::Dropped)
            }
        }
    }

    /// Turns leases past their deadline (every lease when `all`, as after a restart) into
    /// failed attempts. Returns how many messages were still held by them.
    pub(super) fn expire_leases(&mut self, all: bool) -> BrokerResult<u64> {
        let upper = if all { u64::MAX } else { self.now };
        let expired = self
            .leases
            .range(..=(upper, u32::MAX, u64::MAX))?
            .map(|entry| entry.map(|(key, raw)| (key.value(), LeaseRecord::decode(raw.value()))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut candidates = Vec::new();
        for ((deadline, id, ticket), record) in expired {
            self.leases.remove((deadline, id, ticket))?;
            let record = record.ok_or_else(|| corrupt(format!("lease {ticket} is malformed")))?;
            candidates.extend(
                record
                    .seqs
                    .into_iter()
                    .map(|seq| (deadline, id, seq, ticket)),
            );
        }
        // Soonest deadline first, then oldest message first: they queue up again in the order
        // they were first sent.
        candidates.sort_unstable();
        let mut held = 0;
        for (_, id, seq, ticket) in candidates {
            let held_by_it = |stored: &Stored| {
                matches!(stored.state.placement,
                    Placement::Leased { ticket: t, .. } if t == ticket)
            };
            if let Some(stored) = self.try_load(id, seq)?
                && held_by_it(&stored)
            {
                self.messages.remove((id, seq))?;
                self.fail_attempt(id, seq, stored, None)?;
                held += 1;
            }
        }
        Ok(held)
    }

    pub(super) fn purge(&mut self, queue: &str) -> BrokerResult<u64> {
        let id = self.queue(queue)?.id;
        self.purge_id(id)
    }

    fn purge_id(&mut self, id: u32) -> BrokerResult<u64> {
        let all = self.states_of(id, usize::MAX, |_| true)?;
        for (seq, state) in &all {
            self.unplace(id, state)?;
            self.messages.remove((id, *seq))?;
        }
        let counters = self.counters_mut(id);
        counters.backlog_count = 0;
        counters.backlog_bytes = 0;
        counters.in_flight = 0;
        Ok(all.len() as u64)
    }

    pub(super) fn replay(&mut self, from: &str, to: &str, limit: u64) -> BrokerResult<u64> {
        let from_id = self.queue(from)?.id;
        let to_id = self.queue(to)?.id;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let waiting = self.states_of(from_id, limit, |state| {
            matches!(state.placement, Placement::Ready { .. })
        })?;
        for &(seq, _) in &waiting {
            let stored = self
                .take(from_id, seq)?
                .ok_or_else(|| corrupt(format!("message {seq} vanished")))?;
            self.move_message(from_id, seq, stored, to_id)?;
        }
        Ok(waiting.len() as u64)
    }

    pub(super) fn sweep(&mut self) -> BrokerResult<SweepReport> {
        let mut report = SweepReport {
            leases_expired: self.expire_leases(false)?,
            ..SweepReport::default()
        };
        let now = self.now;
        let retention: Vec<(u32, u64)> = self
            .state
            .queues
            .values()
            .map(|q| (q.id, u64::from(q.settings.message_retention_period) * 1000))
            .collect();
        for (id, retention_ms) in retention {
            // Messages are in send order, so the expired ones come first.
            let mut expired = Vec::new();
            for entry in self.messages.range((id, 0)..=(id, u64::MAX))? {
                let (key, raw) = entry?;
                let state = state_of(key.value().1, raw.value())?;
                if state.timestamp_ms + retention_ms > now {
                    break;
                }
                expired.push((key.value().1, state));
            }
            for (seq, state) in &expired {
                self.delete_message(id, *seq, state)?;
            }
            self.counters_mut(id).expired += expired.len() as u64;
            report.messages_expired += expired.len() as u64;
        }
        let keys = self
            .dedup_expiry
            .range(..(now + 1, 0, ""))?
            .map(|entry| entry.map(|(k, _)| (k.value().0, k.value().1, k.value().2.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        for (until, id, key) in keys {
            self.dedup_expiry.remove((until, id, key.as_str()))?;
            self.dedup.remove((id, key.as_str()))?;
            report.dedup_keys_expired += 1;
        }
        if report != SweepReport::default() {
            self.changed = true;
        }
        Ok(report)
    }

    /// Up to `limit` (seq, state) of queue `id` in seq order that satisfy `filter`.
    fn states_of(
        &self,
        id: u32,
        limit: usize,
        filter: impl Fn(&MessageState) -> bool,
    ) -> BrokerResult<Vec<(u64, MessageState)>> {
        let mut out = Vec::new();
        for entry in self.messages.range((id, 0)..=(id, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (key, raw) = entry?;
            let state = state_of(key.value().1, raw.value())?;
            if filter(&state) {
                out.push((key.value().1, state));
            }
        }
        Ok(out)
    }

    fn try_load(&self, id: u32, seq: u64) -> BrokerResult<Option<Stored>> {
        match self.messages.get((id, seq))? {
            Some(raw) => stored(seq, raw.value()).map(Some),
            None => Ok(None),
        }
    }

    fn load(&self, id: u32, seq: u64) -> BrokerResult<Stored> {
        self.try_load(id, seq)?
            .ok_or_else(|| corrupt(format!("message {seq} of queue {id} is missing")))
    }

    /// Removes a message's record and returns it, for an outcome to write back or not.
    fn take(&mut self, id: u32, seq: u64) -> BrokerResult<Option<Stored>> {
        match self.messages.remove((id, seq))? {
            Some(raw) => stored(seq, raw.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the message and the index entry its placement calls for.
    fn place(&mut self, id: u32, seq: u64, stored: &mut Stored) -> BrokerResult<()> {
        match stored.state.placement {
            Placement::Ready { visible_at, ticket } => {
                self.ready.insert((id, visible_at, ticket), seq)?;
            }
            // The lease's record in LEASES is written once per batch by `lease`.
            Placement::Leased { .. } => self.counters_mut(id).in_flight += 1,
        }
        self.messages.insert((id, seq), stored.record())?;
        Ok(())
    }

    /// Removes the index entry of `state`'s placement (not the state itself).
    fn unplace(&mut self, id: u32, state: &MessageState) -> BrokerResult<()> {
        match state.placement {
            Placement::Ready { visible_at, ticket } => {
                self.ready.remove((id, visible_at, ticket))?;
            }
            Placement::Leased { deadline, ticket } => {
                *self.released.entry((deadline, id, ticket)).or_default() += 1;
                let counters = self.counters_mut(id);
                counters.in_flight = counters.in_flight.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Puts a message taken out of the message table back in line, visible at `visible_at`,
    /// behind those already waiting.
    fn requeue(
        &mut self,
        id: u32,
        seq: u64,
        mut stored: Stored,
        visible_at: u64,
    ) -> BrokerResult<()> {
        self.unplace(id, &stored.state)?;
        stored.state.placement = Placement::Ready {
            visible_at,
            ticket: self.next_seq(),
        };
        self.place(id, seq, &mut stored)
    }

    /// Moves a message taken out of the message table to another queue, visible now,
    /// attempts starting afresh.
    fn move_message(
        &mut self,
        from: u32,
        seq: u64,
        mut stored: Stored,
        to: u32,
    ) -> BrokerResult<()> {
        self.forget(from, &stored.state)?;
        stored.state.attempts = 0;
        stored.state.placement = Placement::Ready {
            visible_at: self.now,
            ticket: self.next_seq(),
        };
        self.place(to, seq, &mut stored)?;
        self.counters_mut(to).add_message(stored.state.size);
        Ok(())
    }

    /// Deletes a message that is still stored.
    fn delete_message(&mut self, id: u32, seq: u64, state: &MessageState) -> BrokerResult<()> {
        self.messages.remove((id, seq))?;
        self.forget(id, state)
    }

    /// Accounts for a message taken out of the message table leaving queue `id`: its index
    /// entry and the counters.
    fn forget(&mut self, id: u32, state: &MessageState) -> BrokerResult<()> {
        self.unplace(id, state)?;
        self.counters_mut(id).remove_message(state.size);
        Ok(())
    }

    /// The queue's settings, state and metrics as seen inside this transaction.
    pub(super) fn info(&self, name: &str) -> BrokerResult<crate::types::QueueInfo> {
        let record = self.queue(name)?;
        let counters = self
            .state
            .counters
            .get(&record.id)
            .copied()
            .unwrap_or_default();
        Ok(crate::types::QueueInfo {
            name: name.to_owned(),
            settings: record.settings.clone(),
            paused: record.paused,
            metrics: metrics_of(&counters, &self.messages, &self.ready, record.id, self.now)?,
        })
    }
}

/// Decodes message `seq`'s record.
pub(super) fn stored(seq: u64, raw: &[u8]) -> BrokerResult<Stored> {
    Stored::decode(raw).ok_or_else(|| corrupt(format!("message {seq} has a malformed record")))
}

/// Decodes only the state of message `seq`'s record.
fn state_of(seq: u64, raw: &[u8]) -> BrokerResult<MessageState> {
    Stored::state_of(raw).ok_or_else(|| corrupt(format!("message {seq} has a malformed record")))
}

/// The backlog summary of queue `id`.
pub(super) fn backlog_of(
    counters: &Counters,
    messages: &impl ReadableTable<(u32, u64), &'static [u8]>,
    id: u32,
) -> BrokerResult<Backlog> {
    let oldest = match messages.range((id, 0)..=(id, u64::MAX))?.next() {
        Some(entry) => {
            let (key, raw) = entry?;
            Some(state_of(key.value().1, raw.value())?.timestamp_ms)
        }
        None => None,
    };
    Ok(Backlog {
        count: counters.backlog_count,
        bytes: counters.backlog_bytes,
        oldest_timestamp_ms: oldest,
    })
}

/// Full metrics of queue `id` at time `now`. Counting delayed messages walks only the delayed
/// part of the ready index.
pub(super) fn metrics_of(
    counters: &Counters,
    messages: &impl ReadableTable<(u32, u64), &'static [u8]>,
    ready: &impl ReadableTable<(u32, u64, u64), u64>,
    id: u32,
    now: u64,
) -> BrokerResult<QueueMetrics> {
    let delayed = ready
        .range((id, now + 1, 0)..=(id, u64::MAX, u64::MAX))?
        .count() as u64;
    Ok(QueueMetrics {
        backlog: backlog_of(counters, messages, id)?,
        in_flight: counters.in_flight,
        delayed,
        sent: counters.sent,
        acked: counters.acked,
        retried: counters.retried,
        dead_lettered: counters.dead_lettered,
        dropped: counters.dropped,
        expired: counters.expired,
    })
}

/// An internal inconsistency: treated like a storage failure.
fn corrupt(what: String) -> BrokerError {
    BrokerError::Unavailable(format!("queue database is inconsistent: {what}"))
}
