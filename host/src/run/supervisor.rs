//! The supervisor: the set of running consumers and served producers, and how a manifest is
//! applied to it — at start, and again on every reload (hot swap).
//!
//! Applying a manifest compiles every new or changed component first (off the async threads,
//! through the cache), then swaps each one in atomically: a consumer's next batch runs on the
//! new component while batches already running finish on the old one; the producer table is
//! replaced whole. A component that fails to load leaves its previous version serving.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinHandle;

use super::components::{self, Compiled, ComponentFile, Loaded, Runtimes, short};
use crate::dispatch::{ConsumerSlot, ConsumerSpec, ConsumerStats, Dispatcher};
use crate::engine::{Broker, BrokerError, Clock, SystemClock};
use crate::http::wire::{FailedComponent, ReloadReport};
use crate::http::{ProducerRoute, ProducerRoutes, QueueConsumers, Wiring};
use crate::manifest::{self, ComponentConfig, Manifest};
use crate::metrics::{ComponentLoad, ComponentStats};
use crate::runtime::CacheOutcome;

/// One loaded component and what it was loaded from.
struct Running {
    config: ComponentConfig,
    digest: String,
    kind: RunningKind,
}

enum RunningKind {
    Consumer {
        slot: ConsumerSlot,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    },
    Producer(Box<ProducerRoute>),
}

/// Owns the running components of one host.
pub(crate) struct Supervisor {
    runtimes: Runtimes,
    broker: Arc<dyn Broker>,
    stats: ConsumerStats,
    ceiling: Arc<Semaphore>,
    producers: ProducerRoutes,
    consumers: QueueConsumers,
    components: ComponentStats,
    /// The manifest file reloads read.
    manifest_path: PathBuf,
    /// Serialises applications; holds what runs now.
    running: Mutex<BTreeMap<String, Running>>,
    /// The last applied manifest (what `--watch` watches).
    applied: std::sync::Mutex<Arc<Manifest>>,
}

impl Supervisor {
    pub(super) fn new(
        runtimes: Runtimes,
        broker: Arc<dyn Broker>,
        manifest: &Manifest,
        stats: ConsumerStats,
    ) -> Self {
        Self {
            runtimes,
            broker,
            stats,
            ceiling: Arc::new(Semaphore::new(manifest.host.max_batches_in_flight as usize)),
            producers: ProducerRoutes::default(),
            // Wired from the start: the pull API serves while the components still build.
            consumers: QueueConsumers::new(Wiring::of(manifest)),
            components: ComponentStats::default(),
            manifest_path: manifest.path.clone(),
            running: Mutex::new(BTreeMap::new()),
            applied: std::sync::Mutex::new(Arc::new(manifest.clone())),
        }
    }

    /// The manifest applied last.
    pub(super) fn applied(&self) -> Arc<Manifest> {
        self.applied.lock().expect("applied manifest lock").clone()
    }

    /// The producer routes being served.
    pub(super) fn producers(&self) -> ProducerRoutes {
        self.producers.clone()
    }

    /// What the applied manifest wires to each queue.
    pub(super) fn consumers(&self) -> QueueConsumers {
        self.consumers.clone()
    }

    /// How long each component's last load took.
    pub(super) fn component_stats(&self) -> ComponentStats {
        self.components.clone()
    }

    /// Reads the manifest file again and applies it. An invalid manifest changes nothing.
    /// What came of it is kept for the dashboard.
    #[tracing::instrument(name = "reload", skip_all, fields(manifest = %self.manifest_path.display()))]
    pub(super) async fn reload(&self) -> Result<ReloadReport> {
        let outcome = self.try_reload().await;
        self.components.reloaded(outcome.as_ref());
        outcome
    }

    async fn try_reload(&self) -> Result<ReloadReport> {
        let manifest = manifest::load(&self.manifest_path)?;
        manifest.check_sources()?;
        let report = self.apply(&manifest).await?;
        tracing::info!(
            started = ?report.started,
            swapped = ?report.swapped,
            stopped = ?report.stopped,
            failed = report.failed.len(),
            "reloaded {}",
            self.manifest_path.display()
        );
        Ok(report)
    }

