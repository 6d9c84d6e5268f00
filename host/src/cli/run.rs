//! `wasmq run`: starts the queues, consumer components and HTTP API of a manifest and serves
//! until SIGINT or SIGTERM (Ctrl-C). The first signal finishes the running batches; a second
//! one stops at once, with an error.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{manifest, run};

/// `wasmq run [MANIFEST] [--watch]`.
#[derive(Debug, Args)]
pub(super) struct RunCommand {
    /// The manifest.
    #[arg(default_value = "manifest.toml")]
    manifest: PathBuf,
    /// Rebuild a component when its `watch` sources change, and reload when the manifest or
    /// a component file changes (also: SIGHUP, POST /reload).
    #[arg(long)]
    watch: bool,
}

impl RunCommand {
    /// Starts the host and serves until stopped.
    pub(super) async fn run(self) -> Result<()> {
        let manifest = manifest::load(&self.manifest)?;
        // Listen for signals before announcing the host, so a signal right after the
        // announcement is a clean stop rather than the default (immediate) death.
        let mut signals = StopSignals::install()?;
        let mut host = run::launch(&manifest).await?;
        if self.watch {
            host.watch()?;
        }
        println!(
            "wasmq host listening on http://{} (Ctrl-C stops)",
            host.addr()
        );
        tokio::select! {
            ready = host.ready() => {
                match ready {
                    Ok(ready) => println!("wasmq host ready: {ready}"),
                    // While watching, the host stays up: fixing the source loads it.
                    Err(err) if self.watch => eprintln!("error: {err:#}\n(still running: --watch loads the component once it is fixed)"),
                    Err(err) => {
                        host.shutdown().await?;
                        return Err(err);
                    }
                }
                signals.next().await;
            }
            _ = signals.next() => {}
        }
        println!("stopping: finishing running batches");
        tokio::select! {
            result = host.shutdown() => result,
            _ = signals.next() => bail!("stopped at once on a second signal"),
        }
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
