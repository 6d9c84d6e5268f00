//! What every guest store holds, whatever its world: WASI with captured stdout and stderr,
//! `wasi:http` limited to the allowed origins, memory and time limits, and the host side of
//! the `producer` interface (sends through the component's bindings).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{self, wit};
use super::consumer::Failure;
use super::guest_log::{GuestLog, Stream};
use super::hosts::AllowedHost;
use super::limiter::StoreBudget;
use super::outbound::OutboundHttp;
use super::{ComponentLimits, Runtime};
use crate::engine::precedence::BatchCall;
use crate::engine::{self, Backlog, Broker, BrokerError};

/// The one queue operation a guest can cause: storing messages. `wasmq run` hands guests its
/// broker; the fixture harness hands them a recorder that keeps what they sent.
#[async_trait::async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Stores `requests` in `queue`, all or none, as [`Broker::send_batch`] does.
    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<engine::SendRequest>,
        delay_seconds: Option<u32>,
    ) -> engine::BrokerResult<Backlog>;
}

#[async_trait::async_trait]
impl Publish for Arc<dyn Broker> {
    async fn send_batch(
        &self,
        queue: &str,
        requests: Vec<engine::SendRequest>,
        delay_seconds: Option<u32>,
    ) -> engine::BrokerResult<Backlog> {
        Broker::send_batch(self.as_ref(), queue, requests, delay_seconds).await
    }
}

/// Where a guest's sends go: its bindings (name → queue) on a publisher.
#[derive(Clone)]
pub struct SendTarget {
    /// Stores the messages (usually the host's broker).
    pub publisher: Arc<dyn Publish>,
    /// Binding name → queue name.
    pub bindings: Arc<BTreeMap<String, String>>,
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
    /// How many batches one instance of a consumer runs (producers: a fresh instance per
    /// request, whatever this says).
    pub reuse: InstanceReuse,
}

/// How many batches one instance of a consumer runs before it is replaced. As Cloudflare runs
/// consecutive batches in a warm isolate, an instance is reused (its globals persist) until it
/// traps or times out, holds more than half its memory limit, has run `max_batches`, or has
/// been idle for [`InstanceReuse::IDLE`]; instantiating is most of a Python or JavaScript
/// guest's cost per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// Batches per instance; 1 gives every batch a fresh instance (`fresh_instance = true`).
    pub max_batches: u32,
}

impl InstanceReuse {
    /// A fresh instance for every batch.
    pub const FRESH: Self = Self { max_batches: 1 };
    /// Default of `max_batches_per_instance`.
    pub const DEFAULT_MAX_BATCHES: u32 = 1000;
    /// Largest `max_batches_per_instance`.
    pub const MAX_BATCHES: u32 = 1_000_000;
    /// How long an instance may wait unused before it is dropped.
    pub const IDLE: std::time::Duration = std::time::Duration::from_secs(60);
}

impl Default for InstanceReuse {
    fn default() -> Self {
        Self {
            max_batches: Self::DEFAULT_MAX_BATCHES,
        }
    }
}

/// Everything one store holds (opaque outside the runtime: a [`World`](super::World) names it
/// only to link and bind).
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(super) outbound: OutboundHttp,
    pub(super) table: ResourceTable,
    limits: StoreBudget,
    target: Option<SendTarget>,
    /// Batch calls of a consumer, in order.
    pub(super) calls: Vec<BatchCall>,
    component: Arc<str>,
    /// When the call must be over.
    pub(super) deadline: Instant,
}

impl GuestState {
    /// Readies a warm store for its next call: a new deadline, no calls recorded.
    pub(super) fn renew(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.outbound.renew(deadline);
        self.calls.clear();
    }

    /// Linear memory the store holds now.
    pub(super) fn memory_bytes(&self) -> usize {
        self.limits.memory_bytes()
    }
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

/// A linker with WASI, `wasi:http` (outgoing) and the wasmq `producer` interface; the caller
/// adds what its world needs on top.
pub(super) fn linker(runtime: &Runtime) -> anyhow::Result<Linker<GuestState>> {
    let mut linker = Linker::<GuestState>::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("linking wasi:http")?;
    bindings::wasmq::queues::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("linking wasmq:queues/types")?;
    bindings::wasmq::queues::producer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("linking wasmq:queues/producer")?;
    Ok(linker)
}

/// What every loaded component carries besides its world's bindings: its name, the runtime
/// it runs in and what it is granted.
#[derive(Clone)]
pub(super) struct Guest {
    pub name: Arc<str>,
    runtime: Runtime,
    pub options: ComponentOptions,
    allowed_hosts: Arc<[AllowedHost]>,
}

impl Guest {
    /// What `runtime` needs to run component `name` with `options`.
    pub(super) fn new(runtime: &Runtime, name: &str, options: ComponentOptions) -> Self {
        Self {
            name: name.into(),
            runtime: runtime.clone(),
            allowed_hosts: options.allowed_outbound_hosts.clone().into(),
            options,
        }
    }

