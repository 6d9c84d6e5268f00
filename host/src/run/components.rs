//! Loading the manifest's components: what each is granted, and compiling it (through the
//! compiled-component cache) off the async threads.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::engine::Broker;
use crate::manifest::ComponentConfig;
use crate::runtime::{
    CacheOutcome, ComponentLimits, ComponentOptions, ConsumerComponent, ProducerComponent, Runtime,
    SendTarget, digest,
};

/// A component file read from disk, with its digest.
pub(super) struct ComponentFile {
    pub wasm: Vec<u8>,
    pub digest: String,
}

impl ComponentFile {
    /// Reads `component`'s source.
    pub fn read(component: &ComponentConfig) -> Result<Self> {
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
        limits: ComponentLimits {
            timeout: component.limits.timeout,
            memory_bytes: usize::try_from(component.limits.memory_bytes).unwrap_or(usize::MAX),
            ..ComponentLimits::default()
        },
        env: component.env.clone().into_iter().collect(),
        send_target: Some(SendTarget {
            broker,
            bindings: Arc::new(component.bindings.clone()),
        }),
        allowed_outbound_hosts: component.allowed_outbound_hosts.clone(),
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
    pub fn new(config: &crate::runtime::RuntimeConfig) -> Result<Self> {
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

/// Compiles (or loads from the cache) `component` on a blocking thread and checks it against
/// its world: `consumer` when it has a consumer, `http-producer` when it has a route.
pub(super) async fn load(
    runtimes: &Runtimes,
    component: &ComponentConfig,
    wasm: Vec<u8>,
    broker: Arc<dyn Broker>,
) -> Result<(Loaded, CacheOutcome)> {
    let options = options(component, broker);
    let producer = component.route.is_some();
    let runtime = if producer {
        runtimes.producers.clone()
    } else {
        runtimes.consumers.clone()
    };
    let name = component.name.clone();
    tokio::task::spawn_blocking(move || {
        let (compiled, outcome) = runtime.load(&name, &wasm)?;
        let loaded = if producer {
            Loaded::Producer(ProducerComponent::from_compiled(
                &runtime, &name, &compiled, options,
            )?)
        } else {
            Loaded::Consumer(ConsumerComponent::from_compiled(
                &runtime, &name, &compiled, options,
            )?)
        };
        Ok((loaded, outcome))
    })
    .await
    .context("compiling a component")?
}
