//! Where a guest's sends go under test: a [`Publish`] that hands every send to the real
//! engine of the running case (redb in memory, on a manual clock) and records the sends it
//! accepted, in order, with the binding they went through.
//!
//! The engine decides what is accepted (sizes, JSON and UTF-8 checks, delays, empty batches)
//! and answers the guest with real backlog figures, so a guest sees exactly what `wasmq run`
//! would show it; the record adds what reading the queues back would lose: the order across
//! bindings, each message's delay, and whether a dedup key made a send a no-op.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::SentMessage;
use crate::engine::{
    self, Backlog, Broker, BrokerError, BrokerResult, ManualClock, QueueSettings, RedbOptions,
    SendRequest, Storage,
};
use crate::runtime::Publish;

/// The queue behind binding number `index` (bindings sorted by name). Guests never see it.
pub(super) fn binding_queue(index: usize) -> String {
    format!("binding-{index}")
}

/// The broker of a loaded component's [`SendTarget`](crate::runtime::SendTarget); cases
/// install their own queues in it while they run.
pub(super) struct Recorder {
    /// One case at a time per loaded component.
    pub(super) running: tokio::sync::Mutex<()>,
    case: Mutex<Option<Arc<CaseQueues>>>,
}

/// The queues of one running case.
pub(super) struct CaseQueues {
    broker: Arc<dyn Broker>,
    /// Internal queue → (binding, the queue the fixture binds it to).
    bindings: BTreeMap<String, (String, String)>,
    dedup_window: u32,
    record: Mutex<Record>,
}

#[derive(Default)]
struct Record {
    sent: Vec<SentMessage>,
    keys: HashSet<(String, String)>,
}

impl CaseQueues {
    /// Fresh queues for `bindings` (binding → fixture queue), on an in-memory database whose
    /// clock stands still at `now_ms`.
    pub(super) async fn new(
        bindings: &BTreeMap<String, String>,
        now_ms: u64,
    ) -> anyhow::Result<Arc<Self>> {
        let clock = ManualClock::new(now_ms);
        let broker = engine::open(Storage::in_memory(RedbOptions::with_clock(clock))).await?;
        let settings = QueueSettings::default();
        let mut internal = BTreeMap::new();
        for (i, (binding, queue)) in bindings.iter().enumerate() {
            let name = binding_queue(i);
            broker.create_queue(&name, settings.clone()).await?;
            internal.insert(name, (binding.clone(), queue.clone()));
        }
        Ok(Arc::new(Self {
            broker,
            bindings: internal,
            dedup_window: settings.dedup_window,
            record: Mutex::default(),
        }))
    }

    /// What the guest sent, in order.
    pub(super) fn sent(&self) -> Vec<SentMessage> {
        self.record.lock().expect("record lock").sent.clone()
    }

    fn record(&self, queue: &str, requests: &[SendRequest], batch_delay: Option<u32>) {
        let Some((binding, target)) = self.bindings.get(queue) else {
            return;
        };
        let mut record = self.record.lock().expect("record lock");
        for request in requests {
            // The clock stands still during a case, so a key seen before is inside the window.
            let deduplicated = match &request.dedup_key {
                Some(key) if self.dedup_window > 0 => {
                    !record.keys.insert((queue.to_owned(), key.clone()))
                }
                _ => false,
            };
            record.sent.push(SentMessage {
                binding: binding.clone(),
                queue: target.clone(),
                content_type: request.content_type,
                body: request.body.clone(),
                delay_seconds: request.delay_seconds.or(batch_delay).unwrap_or(0),
                dedup_key: request.dedup_key.clone(),
                deduplicated,
            });
        }
    }
}

impl Recorder {
    pub(super) fn new() -> Self {
        Self {
            running: tokio::sync::Mutex::new(()),
            case: Mutex::new(None),
        }
    }

    /// Routes calls to `queues` until [`Recorder::uninstall`].
    pub(super) fn install(&self, queues: Arc<CaseQueues>) {
        *self.case.lock().expect("case lock") = Some(queues);
    }

    pub(super) fn uninstall(&self) {
        self.case.lock().expect("case lock").take();
    }

    fn current(&self) -> BrokerResult<Arc<CaseQueues>> {
        self.case
            .lock()
            .expect("case lock")
            .clone()
            .ok_or_else(|| BrokerError::Unavailable("no test case is running".into()))
    }
}

#[async_trait]
impl Publish for Recorder {
    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<SendRequest>,
        delay_seconds: Option<u32>,
    ) -> BrokerResult<Backlog> {
        let case = self.current()?;
        let backlog = case
            .broker
            .send_batch(queue, requests.clone(), delay_seconds)
            .await?;
        case.record(queue, &requests, delay_seconds);
        Ok(backlog)
    }
}
