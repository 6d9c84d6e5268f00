//! `wasmq bench startup` and `wasmq bench swap`: how long `wasmq run` takes to start with a cold
//! and a warm compiled-component cache, and how long a hot swap takes from the file change to
//! the first batch handled by the new version.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::tempdir;
use crate::engine::SendRequest;
use crate::manifest::{self, Manifest};
use crate::run;

/// What `wasmq bench startup` measures.
#[derive(Debug, Clone)]
pub struct StartupBench {
    /// The manifest to start (its `build` commands are skipped: builds are not the host's time).
    pub manifest: PathBuf,
    /// Starts per cache state.
    pub runs: u32,
}

/// Starts the manifest's host `runs` times with an empty cache and `runs` times with a warm
/// one, each on a fresh data folder, and prints the times.
pub async fn run_startup(bench: &StartupBench) -> Result<()> {
    let mut manifest = manifest::load(&bench.manifest)?;
    for component in manifest.components.values_mut() {
        component.build = None;
    }
    manifest.host.listen = "127.0.0.1:0".parse()?;
    let dir = tempdir()?;
    println!(
        "wasmq startup bench: {} ({} components, build commands skipped)",
        bench.manifest.display(),
        manifest.components.len()
    );
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for run in 0..bench.runs {
        let data = dir.join(format!("run-{run}"));
        let _ = std::fs::remove_dir_all(&data);
        manifest.host.data_dir = data.clone();
        cold.push(start_and_stop(&manifest).await?);
        // Same folder again: queues exist, compiled components are cached.
        warm.push(start_and_stop(&manifest).await?);
        std::fs::remove_dir_all(&data).ok();
    }
    print_times("cold start (empty cache, new database)", &cold);
    print_times("warm start (cached components, existing database)", &warm);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn start_and_stop(manifest: &Manifest) -> Result<Duration> {
    let started = Instant::now();
    let host = run::start(manifest).await?;
    let elapsed = started.elapsed();
    host.shutdown().await?;
    Ok(elapsed)
}

fn print_times(label: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "  {label}: median {:.0} ms, min {:.0} ms, max {:.0} ms ({} runs)",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
}

/// What `wasmq bench swap` measures.
#[derive(Debug, Clone)]
pub struct SwapBench {
    /// The consumer's first version (the `worker` example).
    pub v1: PathBuf,
    /// Its second version: must forward every message to its `OUT` binding (the `fanout`
    /// example), which is how the bench sees it take over.
    pub v2: PathBuf,
    /// Swaps measured per trigger.
    pub swaps: u32,
}

/// Swaps v1 → v2 repeatedly, triggered by `--watch` (a file rename) and by `POST /reload`-style
/// reloads, with both versions already in the compiled-component cache, and prints the time
/// from the trigger to the first message handled by v2.
pub async fn run_swap(bench: &SwapBench) -> Result<()> {
    let read = |path: &Path| {
        std::fs::read(path)
            .with_context(|| format!("reading {} (build the guests first)", path.display()))
    };
    let (v1, v2) = (read(&bench.v1)?, read(&bench.v2)?);
    let dir = tempdir()?;
    let source = dir.join("consumer.wasm");
    install(&source, &v1)?;
    let manifest_path = dir.join("manifest.toml");
    std::fs::write(
        &manifest_path,
        r#"
[host]
data_dir = "data"
listen = "127.0.0.1:0"

[queues.jobs]
[queues.out]

[components.consumer]
source = "consumer.wasm"
consumer = { queue = "jobs", max_batch_size = 10, max_batch_timeout = 0 }
producers = { OUT = "out" }
"#,
    )?;
    let manifest = manifest::load(&manifest_path)?;
    let mut host = run::start(&manifest).await?;
    // Both versions compiled once, so the swaps below measure swapping, not compiling.
    host.runtime().load("consumer", &v2)?;
    println!(
        "wasmq swap bench: {} -> {}, both in the compiled-component cache",
        bench.v1.display(),
        bench.v2.display()
    );

    let mut by_reload = Vec::new();
    for _ in 0..bench.swaps {
        install(&source, &v2)?;
        let started = Instant::now();
        host.reload().await?;
        by_reload.push(first_batch_on_v2(&host, started).await?);
        install(&source, &v1)?;
        host.reload().await?;
    }
    host.watch()?;
    let mut by_watch = Vec::new();
    for _ in 0..bench.swaps {
        let started = Instant::now();
        install(&source, &v2)?;
        by_watch.push(first_batch_on_v2(&host, started).await?);
        install(&source, &v1)?;
        // Let the watcher swap back before the next round.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    host.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    print_times("reload to first batch on the new version", &by_reload);
    print_times(
        "file change (--watch, 50 ms debounce) to first batch on the new version",
        &by_watch,
    );
    Ok(())
}

/// Replaces the component file atomically, as a build tool would.
fn install(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Sends a message every millisecond until one reaches `out` (v2 forwards, v1 does not);
/// returns the time since `started`.
async fn first_batch_on_v2(host: &run::RunningHost, started: Instant) -> Result<Duration> {
    let broker = host.broker();
    let before = broker.metrics("out").await?.sent;
    loop {
        broker.send("jobs", SendRequest::text("probe")).await?;
        if broker.metrics("out").await?.sent > before {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "v2 never took over"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
