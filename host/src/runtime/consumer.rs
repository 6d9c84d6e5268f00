//! Consumer components: the `consumer` world, the host side of its `batch` import, and one
//! call of `handle` per batch (see `guest.rs` for what every store holds), asynchronous, so
//! that the time limit holds while the guest waits in a host call.
//!
//! An instance runs batch after batch while it stays healthy ([`InstanceReuse`]): a Python or
//! JavaScript guest spends most of a fresh instance's cost setting up its interpreter, and a
//! Worker's globals persist between batches in a warm isolate too. An instance that trapped or
//! timed out is never reused (its state is whatever the interrupted call left).
//!
//! Besides the wasmq interfaces a consumer may import the WASI interfaces mainstream toolchains
//! use: `wasi:cli`, `clocks`, `filesystem`, `random`, `sockets`, `io` (wasmtime-wasi, with no
//! preopened directory and no network) and `wasi:http` (outgoing requests only to the origins
//! in its `allowed_outbound_hosts`, see `outbound.rs`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker, Resource};

use super::bindings::{self, wit};
use super::guest::{self, GuestState, InstanceReuse};
use super::guest_log::GuestLog;
use super::world::{LoadedComponent, World, WorldId};
use crate::engine::precedence::{BatchCall, HandlerResult};
use crate::engine::{self, Backlog, MessageId};

/// What the host hands a consumer: one batch of one queue.
#[derive(Debug, Clone)]
pub struct BatchInput {
    /// The queue the messages come from.
    pub queue: String,
    /// The messages, oldest first.
    pub messages: Vec<engine::Message>,
    /// The queue's backlog when the batch was leased.
    pub backlog: Backlog,
}

/// Why a batch (or a request) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `handle` returned `err` with this text.
    Error(String),
    /// The guest trapped (panicked, hit its memory limit…).
    Trap(String),
    /// The guest ran past its time limit (computing, or waiting in a host call).
    Timeout,
    /// The host had no instance slot free: not the guest's failure.
    HostBusy(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(text) => write!(f, "handler returned an error: {text}"),
            Failure::Trap(text) => write!(f, "guest trapped: {text}"),
            Failure::Timeout => f.write_str("guest exceeded its time limit"),
            Failure::HostBusy(why) => write!(f, "{why}"),
        }
    }
}

/// What happened in one call of `handle`.
#[derive(Debug, Clone)]
pub struct BatchRun {
    /// The batch calls the guest made, in order.
    pub calls: Vec<BatchCall>,
    /// `None` when `handle` returned `ok`.
    pub failure: Option<Failure>,
    /// Lines the guest wrote to stdout and stderr.
    pub output: Vec<String>,
}

impl BatchRun {
    /// The handler result the precedence rules need.
    pub fn result(&self) -> HandlerResult {
        match self.failure {
            None => HandlerResult::Ok,
            Some(_) => HandlerResult::Failed,
        }
    }
}

/// The host side of the `message-batch` resource.
pub struct BatchResource {
    queue: String,
    messages: Vec<wit::Message>,
    backlog: Backlog,
}

/// The `consumer` world.
pub struct Consumer;

impl World for Consumer {
    const ID: WorldId = WorldId::Consumer;
    type Pre = bindings::ConsumerPre<GuestState>;
    type Idle = IdleInstances;

    fn add_imports(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
        bindings::wasmq::queues::batch::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking wasmq:queues/batch")
    }

    fn bind(instance: InstancePre<GuestState>) -> wasmtime::Result<Self::Pre> {
        bindings::ConsumerPre::new(instance)
    }
}

/// A consumer component, compiled and linked once; its instances are reused across batches as
/// its [`InstanceReuse`] allows.
pub type ConsumerComponent = LoadedComponent<Consumer>;

impl ConsumerComponent {
    /// An instance ready for one batch: an idle warm one, else a new one in a fresh store; its
    /// time limit runs from now. [`HostBusy`] means the host has no instance slot free at the
    /// moment: take no messages, wait and try again. A failure of the guest's own (its start
    /// traps, it is over its limits) is kept for [`Instance::run`] to report as the batch's
    /// failure.
    pub async fn instantiate(&self) -> Result<Instance, HostBusy> {
        let deadline = Instant::now() + self.limits().timeout;
        let (store, stdout, stderr, consumer, batches) = match self.idle.take() {
            Some(mut warm) => {
                warm.store.data_mut().renew(deadline);
                warm.store.set_epoch_deadline(1);
                let consumer = Ok(warm.consumer);
                (warm.store, warm.stdout, warm.stderr, consumer, warm.batches)
            }
            None => {
                let (mut store, stdout, stderr) = self.guest.new_store();
                let instantiated =
                    guest::with_deadline(deadline, self.pre.instantiate_async(&mut store)).await;
                let consumer = match guest::outcome(instantiated, store.data()) {
                    Err(Failure::HostBusy(why)) => return Err(HostBusy(why)),
                    other => other,
                };
                (store, stdout, stderr, consumer, 0)
            }
        };
        Ok(Instance {
            name: self.guest.name.clone(),
            store,
            stdout,
            stderr,
            consumer,
            batches,
            reuse: self.guest.options.reuse,
            memory_bound: self.limits().memory_bytes / 2,
            idle: self.idle.clone(),
        })
    }