    /// Makes the running set match `manifest`: new and changed components are compiled and
    /// started or swapped in, removed ones stopped. A component that fails to load is reported
    /// (and kept off the dashboard's list of loaded versions) while its old version, if any,
    /// keeps serving.
    pub(super) async fn apply(&self, manifest: &Manifest) -> Result<ReloadReport> {
        let mut running = self.running.lock().await;
        let mut report = ReloadReport {
            queues_created: sync_queues(&*self.broker, manifest).await?,
            ..ReloadReport::default()
        };
        self.consumers.replace(Wiring::of(manifest));
        *self.applied.lock().expect("applied manifest lock") = Arc::new(manifest.clone());

        for config in manifest.components.values() {
            let name = &config.name;
            let done = match ComponentFile::read(config) {
                Ok(file)
                    if running
                        .get(name)
                        .is_some_and(|old| old.digest == file.digest && old.config == *config) =>
                {
                    report.unchanged.push(name.clone());
                    continue;
                }
                Ok(file) => components::compile(&self.runtimes, config, file).await,
                Err(err) => Err(err),
            };
            let loaded = done.and_then(|done| {
                let loaded = components::link(&self.runtimes, config, &done, self.broker.clone())?;
                Ok((loaded, done))
            });
            let (loaded, done) = match loaded {
                Ok(loaded) => loaded,
                Err(err) => {
                    let keeps = if running.contains_key(name) {
                        "the old version keeps serving"
                    } else {
                        "it is not running"
                    };
                    tracing::error!(component = %name, error = format!("{err:#}"), "failed to load; {keeps}");
                    self.components.failed(name, format!("{err:#}"));
                    report.failed.push(failed(name, &err));
                    continue;
                }
            };
            self.components.loaded(name, load_record(config, &done));
            let swapped = self.install(&mut running, config, done, loaded);
            if swapped {
                report.swapped.push(name.clone());
            } else {
                report.started.push(name.clone());
            }
        }

        let removed: Vec<String> = running
            .keys()
            .filter(|name| !manifest.components.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(old) = running.remove(&name) {
                stop(&name, old);
                report.stopped.push(name);
            }
        }
        self.components
            .retain(|name| manifest.components.contains_key(name));
        self.producers.replace(
            running
                .values()
                .filter_map(|r| match &r.kind {
                    RunningKind::Producer(route) => Some((**route).clone()),
                    RunningKind::Consumer { .. } => None,
                })
                .collect(),
        );
        Ok(report)
    }

    /// Puts a loaded component in place of the running one of the same name (if any); true if
    /// it replaced one in place.
    fn install(
        &self,
        running: &mut BTreeMap<String, Running>,
        config: &ComponentConfig,
        done: Compiled,
        loaded: Loaded,
    ) -> bool {
        let Compiled {
            digest,
            outcome,
            took,
            ..
        } = done;
        let name = &config.name;
        let previous = running.remove(name);
        let previous_digest = previous.as_ref().map(|p| short(&p.digest).to_owned());
        let (kind, in_place) = match (loaded, previous) {
            (Loaded::Consumer(component), previous) => {
                let consumer = config
                    .consumer
                    .as_ref()
                    .expect("a consumer has a consumer table");
                let spec = ConsumerSpec {
                    component,
                    settings: consumer.settings.clone(),
                    max_concurrency: consumer.max_concurrency.unwrap_or(1),
                };
                match previous {
                    // Same queue: swap in place, running batches finish on the old version.
                    Some(Running {
                        config: old,
                        kind: RunningKind::Consumer { slot, stop, task },
                        ..
                    }) if old.consumer.as_ref().map(|c| &c.queue) == Some(&consumer.queue) => {
                        slot.replace(spec);
                        (RunningKind::Consumer { slot, stop, task }, true)
                    }
                    previous => {
                        let in_place = previous.is_some();
                        if let Some(previous) = previous {
                            stop(name, previous);
                        }
                        (self.start_consumer(&consumer.queue, spec), in_place)
                    }
                }
            }
            (Loaded::Producer(component), previous) => {
                let in_place = previous.is_some();
                if let Some(consumer) =
                    previous.filter(|p| matches!(p.kind, RunningKind::Consumer { .. }))
                {
                    stop(name, consumer);
                }
                let route = ProducerRoute {
                    route: config.route.clone().expect("a producer has a route"),
                    component,
                    requires_token: config.route_requires_token,
                    slots: Arc::new(tokio::sync::Semaphore::new(
                        config.route_max_concurrency as usize,
                    )),
                };
                (RunningKind::Producer(Box::new(route)), in_place)
            }
        };
        match &previous_digest {
            Some(previous) => {
                tracing::info!(component = %name, digest = short(&digest), %previous, cache = ?outcome, load_ms = took.as_millis() as u64, "component swapped")
            }
            None => {
                tracing::info!(component = %name, digest = short(&digest), cache = ?outcome, load_ms = took.as_millis() as u64, "component loaded")
            }
        }
        running.insert(
            name.clone(),
            Running {
                config: config.clone(),
                digest,
                kind,
            },
        );
        in_place
    }

