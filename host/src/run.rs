//! `host run`: opens the queues, starts a dispatcher per consumer component and serves the
//! HTTP API, all from one manifest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatch::{ConsumerStats, Dispatcher};
use crate::engine::{Broker, BrokerError, RedbBroker, RedbOptions};
use crate::http;
use crate::http::{ProducerRoute, ProducerRoutes};
use crate::manifest::{ComponentConfig, Manifest};
use crate::runtime::{
    ComponentLimits, ComponentOptions, ConsumerComponent, ProducerComponent, Runtime, SendTarget,
};

/// How often expired leases, retention and dedup windows are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A host started from a manifest.
pub struct RunningHost {
    addr: SocketAddr,
    broker: Arc<RedbBroker>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningHost {
    /// The address the HTTP API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queues.
    pub fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    /// Stops taking new batches, lets running ones finish and settle, stops the HTTP server
    /// and closes the database.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        match Arc::try_unwrap(self.broker) {
            Ok(broker) => broker.close().await,
            Err(_) => Ok(()),
        }
    }
}

/// Builds what the manifest asks to build, opens the queues, loads every component and starts
/// serving. Any problem (a failed build, a component that does not compile or is not a
/// consumer) stops the start with an error naming the component.
pub async fn start(manifest: &Manifest) -> Result<RunningHost> {
    build_components(manifest).await?;
    manifest.check_sources()?;

    let data_dir = &manifest.host.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
    let broker = Arc::new(RedbBroker::open(
        data_dir.join("queues.redb"),
        RedbOptions::default(),
    )?);
    sync_queues(&*broker, manifest).await?;

    let runtime = Runtime::new()?;
    let (shutdown, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let consumer_stats = ConsumerStats::default();
    let mut producers = Vec::new();
    for component in manifest.components.values() {
        if let Some(route) = &component.route {
            let options = component_options(component, broker.clone());
            let loaded = compile(&runtime, component, move |runtime, name, wasm| {
                ProducerComponent::new(runtime, name, wasm, options)
            })
            .await?;
            tracing::info!(component = %component.name, %route, "serving producer");
            producers.push(ProducerRoute {
                route: route.clone(),
                component: loaded,
                requires_token: component.route_requires_token,
            });
        }
        let Some(consumer) = &component.consumer else {
            continue;
        };
        let options = component_options(component, broker.clone());
        let loaded = compile(&runtime, component, move |runtime, name, wasm| {
            ConsumerComponent::new(runtime, name, wasm, options)
        })
        .await?;
        let dispatcher = Dispatcher::new(
            broker.clone(),
            consumer.queue.clone(),
            consumer.settings.clone(),
            loaded,
        )
        .with_concurrency(consumer.max_concurrency.unwrap_or(1))
        .with_stats(consumer_stats.clone());
        tasks.spawn(dispatcher.run(stopped.clone()));
    }
    tasks.spawn(sweep(broker.clone(), stopped.clone()));

    let listener = tokio::net::TcpListener::bind(manifest.host.listen)
        .await
        .with_context(|| format!("listening on {}", manifest.host.listen))?;
    let addr = listener.local_addr()?;
    let token = manifest.host.api_token.clone().or_else(|| {
        std::env::var("WASMQ_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    if token.is_none() && !manifest.host.listen.ip().is_loopback() {
        tracing::warn!(listen = %manifest.host.listen, "the API listens beyond loopback without a token; set [host] api_token or WASMQ_API_TOKEN");
    }
    let router = http::router(http::ServeConfig {
        broker: broker.clone(),
        pull_queues: manifest.pull_consumers.clone(),
        token,
        producers: ProducerRoutes::new(producers),
        consumer_stats,
    });
    let mut stop_http = stopped.clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop_http.wait_for(|stop| *stop).await;
        });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "the HTTP server failed");
        }
    });
    tracing::info!(%addr, queues = manifest.queues.len(), components = manifest.components.len(), "wasmq host running");
    Ok(RunningHost {
        addr,
        broker,
        shutdown,
        tasks,
    })
}

/// Runs each component's `build` command in the manifest's folder.
async fn build_components(manifest: &Manifest) -> Result<()> {
    for component in manifest.components.values() {
        let Some(command) = &component.build else {
            continue;
        };
        tracing::info!(component = %component.name, %command, "building");
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&manifest.dir)
            .output()
            .await
            .with_context(|| {
                format!(
                    "running the build command of component `{}`",
                    component.name
                )
            })?;
        if !output.status.success() {
            bail!(
                "the build command of component `{}` failed ({}): {command}\n{}",
                component.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
    }
    Ok(())
}

/// Creates the manifest's queues that do not exist and updates the settings of those that do.
/// Dead-letter queues are set in a second pass, once every queue exists.
async fn sync_queues(broker: &dyn Broker, manifest: &Manifest) -> Result<()> {
    for (name, settings) in &manifest.queues {
        let mut without_dlq = settings.clone();
        without_dlq.consumer.dead_letter_queue = None;
        match broker.create_queue(name, without_dlq).await {
            Ok(_) => tracing::info!(queue = %name, "queue created"),
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
    let declared: Vec<_> = broker
        .list_queues()
        .await?
        .into_iter()
        .filter(|q| !manifest.queues.contains_key(&q.name))
        .map(|q| q.name)
        .collect();
    if !declared.is_empty() {
        tracing::info!(queues = ?declared, "queues in the database but not in the manifest are kept");
    }
    Ok(())
}

/// What the manifest grants `component`: its limits, environment, bindings and outbound hosts.
fn component_options(component: &ComponentConfig, broker: Arc<dyn Broker>) -> ComponentOptions {
    ComponentOptions {
        limits: ComponentLimits {
            timeout: component.limits.timeout,
            memory_bytes: usize::try_from(component.limits.memory_bytes).unwrap_or(usize::MAX),
        },
        env: component.env.clone().into_iter().collect(),
        send_target: Some(SendTarget {
            broker,
            bindings: Arc::new(component.bindings.clone()),
            handle: tokio::runtime::Handle::current(),
        }),
        allowed_outbound_hosts: component.allowed_outbound_hosts.clone(),
    }
}

/// Reads `component`'s file and compiles it with `load` on a blocking thread.
async fn compile<T: Send + 'static>(
    runtime: &Runtime,
    component: &ComponentConfig,
    load: impl FnOnce(&Runtime, &str, &[u8]) -> Result<T> + Send + 'static,
) -> Result<T> {
    let wasm = std::fs::read(&component.source).with_context(|| {
        format!(
            "reading component `{}` from {}",
            component.name,
            component.source.display()
        )
    })?;
    let runtime = runtime.clone();
    let name = component.name.clone();
    tokio::task::spawn_blocking(move || load(&runtime, &name, &wasm))
        .await
        .context("compiling a component")?
}

async fn sweep(broker: Arc<RedbBroker>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        match broker.sweep().await {
            Ok(report) if report != Default::default() => {
                tracing::info!(?report, "swept expired leases, messages and dedup keys")
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "sweep failed"),
        }
    }
}