    /// Drops the instances idle for longer than [`InstanceReuse::IDLE`].
    pub fn trim_idle(&self) {
        self.idle.trim();
    }

    /// Runs the component on `batch` in an instance from [`Self::instantiate`] (see
    /// [`Instance::run`]); a host without a free instance slot is reported as
    /// [`Failure::HostBusy`].
    pub async fn run_batch(&self, batch: BatchInput) -> BatchRun {
        match self.instantiate().await {
            Ok(instance) => instance.run(batch).await,
            Err(HostBusy(why)) => BatchRun {
                calls: Vec::new(),
                failure: Some(Failure::HostBusy(why)),
                output: Vec::new(),
            },
        }
    }
}

/// A consumer's instances waiting for their next batch, the most recently used last.
#[derive(Default)]
pub struct IdleInstances(std::sync::Mutex<Vec<Warm>>);

/// An instance between batches.
struct Warm {
    store: Store<GuestState>,
    stdout: GuestLog,
    stderr: GuestLog,
    consumer: bindings::Consumer,
    /// Batches it has run.
    batches: u32,
    /// When it last finished one.
    since: Instant,
}

impl IdleInstances {
    /// The most recently used instance, once those idle for too long are dropped.
    fn take(&self) -> Option<Warm> {
        self.trim();
        self.0.lock().expect("idle instances lock").pop()
    }

    fn put(&self, warm: Warm) {
        self.0.lock().expect("idle instances lock").push(warm);
    }

    /// Drops the instances idle for longer than [`InstanceReuse::IDLE`] (the oldest come
    /// first).
    fn trim(&self) {
        let stale = {
            let mut idle = self.0.lock().expect("idle instances lock");
            let keep = idle
                .iter()
                .position(|warm| warm.since.elapsed() < InstanceReuse::IDLE)
                .unwrap_or(idle.len());
            idle.drain(..keep).collect::<Vec<_>>()
        };
        // Stores are dropped outside the lock.
        drop(stale);
    }
}

/// The host had no instance slot free for a call: a capacity problem of the host, not a
/// failure of the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host has no instance slot free right now: {0}")]
pub struct HostBusy(String);

/// A consumer component's instance in its own store, ready for one batch.
pub struct Instance {
    name: Arc<str>,
    store: Store<GuestState>,
    stdout: GuestLog,
    stderr: GuestLog,
    /// The instance, or why instantiating it failed.
    consumer: Result<bindings::Consumer, Failure>,
    /// Batches it ran before this one.
    batches: u32,
    reuse: InstanceReuse,
    /// Past this much linear memory it is not reused.
    memory_bound: usize,
    /// Where it waits for its next batch if it may run one.
    idle: Arc<IdleInstances>,
}

impl Instance {
    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives back an instance that ran no batch (nothing was leased for it): it waits for the
    /// next batch as it was, so a lease that comes back empty does not cost a warm instance
    /// (or the instantiation of a new one, ~10 ms for a Python guest).
    pub fn release(self) {
        if let Ok(consumer) = self.consumer {
            self.idle.put(Warm {
                store: self.store,
                stdout: self.stdout,
                stderr: self.stderr,
                consumer,
                batches: self.batches,
                since: Instant::now(),
            });
        }
    }

    /// Calls `handle` on `batch`, until the component's time limit, whether the guest
    /// computes or waits in a host call. A trap, a timeout or running out of memory are
    /// reported as a [`Failure`]; the calls the guest made before stand. Afterwards the
    /// instance waits for another batch if its [`InstanceReuse`] allows.
    pub async fn run(self, batch: BatchInput) -> BatchRun {
        let Instance {
            mut store,
            stdout,
            stderr,
            consumer,
            batches,
            reuse,
            memory_bound,
            idle,
            ..
        } = self;
        let failure = match &consumer {
            Ok(consumer) => {
                let deadline = store.data().deadline;
                let called =
                    guest::with_deadline(deadline, call_handle(consumer, &mut store, batch)).await;
                match guest::outcome(called, store.data()) {
                    Ok(Ok(())) => None,
                    Ok(Err(text)) => Some(Failure::Error(text)),
                    Err(failure) => Some(failure),
                }
            }
            Err(failure) => Some(failure.clone()),
        };
        let mut output = stdout.take_lines();
        output.extend(stderr.take_lines());
        let calls = std::mem::take(&mut store.data_mut().calls);
        let healthy = matches!(failure, None | Some(Failure::Error(_)));
        if let Ok(consumer) = consumer
            && healthy
            && batches + 1 < reuse.max_batches
            && store.data().memory_bytes() <= memory_bound
        {
            idle.put(Warm {
                store,
                stdout,
                stderr,
                consumer,
                batches: batches + 1,
                since: Instant::now(),
            });
        }
        BatchRun {
            calls,
            failure,
            output,
        }
    }
}