    fn start_consumer(&self, queue: &str, spec: ConsumerSpec) -> RunningKind {
        let max = spec.max_concurrency;
        let dispatcher = Dispatcher::new(
            self.broker.clone(),
            queue,
            spec.settings.clone(),
            spec.component.clone(),
        )
        .with_concurrency(max)
        .with_ceiling(self.ceiling.clone())
        .with_stats(self.stats.clone());
        let slot = dispatcher.slot();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(dispatcher.run(stopped));
        RunningKind::Consumer { slot, stop, task }
    }

    /// Stops every consumer, letting running batches finish, and stops serving producers.
    pub(super) async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        let mut tasks = Vec::new();
        for (_, r) in std::mem::take(&mut *running) {
            if let RunningKind::Consumer { stop, task, .. } = r.kind {
                let _ = stop.send(true);
                tasks.push(task);
            }
        }
        self.producers.replace(Vec::new());
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// What the dashboard shows of a load that succeeded.
fn load_record(config: &ComponentConfig, done: &Compiled) -> ComponentLoad {
    ComponentLoad {
        digest: done.digest.clone(),
        source: config.source.display().to_string(),
        queue: config.consumer.as_ref().map(|c| c.queue.clone()),
        route: config.route.as_ref().map(ToString::to_string),
        at_ms: SystemClock.now_ms(),
        load_seconds: done.took.as_secs_f64(),
        from_cache: done.outcome == CacheOutcome::Hit,
    }
}

fn failed(name: &str, err: &anyhow::Error) -> FailedComponent {
    FailedComponent {
        component: name.to_owned(),
        error: format!("{err:#}"),
    }
}

/// Stops a removed component: a consumer finishes its running batches in the background.
fn stop(name: &str, old: Running) {
    match old.kind {
        RunningKind::Consumer { stop, .. } => {
            let _ = stop.send(true);
            tracing::info!(component = %name, "consumer stopping after its running batches");
        }
        RunningKind::Producer(_) => tracing::info!(component = %name, "producer no longer served"),
    }
}

/// Creates the manifest's queues that do not exist and updates the settings of those that do;
/// returns the names created. Dead-letter queues are set in a second pass, once every queue
/// exists.
pub(super) async fn sync_queues(broker: &dyn Broker, manifest: &Manifest) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for (name, settings) in &manifest.queues {
        let mut without_dlq = settings.clone();
        without_dlq.consumer.dead_letter_queue = None;
        match broker.create_queue(name, without_dlq).await {
            Ok(_) => {
                tracing::info!(queue = %name, "queue created");
                created.push(name.clone());
            }
            Err(BrokerError::QueueExists(_)) => {}
            Err(err) => return Err(err).with_context(|| format!("creating queue `{name}`")),
        }
    }
    for (name, settings) in &manifest.queues {
        broker
            .configure_queue(name, settings.clone())
            .await
            .with_context(|| format!("configuring queue `{name}`"))?;
    }
    Ok(created)
}
