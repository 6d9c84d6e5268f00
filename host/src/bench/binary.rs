//! `wasmq bench binary`: the host as a user runs it, seen from outside. It starts the real
//! `wasmq run` process on a manifest with one consumer component, publishes messages through
//! the HTTP API (batches of 100 over keep-alive connections) and stops the clock when the
//! queue reports every message acked; then it measures the engine floor (send 100, then ack
//! the previous 100 and lease 100 in one commit, in this process, no HTTP, no component) on
//! the same storage in the same run, and prints the ratio. The host's CPU time comes from `/proc`, so the publisher's work is
//! not counted in it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::engine::{EngineBench, full_cycle};
use super::{print_latency, publish_over_http, tempdir};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BinaryBench {
    /// The consumer component.
    pub wasm: PathBuf,
    /// Messages per run.
    pub messages: u64,
    /// The consumer's `max_concurrency` (one host and one floor run per value).
    pub concurrency: Vec<u32>,
    /// Keep-alive connections publishing at once.
    pub connections: u64,
}

/// Longest a run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs the binary and the floor for each concurrency and prints the ratios.
pub async fn run_binary(bench: &BinaryBench) -> Result<()> {
    let wasm = std::fs::canonicalize(&bench.wasm)
        .with_context(|| format!("{} (build the guests first)", bench.wasm.display()))?;
    let dir = tempdir()?.join("binary");
    println!(
        "wasmq binary bench: `wasmq run` with {} as the consumer, {} messages of 64 bytes published over HTTP in batches of 100 on {} connections, data in {}",
        wasm.display(),
        bench.messages,
        bench.connections,
        dir.display()
    );
    for &concurrency in &bench.concurrency {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let host = end_to_end(bench, &wasm, &dir, concurrency).await?;
        let floor = full_cycle(
            &dir,
            &EngineBench {
                dir: Some(dir.clone()),
                messages: bench.messages,
                body_bytes: 64,
                backlog: 0,
            },
            u64::from(concurrency),
        )
        .await?;
        println!(
            "  max_concurrency {concurrency}: end to end {host:.0} msgs/s, engine floor ({concurrency} pipeline(s)) {floor:.0} msgs/s: ratio {:.2}",
            host / floor
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One run of the real host; returns its messages per second.
async fn end_to_end(
    bench: &BinaryBench,
    wasm: &std::path::Path,
    dir: &std::path::Path,
    concurrency: u32,
) -> Result<f64> {
    let manifest = dir.join("manifest.toml");
    // A JSON string is a TOML basic string too (same quotes and escapes).
    let source = serde_json::to_string(&wasm.display().to_string())?;
    std::fs::write(
        &manifest,
        format!(
            "[host]\ndata_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n\n[queues.bench]\n\n\
             [components.consumer]\nsource = {source}\n\
             consumer = {{ queue = \"bench\", max_batch_size = 100, max_batch_timeout = 1, max_concurrency = {concurrency} }}\n"
        ),
    )?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(&manifest)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `wasmq run`")?;
    let pid = child.id().context("the host exited at once")?;
    let mut lines = BufReader::new(child.stdout.take().context("the host's stdout")?).lines();
    // The URL comes with the `listening` line, before the components load; only the `ready`
    // line says the host serves (a host whose component fails to load exits instead).
    let (mut base, mut ready) = (None, false);
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            base = Some(url.to_owned());
        }
        if line.starts_with("wasmq host ready") {
            ready = true;
            break;
        }
    }
    let Some(base) = base.filter(|_| ready) else {
        bail!(
            "the host did not start (see `wasmq run {}`)",
            manifest.display()
        );
    };

    let cpu = || host_cpu(pid);
    let cpu_started = cpu()?;
    let started = Instant::now();
    let publishing = tokio::spawn({
        let base = base.clone();
        let (messages, connections) = (bench.messages, bench.connections);
        async move { publish_over_http(&base, "bench", messages, connections).await }
    });
    let client = reqwest::Client::new();
    loop {
        let info: serde_json::Value = client
            .get(format!("{base}/queues/bench"))
            .send()
            .await?
            .json()
            .await?;
        if info["result"]["metrics"]["acked"].as_u64() >= Some(bench.messages) {
            break;
        }
        ensure!(
            started.elapsed() < RUN_LIMIT,
            "not every message was acked in {RUN_LIMIT:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let host_cpu = cpu()?.saturating_sub(cpu_started);
    let publish = publishing.await??;
    // SAFETY: `kill` only sends a signal to the child this function started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    ensure!(
        child.wait().await?.success(),
        "the host did not stop cleanly"
    );
    let rate = bench.messages as f64 / elapsed.as_secs_f64();
    println!(
        "end to end, `wasmq run`, max_batch_size 100, max_concurrency {concurrency}: {rate:.0} msgs/s ({} messages published and acked in {:.2} s); host CPU {:.1} µs per message",
        bench.messages,
        elapsed.as_secs_f64(),
        host_cpu.as_secs_f64() * 1e6 / bench.messages as f64
    );
    print_latency("batch publish", &publish);
    Ok(rate)
}

/// CPU time (user and system) process `pid` has used, from `/proc/PID/stat`.
fn host_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) start with the state (3rd).
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .context("an unexpected /proc stat line")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<u64> {
        Ok(fields.get(i).context("a short /proc stat line")?.parse()?)
    };
    // utime and stime are the 14th and 15th fields.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: `sysconf` reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(total * 1_000_000 / per_second))
}
