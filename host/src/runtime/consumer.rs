//! Consumer components: the `consumer` world, the host side of its `batch` and `producer`
//! imports, and one call of `handle` per batch in a fresh store.
//!
//! Besides the wasmq interfaces a consumer may import the WASI interfaces mainstream toolchains
//! use: `wasi:cli`, `clocks`, `filesystem`, `random`, `sockets`, `io` (wasmtime-wasi, with no
//! preopened directory and no network) and `wasi:http` (outgoing requests only to the origins
//! in its `allowed_outbound_hosts`, see `outbound.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::guest_log::{GuestLog, Stream};
use super::outbound::OutboundHttp;
use super::{ComponentLimits, Runtime};
use crate::engine::precedence::{BatchCall, HandlerResult};
use crate::engine::{self, Backlog, Broker, BrokerError, MessageId};
use crate::manifest::AllowedHost;

mod bindings {
    wasmtime::component::bindgen!({
        world: "consumer",
        path: "../wit",
        with: { "wasmq:queues/batch.message-batch": super::BatchResource },
    });
}

use bindings::wasmq::queues::types as wit;

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

/// Why a batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `handle` returned `err` with this text.
    Error(String),
    /// The guest trapped (panicked, hit its memory limit…).
    Trap(String),
    /// The guest ran past its time limit (computing, or waiting for an outbound HTTP
    /// response).
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(text) => write!(f, "handler returned an error: {text}"),
            Failure::Trap(text) => write!(f, "guest trapped: {text}"),
            Failure::Timeout => f.write_str("guest exceeded its time limit"),
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

/// Where a guest's sends go: its bindings (name → queue) on a broker.
#[derive(Clone)]
pub struct SendTarget {
    /// The broker holding the queues.
    pub broker: Arc<dyn Broker>,
    /// Binding name → queue name.
    pub bindings: Arc<BTreeMap<String, String>>,
    /// Runtime on which the (async) sends are driven from the guest's blocking thread.
    pub handle: tokio::runtime::Handle,
}

/// The host side of the `message-batch` resource.
pub struct BatchResource {
    queue: String,
    messages: Vec<wit::Message>,
    backlog: Backlog,
}

/// Everything one store holds.
struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    table: ResourceTable,
    limits: StoreLimits,
    target: Option<SendTarget>,
    calls: Vec<BatchCall>,
    component: Arc<str>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// What a component is granted besides its code.
#[derive(Clone, Default)]
pub struct ComponentOptions {
    /// Time and memory limits.
    pub limits: ComponentLimits,
    /// Environment variables it can read (none by default).
    pub env: Vec<(String, String)>,
    /// Where its sends go (none: every send fails with `unknown-binding`).
    pub send_target: Option<SendTarget>,
    /// The origins it may send `wasi:http` requests to (none by default: every request fails
    /// in the guest with `HTTP-request-denied`).
    pub allowed_outbound_hosts: Vec<AllowedHost>,
}

/// A consumer component, compiled and linked once, instantiated per batch.
#[derive(Clone)]
pub struct ConsumerComponent {
    name: Arc<str>,
    runtime: Runtime,
    pre: bindings::ConsumerPre<GuestState>,
    options: ComponentOptions,
    allowed_hosts: Arc<[AllowedHost]>,
}

