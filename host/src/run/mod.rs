//! `wasmq run`: opens the queues, starts a dispatcher per consumer component, serves the
//! producer routes and the HTTP API, all from one manifest — and applies the manifest again
//! while running (`--watch`, `POST /reload`, SIGHUP).

pub mod build;
mod components;
mod supervisor;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use self::components::Runtimes;
use self::supervisor::Supervisor;
use crate::config::ConfigErrors;
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
    /// Building, compiling and starting the components, from [`launch`] until
    /// [`RunningHost::ready`] has seen it finish.
    loading: Option<JoinHandle<Result<Ready>>>,
}

/// The components of a host that started.
#[derive(Debug)]
pub struct Ready {
    /// How many components serve.
    pub components: usize,
    /// From the launch until they all served (builds included).
    pub took: Duration,
}

impl std::fmt::Display for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.components == 1 { "" } else { "s" };
        write!(
            f,
            "{} component{s} serving after {:.1} s",
            self.components,
            self.took.as_secs_f64()
        )
    }
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

    /// Waits until the components of the launch are built, compiled and serving. The error
    /// names each component that failed and why (those that loaded keep serving, and a reload
    /// may fix the others). Only the first call waits; a later one is an error.
    pub async fn ready(&mut self) -> Result<Ready> {
        let loading = self
            .loading
            .as_mut()
            .context("the host's start was already awaited")?;
        // Taken only once finished: if this wait is cut short (Ctrl-C), `shutdown` still finds
        // the loading task and stops it.
        let ready = loading.await.context("loading the components");
        self.loading = None;
        ready?
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
        if let Some(loading) = self.loading.take() {
            loading.abort();
            let _ = loading.await;
        }
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

/// [`launch`]es the host and waits until its components serve ([`RunningHost::ready`]). If
/// one fails (a failed build, a file that is not a component, a component of the wrong world),
/// the host is shut down and the error names the manifest, the line and the key; messages
/// accepted meanwhile stay in their queues.
pub async fn start(manifest: &Manifest) -> Result<RunningHost> {
    let mut host = launch(manifest).await?;
    match host.ready().await {
        Ok(_) => Ok(host),
        Err(err) => {
            if let Err(stop) = host.shutdown().await {
                tracing::warn!(
                    error = format!("{stop:#}"),
                    "shutting down after a failed start"
                );
            }
            Err(err)
        }
    }
}

/// Opens the queues (creating and configuring the manifest's), listens, and builds, compiles
/// and starts the components in the background: sends are accepted at once, a producer route
/// answers 503 (`starting`, with `Retry-After`) until its component serves, and each consumer
/// starts taking batches as soon as its component is loaded. [`RunningHost::ready`] waits for
/// the components.
#[tracing::instrument(name = "start", skip_all, fields(manifest = %manifest.path.display()))]
pub async fn launch(manifest: &Manifest) -> Result<RunningHost> {
    let data_dir = &manifest.host.data_dir;
    let runtimes = Runtimes::new(&RuntimeConfig {
        cache_dir: manifest
            .host
            .component_cache
            .then(|| data_dir.join("cache")),
        pooling_allocator: manifest.host.pooling_allocator,
        ..RuntimeConfig::default()
    })?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
    let broker = open_queues(manifest).await?;
    supervisor::sync_queues(&*broker, manifest).await?;
    let stats = ConsumerStats::default();
    let supervisor = Arc::new(Supervisor::new(
        runtimes.clone(),
        broker.clone(),
        manifest,
        stats.clone(),
    ));
    supervisor.producers().starting(
        manifest
            .components
            .values()
            .filter_map(|c| Some((c.route.clone()?, c.name.clone())))
            .collect(),
    );
    let loading =
        tokio::spawn(load_components(manifest.clone(), supervisor.clone()).in_current_span());

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
    tracing::info!(%addr, storage = ?manifest.host.storage, queues = manifest.queues.len(), components = manifest.components.len(), pooling = runtimes.consumers.pooling(), "wasmq host listening; loading components");
    Ok(RunningHost {
        loading: Some(loading),
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

/// Runs each component's `build` command in the manifest's folder, then compiles and starts
/// every component. Any failure is an error naming the component's `source` in the manifest.
async fn load_components(manifest: Manifest, supervisor: Arc<Supervisor>) -> Result<Ready> {
    let started = std::time::Instant::now();
    let built = async {
        for component in manifest.components.values() {
            build::build(&manifest.dir, component).await?;
        }
        Ok::<_, anyhow::Error>(manifest.check_sources()?)
    };
    if let Err(err) = built.await {
        // Nothing will serve the routes that were starting.
        supervisor.producers().replace(Vec::new());
        return Err(err);
    }
    let report = supervisor.apply(&manifest).await?;
    let errors = report
        .failed
        .iter()
        .map(|failed| {
            let source = manifest.components[&failed.component].source.display();
            manifest.source_error(&failed.component, format!("{source}: {}", failed.error))
        })
        .collect();
    if let Some(errors) = ConfigErrors::new(errors) {
        return Err(errors.into());
    }
    let ready = Ready {
        components: report.started.len(),
        took: started.elapsed(),
    };
    tracing::info!(
        components = ready.components,
        took_ms = ready.took.as_millis() as u64,
        "components serving"
    );
    Ok(ready)
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
