//! `wasmq compact`: gives back the space a drained backlog left in a stopped host's queue file.
//! A running host does this on its own when it is idle and most of its file is free.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::engine;
use crate::manifest::{self, Storage};

/// `wasmq compact`.
#[derive(Debug, Args)]
pub(super) struct CompactCommand {
    /// The manifest whose queue file (`data_dir/queues.redb`) is compacted.
    #[arg(default_value = "manifest.toml")]
    manifest: PathBuf,
}

impl CompactCommand {
    /// Compacts the file and says how much it shrank.
    pub(super) async fn run(self) -> Result<()> {
        let manifest = manifest::load(&self.manifest)?;
        if !matches!(manifest.host.storage, Storage::Redb) {
            bail!(
                "the queues of this manifest live in PostgreSQL, which reclaims space itself (VACUUM)"
            );
        }
        let path = manifest.host.data_dir.join("queues.redb");
        if !path.exists() {
            bail!(
                "{} does not exist: the host has not run yet",
                path.display()
            );
        }
        let done = tokio::task::spawn_blocking(move || engine::compact_file(&path)).await??;
        let mb = |bytes: u64| bytes as f64 / 1e6;
        println!(
            "compacted {}: {:.1} MB → {:.1} MB in {:.1} s",
            self.manifest.display(),
            mb(done.before_bytes),
            mb(done.after_bytes),
            done.took.as_secs_f64()
        );
        Ok(())
    }
}