impl ConsumerComponent {
    /// Compiles `wasm` (a component binary) and checks it against the `consumer` world.
    pub fn new(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        options: ComponentOptions,
    ) -> anyhow::Result<Self> {
        let component = Component::new(runtime.engine(), wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling component `{name}`"))?;
        let mut linker = Linker::<GuestState>::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        bindings::Consumer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the wasmq interfaces")?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("component `{name}` imports something the host does not provide")
            })?;
        let pre = bindings::ConsumerPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "component `{name}` is not a consumer: it must export `wasmq:queues/handler@0.1.0` with `handle`"
                )
            })?;
        let allowed_hosts = options.allowed_outbound_hosts.clone().into();
        Ok(Self {
            name: name.into(),
            runtime: runtime.clone(),
            pre,
            options,
            allowed_hosts,
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its limits.
    pub fn limits(&self) -> ComponentLimits {
        self.options.limits
    }

    /// Calls `handle` on `batch` in a fresh store. Blocks: call it from a blocking thread.
    /// A trap, a timeout or running out of memory are reported as a [`Failure`], not an
    /// error; errors are host problems (instantiation failing for want of resources…).
    pub fn run_batch(&self, batch: BatchInput) -> BatchRun {
        let deadline = Instant::now() + self.options.limits.timeout;
        let stdout = GuestLog::new(self.name.clone(), Stream::Stdout);
        let stderr = GuestLog::new(self.name.clone(), Stream::Stderr);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&self.options.env)
            .build();
        let state = GuestState {
            wasi,
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(self.name.clone(), self.allowed_hosts.clone(), deadline),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.options.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            target: self.options.send_target.clone(),
            calls: Vec::new(),
            component: self.name.clone(),
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(self.options.limits.ticks());

        let outcome = self.call_handle(&mut store, batch);
        let failure = match outcome {
            // Waiting for HTTP past the deadline is running past the time limit, whatever the
            // guest made of the timeout error it got.
            _ if store.data().outbound.deadline_hit() => Some(Failure::Timeout),
            Ok(Ok(())) => None,
            Ok(Err(text)) => Some(Failure::Error(text)),
            Err(err) => Some(classify(&err)),
        };
        let mut output = stdout.lines();
        output.extend(stderr.lines());
        BatchRun {
            calls: std::mem::take(&mut store.data_mut().calls),
            failure,
            output,
        }
    }

    fn call_handle(
        &self,
        store: &mut Store<GuestState>,
        batch: BatchInput,
    ) -> wasmtime::Result<Result<(), String>> {
        let consumer = self.pre.instantiate(&mut *store)?;
        let resource = BatchResource {
            queue: batch.queue,
            messages: batch.messages.into_iter().map(to_wit_message).collect(),
            backlog: batch.backlog,
        };
        let handle = store.data_mut().table.push(resource)?;
        let borrowed = Resource::<BatchResource>::new_borrow(handle.rep());
        let result = consumer
            .wasmq_queues_handler()
            .call_handle(&mut *store, borrowed)?;
        store.data_mut().table.delete(handle)?;
        Ok(result)
    }
}

/// Sorts a wasmtime error into the failure a user should see.
fn classify(err: &wasmtime::Error) -> Failure {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Timeout,
        _ => Failure::Trap(
            format!("{err:?}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
    }
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

fn to_wit_metrics(backlog: Backlog) -> wit::QueueMetrics {
    wit::QueueMetrics {
        backlog_count: backlog.count,
        backlog_bytes: backlog.bytes,
        oldest_timestamp_ms: backlog.oldest_timestamp_ms,
    }
}

fn from_wit_request(request: wit::SendRequest) -> engine::SendRequest {
    engine::SendRequest {
        body: request.body,
        content_type: match request.content_type {
            wit::ContentType::Json => engine::ContentType::Json,
            wit::ContentType::Text => engine::ContentType::Text,
            wit::ContentType::Bytes => engine::ContentType::Bytes,
        },
        delay_seconds: request.delay_seconds,
        dedup_key: request.dedup_key,
    }
}

fn to_send_error(err: BrokerError) -> wit::SendError {
    match err {
        BrokerError::MessageTooLarge { size, .. } => wit::SendError::MessageTooLarge(size),
        BrokerError::BatchTooLarge { size, .. } => wit::SendError::BatchTooLarge(size),
        BrokerError::TooManyMessages { count, .. } => wit::SendError::TooManyMessages(count),
        BrokerError::EmptyBatch => wit::SendError::EmptyBatch,
        BrokerError::InvalidDelay { delay, .. } => wit::SendError::InvalidDelay(delay),
        BrokerError::InvalidBody(text) => wit::SendError::InvalidBody(text),
        BrokerError::InvalidDedupKey(text) => {
            wit::SendError::InvalidBody(format!("invalid dedup key: {text}"))
        }
        other => wit::SendError::Unavailable(other.to_string()),
    }
}

impl GuestState {
    fn send(
        &mut self,
        binding: &str,
        requests: Vec<engine::SendRequest>,
        delay: Option<u32>,
    ) -> Result<wit::QueueMetrics, wit::SendError> {
        let Some(target) = &self.target else {
            return Err(wit::SendError::UnknownBinding(binding.to_owned()));
        };
        let Some(queue) = target.bindings.get(binding) else {
            return Err(wit::SendError::UnknownBinding(binding.to_owned()));
        };
        let broker = target.broker.clone();
        let result = target
            .handle
            .block_on(broker.send_batch(queue, requests, delay));
        result.map(to_wit_metrics).map_err(|err| {
            tracing::debug!(component = %self.component, binding, error = %err, "guest send refused");
            to_send_error(err)
        })
    }

    /// Records a call, or logs why it is ignored when its id or delay is malformed.
    fn record(&mut self, call: Result<BatchCall, String>) {
        match call {
            Ok(call) => self.calls.push(call),
            Err(why) => tracing::warn!(component = %self.component, "ignored batch call: {why}"),
        }
    }
}

fn parse_id(id: &str) -> Result<MessageId, String> {
    id.parse()
}

fn check_delay(delay: Option<u32>) -> Result<Option<u32>, String> {
    match delay {
        Some(d) if d > engine::limits::MAX_DELAY_SECONDS => Err(format!(
            "retry delay of {d} seconds is over the maximum of {}",
            engine::limits::MAX_DELAY_SECONDS
        )),
        other => Ok(other),
    }
}

impl wit::Host for GuestState {}

impl bindings::wasmq::queues::producer::Host for GuestState {
    fn send(
        &mut self,
        binding: String,
        request: wit::SendRequest,
    ) -> Result<wit::QueueMetrics, wit::SendError> {
        GuestState::send(self, &binding, vec![from_wit_request(request)], None)
    }

    fn send_batch(
        &mut self,
        binding: String,
        requests: Vec<wit::SendRequest>,
        delay_seconds: Option<u32>,
    ) -> Result<wit::QueueMetrics, wit::SendError> {
        let requests = requests.into_iter().map(from_wit_request).collect();
        GuestState::send(self, &binding, requests, delay_seconds)
    }
}

impl bindings::wasmq::queues::batch::Host for GuestState {}

impl bindings::wasmq::queues::batch::HostMessageBatch for GuestState {
    fn queue(&mut self, batch: Resource<BatchResource>) -> String {
        self.table
            .get(&batch)
            .map(|b| b.queue.clone())
            .unwrap_or_default()
    }

    fn messages(&mut self, batch: Resource<BatchResource>) -> Vec<wit::Message> {
        self.table
            .get(&batch)
            .map(|b| b.messages.clone())
            .unwrap_or_default()
    }

    fn metrics(&mut self, batch: Resource<BatchResource>) -> wit::QueueMetrics {
        to_wit_metrics(
            self.table
                .get(&batch)
                .map(|b| b.backlog)
                .unwrap_or_default(),
        )
    }

    fn ack(&mut self, _batch: Resource<BatchResource>, id: String) {
        self.record(parse_id(&id).map(BatchCall::Ack));
    }

    fn retry(&mut self, _batch: Resource<BatchResource>, id: String, delay_seconds: Option<u32>) {
        let call = parse_id(&id)
            .and_then(|id| check_delay(delay_seconds).map(|delay| BatchCall::Retry(id, delay)));
        self.record(call);
    }

    fn ack_all(&mut self, _batch: Resource<BatchResource>) {
        self.record(Ok(BatchCall::AckAll));
    }

    fn retry_all(&mut self, _batch: Resource<BatchResource>, delay_seconds: Option<u32>) {
        self.record(check_delay(delay_seconds).map(BatchCall::RetryAll));
    }

    fn drop(&mut self, batch: Resource<BatchResource>) -> wasmtime::Result<()> {
        // The host owns the batch and deletes it after `handle` returns.
        let _ = batch;
        Ok(())
    }
}