async fn call_handle(
    consumer: &bindings::Consumer,
    store: &mut Store<GuestState>,
    batch: BatchInput,
) -> wasmtime::Result<Result<(), String>> {
    let resource = BatchResource {
        queue: batch.queue,
        messages: batch.messages.into_iter().map(to_wit_message).collect(),
        backlog: batch.backlog,
    };
    let handle = store.data_mut().table.push(resource)?;
    let borrowed = Resource::<BatchResource>::new_borrow(handle.rep());
    let result = consumer
        .wasmq_queues_handler()
        .call_handle(&mut *store, borrowed)
        .await?;
    store.data_mut().table.delete(handle)?;
    Ok(result)
}

fn to_wit_message(message: engine::Message) -> wit::Message {
    wit::Message {
        id: message.id.to_string(),
        timestamp_ms: message.timestamp_ms,
        content_type: match message.content_type {
            engine::ContentType::Json => wit::ContentType::Json,
            engine::ContentType::Text => wit::ContentType::Text,
            engine::ContentType::Bytes => wit::ContentType::Bytes,
        },
        body: message.body,
        attempts: message.attempts,
    }
}

/// The most calls (`ack`, `retry`, `ack-all`, `retry-all`) one `handle` may make on its batch.
/// A batch holds at most 100 messages, so a well-behaved consumer makes a few hundred calls at
/// most; past this the guest traps, so a call loop cannot grow the host's memory or its log.
pub const MAX_CALLS_PER_BATCH: usize = 1_000;

impl GuestState {
    /// Records a call. A call the host cannot take traps, the way a thrown exception fails a
    /// Worker's handler: the batch fails and every message not explicitly acked is retried.
    fn record(&mut self, call: Result<BatchCall, String>) -> wasmtime::Result<()> {
        if self.calls.len() >= MAX_CALLS_PER_BATCH {
            wasmtime::bail!("more than {MAX_CALLS_PER_BATCH} calls on one batch");
        }
        match call {
            Ok(call) => {
                self.calls.push(call);
                Ok(())
            }
            Err(why) => Err(wasmtime::format_err!("{why}")),
        }
    }
}

fn parse_id(call: &str, id: &str) -> Result<MessageId, String> {
    id.parse()
        .map_err(|why| format!("{call}({id:?}): not a message id: {why}"))
}

/// An out-of-range delay fails the batch rather than being dropped: dropping it would turn a
/// request for redelivery into an ack, a delete.
fn check_delay(call: &str, delay: Option<u32>) -> Result<Option<u32>, String> {
    match delay {
        Some(d) if d > engine::limits::MAX_DELAY_SECONDS => Err(format!(
            "{call}: a delay of {d} seconds is over the maximum of {}",
            engine::limits::MAX_DELAY_SECONDS
        )),
        other => Ok(other),
    }
}

impl bindings::wasmq::queues::batch::Host for GuestState {}

impl bindings::wasmq::queues::batch::HostMessageBatch for GuestState {
    fn queue(&mut self, batch: Resource<BatchResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&batch)?.queue.clone())
    }

    fn messages(&mut self, batch: Resource<BatchResource>) -> wasmtime::Result<Vec<wit::Message>> {
        Ok(self.table.get(&batch)?.messages.clone())
    }

    fn metrics(&mut self, batch: Resource<BatchResource>) -> wasmtime::Result<wit::QueueMetrics> {
        Ok(guest::to_wit_metrics(self.table.get(&batch)?.backlog))
    }

    fn ack(&mut self, batch: Resource<BatchResource>, id: String) -> wasmtime::Result<()> {
        self.table.get(&batch)?;
        self.record(parse_id("ack", &id).map(BatchCall::Ack))
    }

    fn retry(
        &mut self,
        batch: Resource<BatchResource>,
        id: String,
        delay_seconds: Option<u32>,
    ) -> wasmtime::Result<()> {
        self.table.get(&batch)?;
        let call = parse_id("retry", &id).and_then(|parsed| {
            check_delay(&format!("retry({id}, {delay_seconds:?})"), delay_seconds)
                .map(|delay| BatchCall::Retry(parsed, delay))
        });
        self.record(call)
    }

    fn ack_all(&mut self, batch: Resource<BatchResource>) -> wasmtime::Result<()> {
        self.table.get(&batch)?;
        self.record(Ok(BatchCall::AckAll))
    }

    fn retry_all(
        &mut self,
        batch: Resource<BatchResource>,
        delay_seconds: Option<u32>,
    ) -> wasmtime::Result<()> {
        self.table.get(&batch)?;
        let call = check_delay(&format!("retry-all({delay_seconds:?})"), delay_seconds)
            .map(BatchCall::RetryAll);
        self.record(call)
    }

    fn drop(&mut self, batch: Resource<BatchResource>) -> wasmtime::Result<()> {
        // The host owns the batch and deletes it after `handle` returns.
        let _ = batch;
        Ok(())
    }
}
