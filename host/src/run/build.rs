//! Components' `build` commands: run in the manifest's folder through `sh -c`, their output
//! streamed line by line (prefixed with the component's name) so that a slow compiler shows
//! progress, and the last lines kept for the error when it fails.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::manifest::ComponentConfig;

/// Lines of a failed build's output repeated in its error.
const TAIL_LINES: usize = 20;

/// Runs `component`'s build command, if it has one, in `dir`; returns how long it took.
#[tracing::instrument(name = "build", skip_all, fields(component = %component.name))]
pub async fn build(dir: &Path, component: &ComponentConfig) -> Result<Option<Duration>> {
    let Some(command) = &component.build else {
        return Ok(None);
    };
    tracing::info!(%command, "building");
    let started = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "running the build command of component `{}`",
                component.name
            )
        })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let name = component.name.as_str();
    let (out_tail, err_tail) = tokio::join!(stream(name, stdout), stream(name, stderr));
    let status = child
        .wait()
        .await
        .context("waiting for the build command")?;
    if !status.success() {
        let tail: Vec<String> = out_tail.into_iter().chain(err_tail).collect();
        bail!(
            "the build command of component `{name}` failed ({status}): {command}\n{}",
            tail.join("\n")
        );
    }
    let took = started.elapsed();
    tracing::info!(took_ms = took.as_millis() as u64, "built");
    Ok(Some(took))
}

/// Copies `output` to standard error line by line as `NAME | line`; returns its last lines.
async fn stream(name: &str, output: Option<impl AsyncRead + Unpin>) -> VecDeque<String> {
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let Some(output) = output else { return tail };
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{name} | {line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail
}
