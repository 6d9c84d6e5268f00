//! `wasmq run`: opens the queues, starts a dispatcher per consumer component, serves the
//! producer routes and the HTTP API, all from one manifest — and applies the manifest again
//! while running (`--watch`, `POST /reload`, SIGHUP).

pub mod build;
mod components;
mod supervisor;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use self::components::{ComponentFile, Runtimes};
use self::supervisor::Supervisor;
use crate::dispatch::ConsumerStats;
use crate::engine::{self, Broker, PostgresOptions, RedbOptions};
use crate::http::{self, wire::ReloadReport};
use crate::manifest::{Manifest, Storage};
use crate::runtime::{Runtime, RuntimeConfig};

/// How often expired leases, retention and dedup windows are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Opens the manifest's queues.
async fn open_queues(manifest: &Manifest) -> Result<Arc<dyn Broker>> {
    let storage = match &manifest.host.storage {
        Storage::Redb => engine::Storage::redb(
            manifest.host.data_dir.join("queues.redb"),
            RedbOptions::default(),
        ),
        Storage::Postgres(url) => engine::Storage::postgres(url, PostgresOptions::default()),
    };
    engine::open(storage).await.context("opening the queues")
}

/// A host started from a manifest.
pub struct RunningHost {
    addr: SocketAddr,
    broker: Arc<dyn Broker>,
    supervisor: Arc<Supervisor>,
    runtimes: Runtimes,
    shutdown_timeout: Duration,
    stop_tasks: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningHost {
    /// The address the HTTP server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queues.
    pub fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    /// The runtime (engine, cache) the consumer components run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtimes.consumers
    }

    /// Reads the manifest file again and applies it: new queues and components start, changed
    /// components are swapped in, removed ones stop. An invalid manifest changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport> {
        self.supervisor.reload().await
    }

    /// Watches the manifest and the component files, reloading (debounced) when they change.
    pub fn watch(&mut self) -> Result<()> {
        let watcher = watch::Watcher::start(self.supervisor.clone())?;
        self.tasks.spawn(watcher.run(self.stop_tasks.subscribe()));
        Ok(())
    }

    /// Stops taking new batches, lets running ones finish and settle (for at most the
    /// manifest's `shutdown_timeout`), stops the HTTP server and closes the database. Batches
    /// still running at the deadline are abandoned: their messages are delivered again after
    /// the next start, with the attempt counted.
    pub async fn shutdown(mut self) -> Result<()> {
        let finished =
            tokio::time::timeout(self.shutdown_timeout, self.supervisor.stop_all()).await;
        if finished.is_err() {
            tracing::warn!(timeout = ?self.shutdown_timeout, "batches still running at the shutdown deadline are abandoned; they will be redelivered");
        }
        let _ = self.stop_tasks.send(true);
        while self.tasks.join_next().await.is_some() {}
        drop(self.supervisor);
        // A guest thread past the shutdown deadline may still hold the queues; then they
        // close when it lets go, and every commit it had acknowledged is durable anyway.
        Ok(self.broker.close().await?)
    }
}

/// Builds what the manifest asks to build, compiles every component and checks it against
/// its world, then opens the queues and starts serving. A problem with a component (a failed
/// build, a file that is not a component, a component of the wrong world) stops the start
/// with an error naming the manifest, the line and the key, before anything is stored.
#[tracing::instrument(name = "start", skip_all, fields(manifest = %manifest.path.display()))]
pub async fn start(manifest: &Manifest) -> Result<RunningHost> {
    build_components(manifest).await?;
    manifest.check_sources()?;

    let data_dir = &manifest.host.data_dir;
    let runtimes = Runtimes::new(&RuntimeConfig {
        cache_dir: manifest
            .host
            .component_cache
            .then(|| data_dir.join("cache")),
        pooling_allocator: manifest.host.pooling_allocator,
        ..RuntimeConfig::default()
    })?;
    let mut compiled = BTreeMap::new();
    for config in manifest.components.values() {
        let done = match ComponentFile::read(config) {
            Ok(file) => components::compile(&runtimes, config, file).await,
            Err(err) => Err(err),
        }
        .map_err(|err| {
            let message = format!("{}: {err:#}", config.source.display());
            manifest.source_error(&config.name, message)
        })?;
        compiled.insert(config.name.clone(), done);
    }

    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
    let broker = open_queues(manifest).await?;
    let stats = ConsumerStats::default();
    let supervisor = Arc::new(Supervisor::new(
        runtimes.clone(),
        broker.clone(),
        manifest,
        stats.clone(),
    ));
    supervisor.apply(manifest, Some(compiled)).await?;

    let (stop_tasks, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
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
        consumers: supervisor.consumers(),
        token,
        producers: supervisor.producers(),
        consumer_stats: stats,
        component_stats: supervisor.component_stats(),
        reloader: Some(supervisor.clone()),
        access_log: manifest.host.access_log,
    });
    let open_files = http::raise_open_file_limit();
    let max_connections = http::connection_cap(manifest.host.max_connections as usize, open_files);
    tracing::debug!(?open_files, max_connections, "HTTP connection limit");
    tasks.spawn(http::serve(
        listener,
        router,
        max_connections,
        stopped.clone(),
    ));
    #[cfg(unix)]
    tasks.spawn(reload_on_sighup(supervisor.clone(), stopped));
    tracing::info!(%addr, storage = ?manifest.host.storage, queues = manifest.queues.len(), components = manifest.components.len(), pooling = runtimes.consumers.pooling(), "wasmq host running");
    Ok(RunningHost {
        addr,
        broker,
        supervisor,
        runtimes,
        shutdown_timeout: manifest.host.shutdown_timeout,
        stop_tasks,
        tasks,
    })
}

#[async_trait::async_trait]
impl http::Reloader for Supervisor {
    async fn reload(&self) -> Result<ReloadReport> {
        Supervisor::reload(self).await
    }
}

/// Reloads on every SIGHUP.
#[cfg(unix)]
async fn reload_on_sighup(
    supervisor: Arc<Supervisor>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "SIGHUP cannot trigger reloads");
            return;
        }
    };
    loop {
        tokio::select! {
            Some(()) = hangups.recv() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        tracing::info!("SIGHUP: reloading");
        if let Err(err) = supervisor.reload().await {
            tracing::error!(error = format!("{err:#}"), "reload failed; nothing changed");
        }
    }
}

/// Runs each component's `build` command in the manifest's folder.
async fn build_components(manifest: &Manifest) -> Result<()> {
    for component in manifest.components.values() {
        build::build(&manifest.dir, component).await?;
    }
    Ok(())
}

async fn sweep(broker: Arc<dyn Broker>, mut stopped: tokio::sync::watch::Receiver<bool>) {
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
