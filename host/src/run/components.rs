//! Loading the manifest's components: what each is granted, and compiling it (through the
//! compiled-component cache) off the async threads.

use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::component::Component;

use crate::engine::Broker;
use crate::manifest::ComponentConfig;
use crate::runtime::{
    CacheOutcome, ComponentOptions, ConsumerComponent, InstanceReuse, ProducerComponent, Runtime,
    SendTarget, digest,
};

/// A component file read from disk, with its digest.
pub(super) struct ComponentFile {
    pub wasm: Vec<u8>,
    pub digest: String,
}

impl ComponentFile {
    /// Reads `component`'s source.
    pub(super) fn read(component: &ComponentConfig) -> Result<Self> {
        let wasm = std::fs::read(&component.source).with_context(|| {
            format!(
                "reading component `{}` from {}",
                component.name,
                component.source.display()
            )
        })?;
        let digest = digest(&wasm);
        Ok(Self { wasm, digest })
    }
}

/// The first 12 hex digits of a digest, for logs.
pub(super) fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// What the manifest grants `component`: its limits, environment, bindings and outbound hosts.
pub(super) fn options(component: &ComponentConfig, broker: Arc<dyn Broker>) -> ComponentOptions {
    ComponentOptions {
        limits: component.limits,
        env: component.env.clone().into_iter().collect(),
        send_target: Some(SendTarget {
            publisher: Arc::new(broker),
            bindings: Arc::new(component.bindings.clone()),
        }),
        allowed_outbound_hosts: component.allowed_outbound_hosts.clone(),
        reuse: component
            .consumer
            .as_ref()
            .map_or(InstanceReuse::FRESH, |consumer| consumer.reuse),
    }
}

/// The host's two runtimes: consumers and producers each have their own engine and instance
/// pool, so a flood of requests on producer routes cannot take the instances that consumers
/// need (and the other way round).
#[derive(Clone)]
pub(crate) struct Runtimes {
    pub consumers: Runtime,
    pub producers: Runtime,
}

impl Runtimes {
    /// Two runtimes set up as `config` says (they share its compiled-component cache).
    pub(super) fn new(config: &crate::runtime::RuntimeConfig) -> Result<Self> {
        Ok(Self {
            consumers: Runtime::with_config(config)?,
            producers: Runtime::with_config(config)?,
        })
    }
}

/// A component compiled for the world its manifest entry asks for.
pub(super) enum Loaded {
    Consumer(ConsumerComponent),
    Producer(ProducerComponent),
}

/// A component compiled for the engine of its world and checked against that world, not yet
/// given what the manifest grants it.
pub(super) struct Compiled {
    /// The digest of its file.
    pub digest: String,
    component: Component,
    /// Whether it came from the cache.
    pub outcome: CacheOutcome,
    /// How long compiling (or reading the cache) and checking it took.
    pub took: std::time::Duration,
}

/// The runtime of `component`'s world.
fn runtime_of<'a>(runtimes: &'a Runtimes, component: &ComponentConfig) -> &'a Runtime {
    if component.route.is_some() {
        &runtimes.producers
    } else {
        &runtimes.consumers
    }
}

/// How often a compile that is still running says so.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Compiles (or loads from the cache) `component` on a blocking thread and checks it against
/// its world: `consumer` when it has a consumer, `http-producer` when it has a route. A long
/// compile (a Python or JavaScript guest takes tens of seconds) logs a line every few seconds.
pub(super) async fn compile(
    runtimes: &Runtimes,
    component: &ComponentConfig,
    file: ComponentFile,
) -> Result<Compiled> {
    let runtime = runtime_of(runtimes, component).clone();
    let config = component.clone();
    let bytes = file.wasm.len();
    tracing::info!(component = %component.name, bytes, "loading component");
    let started = std::time::Instant::now();
    let mut work = tokio::task::spawn_blocking(move || {
        let (compiled, outcome) = runtime.load(&config.name, &file.wasm)?;
        link_with(&runtime, &config, &compiled, ComponentOptions::default())?;
        Ok(Compiled {
            digest: file.digest,
            component: compiled,
            outcome,
            took: started.elapsed(),
        })
    });
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            done = &mut work => return done.context("compiling a component")?,
            _ = progress.tick() => tracing::info!(
                component = %component.name,
                bytes,
                elapsed_s = started.elapsed().as_secs(),
                "still compiling"
            ),
        }
    }
}

/// Links a compiled component with what the manifest grants it.
pub(super) fn link(
    runtimes: &Runtimes,
    component: &ComponentConfig,
    compiled: &Compiled,
    broker: Arc<dyn Broker>,
) -> Result<Loaded> {
    let runtime = runtime_of(runtimes, component);
    link_with(
        runtime,
        component,
        &compiled.component,
        options(component, broker),
    )
}

fn link_with(
    runtime: &Runtime,
    component: &ComponentConfig,
    compiled: &Component,
    options: ComponentOptions,
) -> Result<Loaded> {
    let name = &component.name;
    Ok(if component.route.is_some() {
        Loaded::Producer(ProducerComponent::from_compiled(
            runtime, name, compiled, options,
        )?)
    } else {
        Loaded::Consumer(ConsumerComponent::from_compiled(
            runtime, name, compiled, options,
        )?)
    })
}
