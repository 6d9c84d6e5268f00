//! The input checks in front of every backend.
//!
//! Every stateless rule of `docs/semantics.md` (name syntax, setting ranges, message and batch
//! limits, lease ranges, retry delays, a queue that names itself as its dead-letter queue or
//! replays into itself) is checked here, once, before a backend sees the request. So a
//! refused request never reaches storage, both backends refuse it with the same error, and a
//! backend only checks what needs its data (whether a queue exists, or a dead-letter queue).
//! [`crate::open`] is the only way to get a backend, and it always returns it behind this
//! layer.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Broker;
use crate::error::{BrokerError, BrokerResult};
use crate::limits;
use crate::types::{
    Backlog, LeaseId, LeaseOptions, LeasedBatch, LeasedMessage, Message, Outcome, QueueInfo,
    QueueMetrics, QueueSettings, Readiness, SendRequest, SettleReport, SweepReport,
};

/// A backend behind the checks; the backend may assume every input is in range.
#[derive(Debug)]
pub(crate) struct Checked<B>(pub(crate) B);

/// The checks shared by creating and reconfiguring a queue.
fn check_settings(name: &str, settings: &QueueSettings) -> BrokerResult<()> {
    settings.validate()?;
    if settings.consumer.dead_letter_queue.as_deref() == Some(name) {
        return Err(BrokerError::SelfDeadLetter(name.to_owned()));
    }
    Ok(())
}

#[async_trait]
impl<B: Broker> Broker for Checked<B> {
    async fn create_queue(&self, name: &str, settings: QueueSettings) -> BrokerResult<QueueInfo> {
        limits::check_queue_name(name)?;
        check_settings(name, &settings)?;
        self.0.create_queue(name, settings).await
    }

    async fn configure_queue(
        &self,
        name: &str,
        settings: QueueSettings,
    ) -> BrokerResult<QueueInfo> {
        check_settings(name, &settings)?;
        self.0.configure_queue(name, settings).await
    }

    async fn delete_queue(&self, name: &str) -> BrokerResult<u64> {
        self.0.delete_queue(name).await
    }

    async fn list_queues(&self) -> BrokerResult<Vec<QueueInfo>> {
        self.0.list_queues().await
    }

    async fn queue_info(&self, name: &str) -> BrokerResult<QueueInfo> {
        self.0.queue_info(name).await
    }

    async fn send(&self, queue: &str, request: SendRequest) -> BrokerResult<Backlog> {
        limits::check_message(&request)?;
        self.0.send(queue, request).await
    }

    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<SendRequest>,
        delay_seconds: Option<u32>,
    ) -> BrokerResult<Backlog> {
        limits::check_batch(&requests, delay_seconds)?;
        self.0.send_batch(queue, requests, delay_seconds).await
    }

    async fn lease(&self, queue: &str, options: LeaseOptions) -> BrokerResult<Vec<LeasedMessage>> {
        options.validate()?;
        self.0.lease(queue, options).await
    }

    async fn settle(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
    ) -> BrokerResult<SettleReport> {
        for (_, outcome) in &outcomes {
            outcome.validate()?;
        }
        self.0.settle(queue, outcomes).await
    }

    async fn settle_and_lease(
        &self,
        queue: &str,
        outcomes: Vec<(LeaseId, Outcome)>,
        options: LeaseOptions,
    ) -> BrokerResult<(SettleReport, LeasedBatch)> {
        options.validate()?;
        for (_, outcome) in &outcomes {
            outcome.validate()?;
        }
        self.0.settle_and_lease(queue, outcomes, options).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        self.0.set_paused(queue, paused).await
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        self.0.purge(queue).await
    }

    async fn peek(&self, queue: &str, limit: u32) -> BrokerResult<Vec<Message>> {
        self.0.peek(queue, limit).await
    }

    async fn replay(&self, from: &str, to: &str, limit: u64) -> BrokerResult<u64> {
        if from == to {
            return Err(BrokerError::InvalidRequest(format!(
                "cannot replay queue `{from}` into itself"
            )));
        }
        self.0.replay(from, to, limit).await
    }

    async fn sweep(&self) -> BrokerResult<SweepReport> {
        self.0.sweep().await
    }

    async fn metrics(&self, queue: &str) -> BrokerResult<QueueMetrics> {
        self.0.metrics(queue).await
    }

    async fn readiness(&self, queue: &str, max: u32) -> BrokerResult<Readiness> {
        self.0.readiness(queue, max).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.0.changes()
    }

    async fn close(self: Arc<Self>) -> BrokerResult<()> {
        match Arc::try_unwrap(self) {
            Ok(Checked(backend)) => Arc::new(backend).close().await,
            // Another handle is still open: this one only drops itself.
            Err(_) => Ok(()),
        }
    }
}
