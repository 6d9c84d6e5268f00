//! The WebAssembly runtime: one wasmtime [`Engine`] with a wall-clock ticker, components
//! loaded once into [`InstancePre`](wasmtime::component::InstancePre)s, and a fresh store per
//! batch with the component's time and memory limits.

mod bindings;
mod cache;
mod consumer;
mod guest;
mod guest_log;
mod hosts;
mod limiter;
mod outbound;
mod producer;
mod world;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::cache::{CacheOutcome, ComponentCache, digest, user_cache_dir};
pub use self::consumer::Consumer;
pub use self::consumer::{
    BatchInput, BatchRun, ConsumerComponent, Failure, HostBusy, IdleInstances, Instance,
    MAX_CALLS_PER_BATCH,
};
pub use self::guest::{ComponentOptions, GuestState, InstanceReuse, Publish, SendTarget};
pub use self::guest_log::{GuestLog, LogWriter, Stream, flush as flush_guest_log};
pub use self::hosts::AllowedHost;
pub use self::producer::{HttpProducer, ProducerComponent};
pub use self::world::{LoadedComponent, World, WorldId};

/// How often the engine's epoch advances; the granularity of guest time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-component resource limits, for each call (a batch, a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentLimits {
    /// Wall-clock time one call may take, instantiation included, whether the guest computes
    /// or waits in a host call.
    pub timeout: Duration,
    /// Linear memory the component may allocate, in bytes, all its memories together.
    pub memory_bytes: usize,
    /// Table elements, all its tables together (interpreters compiled to Wasm have large
    /// function tables).
    pub table_elements: usize,
    /// Core and component instances it may create.
    pub instances: usize,
    /// Tables it may create.
    pub tables: usize,
    /// Linear memories it may create.
    pub memories: usize,
}

impl ComponentLimits {
    /// Shortest allowed `timeout`.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
    /// Longest allowed `timeout`.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    /// Smallest allowed `memory_bytes`.
    pub const MIN_MEMORY_BYTES: usize = 1 << 20;
    /// Largest allowed `memory_bytes`.
    pub const MAX_MEMORY_BYTES: usize = 4 << 30;
    /// Largest allowed `table_elements`.
    pub const MAX_TABLE_ELEMENTS: u32 = 10_000_000;
    /// Largest allowed `instances`, `tables` and `memories`.
    pub const MAX_COUNT: u32 = 10_000;
}

impl Default for ComponentLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 64 * 1024 * 1024,
            table_elements: 1_000_000,
            instances: 100,
            tables: 100,
            memories: 16,
        }
    }
}

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (none: every load compiles).
    pub cache_dir: Option<PathBuf>,
    /// Use wasmtime's pooling instance allocator, which makes the fresh instance of every batch
    /// and request cheaper. Falls back to the on-demand allocator (with a warning) where the
    /// machine cannot reserve the address space it needs.
    pub pooling_allocator: bool,
    /// With the pooling allocator: how many component instances (and core instances, memories
    /// and tables) the pool holds; an instantiation past that is [`HostBusy`].
    pub instance_slots: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pooling_allocator: false,
            instance_slots: POOL_INSTANCES,
        }
    }
}

/// The shared wasmtime engine, the thread that advances its epoch, and the compiled-component
/// cache.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    cache: Option<ComponentCache>,
    pooling: bool,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// An engine with epoch interruption (guests yield at every tick and are interrupted past
    /// their deadline) and without the component model's concurrency support (which slows
    /// every call); no cache, on-demand allocation.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_config(&RuntimeConfig::default())
    }

    /// A runtime set up as `config` says.
    pub fn with_config(config: &RuntimeConfig) -> anyhow::Result<Self> {
        let (engine, pooling) = if config.pooling_allocator {
            match engine(Some(config.instance_slots)) {
                Ok(engine) => (engine, true),
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "the pooling allocator is not available here; using on-demand allocation"
                    );
                    (engine(None)?, false)
                }
            }
        } else {
            (engine(None)?, false)
        };
        let ticker = EpochTicker::start(&engine);
        Ok(Self {
            engine,
            cache: config.cache_dir.clone().map(ComponentCache::new),
            pooling,
            _ticker: Arc::new(ticker),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles a component binary for this engine, or loads it from the cache.
    pub fn load(&self, name: &str, wasm: &[u8]) -> anyhow::Result<(Component, CacheOutcome)> {
        check_component_header(name, wasm)?;
        match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, name, wasm),
            None => {
                let component = Component::new(&self.engine, wasm)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("compiling component `{name}`"))?;
                Ok((component, CacheOutcome::Disabled))
            }
        }
    }
}

/// Refuses, with a message that says what the file is instead, bytes that are not a
/// WebAssembly component: not WebAssembly at all, or a core module (built for `wasm32-wasip1`
/// or `wasm32-unknown-unknown`, or not yet turned into a component).
fn check_component_header(name: &str, wasm: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const MODULE_VERSION: &[u8] = &[1, 0, 0, 0];
    if !wasm.starts_with(MAGIC) {
        anyhow::bail!(
            "component `{name}` is not WebAssembly: the file does not start with `\\0asm` \
             (is `source` the built `.wasm` file?)"
        );
    }
    if wasm.get(4..8) == Some(MODULE_VERSION) {
        anyhow::bail!(
            "component `{name}` is a core WebAssembly module, not a component: build it for \
             `wasm32-wasip2`, or wrap it with `wasm-tools component new`"
        );
    }
    Ok(())
}

/// Default instance slots of each pooling allocator (consumers and producers have one each):
/// enough for the host-wide batch ceiling, or for every producer route at its concurrency cap,
/// with room for multi-module components (Python, JavaScript).
const POOL_INSTANCES: u32 = 1000;

/// An engine; with `pool_slots`, on the pooling allocator with that many slots.
fn engine(pool_slots: Option<u32>) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.concurrency_support(false);
    if let Some(slots) = pool_slots {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .total_stacks(slots)
            // Interpreters compiled to Wasm have large function tables and instances.
            .table_elements(200_000)
            .max_tables_per_module(4)
            .max_core_instance_size(16 << 20)
            .max_component_instance_size(16 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_component_is_named() {
        let text = check_component_header("w", b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(text.to_string().contains("is not WebAssembly"), "{text}");
        let module = wat::parse_str("(module)").unwrap();
        let text = check_component_header("w", &module).unwrap_err();
        assert!(
            text.to_string().contains("core WebAssembly module"),
            "{text}"
        );
        let component = wat::parse_str("(component)").unwrap();
        check_component_header("w", &component).unwrap();
    }
}
