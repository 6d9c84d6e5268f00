//! The WebAssembly runtime: one wasmtime [`Engine`] with a wall-clock ticker, components
//! loaded once into [`InstancePre`](wasmtime::component::InstancePre)s, and a fresh store per
//! batch with the component's time and memory limits.

mod bindings;
mod consumer;
mod guest;
mod guest_log;
mod outbound;
mod producer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub use self::consumer::{BatchInput, BatchRun, ConsumerComponent, Failure};
pub use self::guest::{ComponentOptions, SendTarget};
pub use self::guest_log::{GuestLog, Stream};
pub use self::producer::ProducerComponent;

/// How often the engine's epoch advances; the granularity of guest time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-component resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentLimits {
    /// Wall-clock time one call (a batch, a request) may take, instantiation included.
    pub timeout: Duration,
    /// Linear memory the component may allocate, in bytes.
    pub memory_bytes: usize,
}

impl Default for ComponentLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ComponentLimits {
    /// The limit in epoch ticks (at least one).
    fn ticks(&self) -> u64 {
        (self.timeout.as_millis() as u64)
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            .max(1)
    }
}

/// The shared wasmtime engine and the thread that advances its epoch.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// An engine with epoch interruption (for time limits) and without component-model async
    /// support (which slows every synchronous call).
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.concurrency_support(false);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;
        let ticker = EpochTicker::start(&engine);
        Ok(Self {
            engine,
            _ticker: Arc::new(ticker),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component binary for this engine.
    pub(crate) fn compile(&self, name: &str, wasm: &[u8]) -> anyhow::Result<Component> {
        Component::new(&self.engine, wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling component `{name}`"))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasmq-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
