//! `host run --watch`: reloads when the manifest or a component file changes. Events are
//! debounced (a build writes a file in several steps; an editor saves through a temporary
//! file), and the folders holding the files are watched rather than the files, so a file
//! replaced by a rename is still seen.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use super::supervisor::Supervisor;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches the files of a running host's manifest.
pub(super) struct Watcher {
    supervisor: Arc<Supervisor>,
    events: mpsc::UnboundedReceiver<PathBuf>,
    watcher: notify::RecommendedWatcher,
    /// The files that matter, canonical.
    files: BTreeSet<PathBuf>,
    /// The folders being watched.
    folders: BTreeSet<PathBuf>,
}

impl Watcher {
    pub(super) fn start(supervisor: Arc<Supervisor>) -> Result<Self> {
        let (sender, events) = mpsc::unbounded_channel();
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if !event.kind.is_access() => {
                    for path in event.paths {
                        let _ = sender.send(path);
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "file watching failed"),
            })
            .context("starting the file watcher")?;
        let mut this = Self {
            supervisor,
            events,
            watcher,
            files: BTreeSet::new(),
            folders: BTreeSet::new(),
        };
        this.refresh();
        tracing::info!(
            files = this.files.len(),
            "watching the manifest and component files"
        );
        Ok(this)
    }

    /// Watches the folders of the files the last applied manifest names.
    fn refresh(&mut self) {
        self.files = self
            .supervisor
            .watched_files()
            .iter()
            .map(|f| canonical(f))
            .collect();
        let folders: BTreeSet<PathBuf> = self
            .files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for gone in self.folders.difference(&folders) {
            let _ = self.watcher.unwatch(gone);
        }
        for folder in folders.difference(&self.folders) {
            if let Err(err) = self.watcher.watch(folder, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %folder.display(), error = %err, "cannot watch folder");
            }
        }
        self.folders = folders;
    }

    pub(super) async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let path = tokio::select! {
                Some(path) = self.events.recv() => path,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            if !self.files.contains(&canonical(&path)) {
                continue;
            }
            // Debounce: wait until the files have been quiet for a moment.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, self.events.recv()).await {}
            tracing::info!(changed = %path.display(), "file changed: reloading");
            if let Err(err) = self.supervisor.reload().await {
                tracing::error!(error = format!("{err:#}"), "reload failed; nothing changed");
            }
            self.refresh();
        }
    }
}

/// The canonical form of `path` if it exists (its folder's, joined with its name, if only
/// the folder does), else `path`.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(path) = path.canonicalize() {
        return path;
    }
    match (
        path.parent().and_then(|p| p.canonicalize().ok()),
        path.file_name(),
    ) {
        (Some(folder), Some(name)) => folder.join(name),
        _ => path.to_path_buf(),
    }
}