    /// A fresh store for one call (a batch, a request) with the limits armed, and the stdout
    /// and stderr streams its output is captured from.
    pub(super) fn new_store(&self) -> (Store<GuestState>, GuestLog, GuestLog) {
        new_store(
            &self.runtime,
            &self.name,
            &self.options,
            &self.allowed_hosts,
        )
    }
}

fn new_store(
    runtime: &Runtime,
    component: &Arc<str>,
    options: &ComponentOptions,
    allowed_hosts: &Arc<[AllowedHost]>,
) -> (Store<GuestState>, GuestLog, GuestLog) {
    let deadline = Instant::now() + options.limits.timeout;
    let stdout = GuestLog::new(component.clone(), Stream::Stdout);
    let stderr = GuestLog::new(component.clone(), Stream::Stderr);
    let wasi = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .envs(&options.env)
        .build();
    let state = GuestState {
        wasi,
        http: WasiHttpCtx::new(),
        outbound: OutboundHttp::new(component.clone(), allowed_hosts.clone(), deadline),
        table: ResourceTable::new(),
        limits: StoreBudget::new(options.limits),
        target: options.send_target.clone(),
        calls: Vec::new(),
        component: component.clone(),
        deadline,
    };
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|state| &mut state.limits);
    // Guest code yields to the executor at every epoch tick, so a guest computing shares its
    // thread; past the deadline it is interrupted (a guest waiting in a host call is dropped
    // by the caller's timeout instead, see `with_deadline`).
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|store| {
        Ok(if Instant::now() >= store.data().deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    (store, stdout, stderr)
}

/// Runs `call` (a guest call on `store`) until the store's deadline. `None` means the deadline
/// passed while the guest was blocked in a host call (a sleep, a stream, an HTTP request): the
/// call is dropped there, and the store with it once the caller is done.
pub(super) async fn with_deadline<T>(
    deadline: Instant,
    call: impl Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout_at(deadline.into(), call).await.ok()
}

/// Sorts what a guest call (under [`with_deadline`]) came to: past the deadline, whether the
/// guest computed, waited in a host call or waited for an outbound HTTP response (whatever it
/// made of the timeout error it got), is a timeout; a full instance pool is the host's
/// problem, not the guest's; any other error is a trap.
pub(super) fn outcome<T>(
    result: Option<wasmtime::Result<T>>,
    state: &GuestState,
) -> Result<T, Failure> {
    let err = match result {
        None => return Err(Failure::Timeout),
        Some(_) if state.outbound.deadline_hit() => return Err(Failure::Timeout),
        Some(Ok(value)) => return Ok(value),
        Some(Err(err)) => err,
    };
    // The root cause, not the outermost context ("error while executing at wasm backtrace:"):
    // the trap itself, or the host's reason for trapping the guest.
    let why = err.root_cause().to_string();
    if err
        .chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
    {
        return Err(Failure::HostBusy(why));
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Err(Failure::Timeout),
        _ => Err(Failure::Trap(why)),
    }
}

pub(super) fn to_wit_metrics(backlog: Backlog) -> wit::QueueMetrics {
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
    async fn send(
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
        let result = target.publisher.send_batch(queue, requests, delay).await;
        result.map(to_wit_metrics).map_err(|err| {
            tracing::debug!(component = %self.component, binding, error = %err, "guest send refused");
            to_send_error(err)
        })
    }
}

impl wit::Host for GuestState {}

impl bindings::wasmq::queues::producer::Host for GuestState {
    async fn send(
        &mut self,
        binding: String,
        request: wit::SendRequest,
    ) -> Result<wit::QueueMetrics, wit::SendError> {
        GuestState::send(self, &binding, vec![from_wit_request(request)], None).await
    }

    async fn send_batch(
        &mut self,
        binding: String,
        requests: Vec<wit::SendRequest>,
        delay_seconds: Option<u32>,
    ) -> Result<wit::QueueMetrics, wit::SendError> {
        let requests = requests.into_iter().map(from_wit_request).collect();
        GuestState::send(self, &binding, requests, delay_seconds).await
    }
}
