//! `wasmq run --watch`: rebuilds a component when its sources change and reloads when the
//! manifest or a component file changes, in one terminal.
//!
//! A component's `watch` globs (relative to the manifest's folder) name its sources; a change
//! to one runs its `build` command (output streamed), then reloads, which hot-swaps the new
//! version in. A build that fails leaves the running version serving and says why. A change
//! to the manifest or to a component's `.wasm` file (built elsewhere) reloads directly.
//!
//! Events are debounced by `notify-debouncer-mini` (a build writes a file in several steps; an
//! editor saves through a temporary file). The folders holding the files are watched rather
//! than the files, so a file replaced by a rename is still seen; a glob's folder is watched
//! recursively from its first segment with a wildcard (`src/**/*.rs` watches `src/`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::{mpsc, watch};

use super::build;
use super::supervisor::Supervisor;
use crate::manifest::{ComponentConfig, Manifest};

/// Quiet time after the last file event before acting.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the files of a running host's manifest.
pub(super) struct Watcher {
    supervisor: Arc<Supervisor>,
    events: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    debouncer: Debouncer<RecommendedWatcher>,
    plan: Plan,
}

/// What to watch, and what a change means, for one applied manifest.
#[derive(Default)]
struct Plan {
    /// The manifest's folder (globs are relative to it), canonical.
    dir: PathBuf,
    /// Files whose change reloads: the manifest and every component's source, canonical.
    reload_on: BTreeSet<PathBuf>,
    /// Components with `watch` globs, and the globs.
    rebuilds: Vec<(ComponentConfig, GlobSet)>,
    /// Folders watched, and whether recursively.
    folders: BTreeSet<(PathBuf, bool)>,
}

impl Plan {
    fn of(manifest: &Manifest) -> Self {
        let dir = canonical(&manifest.dir);
        let reload_on: BTreeSet<PathBuf> = std::iter::once(&manifest.path)
            .chain(manifest.components.values().map(|c| &c.source))
            .map(|f| canonical(f))
            .collect();
        let mut folders: BTreeSet<(PathBuf, bool)> = reload_on
            .iter()
            .filter_map(|f| f.parent().map(|p| (p.to_path_buf(), false)))
            .collect();
        let mut rebuilds = Vec::new();
        for component in manifest.components.values() {
            let mut globs = GlobSetBuilder::new();
            for pattern in &component.watch {
                // The manifest checked every glob.
                if let Ok(glob) = Glob::new(pattern) {
                    globs.add(glob);
                }
                folders.insert((dir.join(literal_prefix(pattern)), true));
            }
            if !component.watch.is_empty()
                && let Ok(globs) = globs.build()
            {
                rebuilds.push((component.clone(), globs));
            }
        }
        Self {
            dir,
            reload_on,
            rebuilds,
            folders,
        }
    }

    /// The components to rebuild for `changed`, and whether anything else needs a reload.
    fn consider(&self, changed: &[PathBuf]) -> (Vec<&ComponentConfig>, bool) {
        let mut rebuild = Vec::new();
        let mut reload = false;
        for path in changed {
            let path = canonical(path);
            reload |= self.reload_on.contains(&path);
            let Ok(relative) = path.strip_prefix(&self.dir) else {
                continue;
            };
            for (component, globs) in &self.rebuilds {
                if globs.is_match(relative)
                    && !rebuild
                        .iter()
                        .any(|c: &&ComponentConfig| c.name == component.name)
                {
                    rebuild.push(component);
                }
            }
        }
        (rebuild, reload)
    }
}

impl Watcher {
    pub(super) fn start(supervisor: Arc<Supervisor>) -> Result<Self> {
        let (sender, events) = mpsc::unbounded_channel();
        let debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
            Ok(events) => {
                let _ = sender.send(events.into_iter().map(|e| e.path).collect());
            }
            Err(err) => tracing::warn!(error = %err, "file watching failed"),
        })
        .context("starting the file watcher")?;
        let mut this = Self {
            supervisor,
            events,
            debouncer,
            plan: Plan::default(),
        };
        this.refresh();
        tracing::info!(
            files = this.plan.reload_on.len(),
            rebuilt = this.plan.rebuilds.len(),
            "watching the manifest, the component files and the components' sources"
        );
        Ok(this)
    }

    /// Watches what the last applied manifest names.
    fn refresh(&mut self) {
        let plan = Plan::of(&self.supervisor.applied());
        let watcher = self.debouncer.watcher();
        for (gone, _) in self.plan.folders.difference(&plan.folders) {
            let _ = watcher.unwatch(gone);
        }
        for (folder, recursive) in plan.folders.difference(&self.plan.folders) {
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(err) = watcher.watch(folder, mode) {
                tracing::warn!(folder = %folder.display(), error = %err, "cannot watch folder");
            }
        }
        self.plan = plan;
    }

    pub(super) async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let changed = tokio::select! {
                Some(changed) = self.events.recv() => changed,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let (rebuild, mut reload) = self.plan.consider(&changed);
            for component in rebuild {
                tracing::info!(component = %component.name, "sources changed: rebuilding");
                match build::build(&self.plan.dir, component).await {
                    Ok(_) => reload = true,
                    Err(err) => tracing::error!(
                        component = %component.name,
                        error = format!("{err:#}"),
                        "build failed; the running version keeps serving"
                    ),
                }
            }
            if !reload {
                continue;
            }
            tracing::info!("reloading");
            if let Err(err) = self.supervisor.reload().await {
                tracing::error!(error = format!("{err:#}"), "reload failed; nothing changed");
            }
            self.refresh();
        }
    }
}

/// The folder part of `glob` before its first wildcard: `src/**/*.rs` → `src`.
fn literal_prefix(glob: &str) -> PathBuf {
    let is_wild = |segment: &str| segment.contains(['*', '?', '[', '{']);
    let literal: PathBuf = glob.split('/').take_while(|s| !is_wild(s)).collect();
    if glob.split('/').any(is_wild) {
        literal
    } else {
        // A plain file: watch its folder.
        literal
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_watched_from_their_literal_folder() {
        assert_eq!(literal_prefix("src/**/*.rs"), Path::new("src"));
        assert_eq!(literal_prefix("guest/src/lib.rs"), Path::new("guest/src"));
        assert_eq!(literal_prefix("Cargo.toml"), Path::new(""));
        assert_eq!(literal_prefix("*.py"), Path::new(""));
    }
}
