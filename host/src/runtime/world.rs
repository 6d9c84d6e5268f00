//! The worlds a component can target, and the one component type over them.
//!
//! A component is loaded the same way whatever its world: compiled (through the cache),
//! checked to export its world's entry point, linked with the common imports plus its world's
//! own, and kept as an `InstancePre` to instantiate per call. [`LoadedComponent`] does that
//! once; a [`World`] says only what differs (its id, its extra imports, its typed bindings),
//! as Spin's `Trigger` does for trigger types.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use anyhow::Context;
use wasmtime::component::{Component, InstancePre, Linker};

use super::guest::{self, ComponentOptions, Guest, GuestState};
use super::{ComponentLimits, Runtime};

/// The worlds of `wit/`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorldId {
    /// `consumer`: exports `wasmq:queues/handler`, handed batches of a queue.
    Consumer,
    /// `http-producer`: exports `wasi:http/incoming-handler`, handed requests on a route.
    HttpProducer,
}

impl WorldId {
    /// The world's name in `wit/`.
    pub fn name(self) -> &'static str {
        match self {
            WorldId::Consumer => "consumer",
            WorldId::HttpProducer => "http-producer",
        }
    }

    /// What a component of this world is called in messages ("… is not a consumer").
    pub fn role(self) -> &'static str {
        match self {
            WorldId::Consumer => "consumer",
            WorldId::HttpProducer => "producer",
        }
    }

    /// The interface the world exports, as a prefix of the exported name (the producer
    /// accepts any 0.2 patch version of `wasi:http`).
    fn export(self) -> &'static str {
        match self {
            WorldId::Consumer => "wasmq:queues/handler@0.1.0",
            WorldId::HttpProducer => "wasi:http/incoming-handler@0.2.",
        }
    }
}

impl fmt::Display for WorldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What differs between worlds when a component is loaded.
pub trait World: 'static {
    /// Which world this is.
    const ID: WorldId;
    /// The world's typed, pre-linked bindings.
    type Pre: Clone + Send + Sync;
    /// What a component of this world keeps between calls (consumers: warm instances).
    type Idle: Default + Send + Sync + 'static;
    /// Adds the imports of this world beyond the ones every component gets.
    fn add_imports(linker: &mut Linker<GuestState>) -> anyhow::Result<()>;
    /// Types `instance` as this world (fails if an export has the wrong shape).
    fn bind(instance: InstancePre<GuestState>) -> wasmtime::Result<Self::Pre>;
}

/// A component compiled, checked against its world `W` and linked once; instantiated for
/// calls as its world says (clones share what it keeps between calls).
pub struct LoadedComponent<W: World> {
    pub(super) guest: Guest,
    pub(super) pre: W::Pre,
    pub(super) idle: Arc<W::Idle>,
    world: PhantomData<W>,
}

impl<W: World> Clone for LoadedComponent<W> {
    fn clone(&self) -> Self {
        Self {
            guest: self.guest.clone(),
            pre: self.pre.clone(),
            idle: self.idle.clone(),
            world: PhantomData,
        }
    }
}

impl<W: World> LoadedComponent<W> {
    /// Compiles `wasm` (a component binary, through the runtime's cache if it has one) and
    /// checks it against the world.
    pub fn new(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        options: ComponentOptions,
    ) -> anyhow::Result<Self> {
        let (component, _) = runtime.load(name, wasm)?;
        Self::from_compiled(runtime, name, &component, options)
    }

    /// Links an already compiled component and checks it against the world: it must export
    /// the world's entry point (checked first, so that a component of another world is named
    /// as such before any import is looked at) and import nothing the host lacks.
    pub fn from_compiled(
        runtime: &Runtime,
        name: &str,
        component: &Component,
        options: ComponentOptions,
    ) -> anyhow::Result<Self> {
        let (world, export) = (W::ID.role(), W::ID.export());
        let found = component
            .component_type()
            .exports(runtime.engine())
            .any(|(item, _)| item.starts_with(export));
        anyhow::ensure!(
            found,
            "component `{name}` is not a {world}: it must export `{export}…`"
        );
        let mut linker = guest::linker(runtime)?;
        W::add_imports(&mut linker)?;
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("component `{name}` imports something the host does not provide")
            })?;
        let pre = W::bind(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("component `{name}` is not a {world}: `{export}…` must have `handle`")
            })?;
        Ok(Self {
            guest: Guest::new(runtime, name, options),
            pre,
            idle: Arc::default(),
            world: PhantomData,
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.guest.name
    }

    /// Its limits.
    pub fn limits(&self) -> ComponentLimits {
        self.guest.options.limits
    }
}
