//! `wasmq build`: runs the `build` command of every component of a manifest (or of the ones
//! named), streaming their output, then checks that each `source` now exists, as `wasmq run`
//! would before loading them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::manifest;
use crate::run::build;

/// `wasmq build [MANIFEST] [--component NAME]...`.
#[derive(Debug, Args)]
pub(super) struct BuildCommand {
    /// The manifest.
    #[arg(default_value = "manifest.toml")]
    manifest: PathBuf,
    /// Build only this component (repeatable).
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
}

impl BuildCommand {
    /// Builds, stopping at the first failure.
    pub(super) async fn run(self) -> Result<()> {
        let manifest = manifest::load(&self.manifest)?;
        for name in &self.components {
            if !manifest.components.contains_key(name) {
                bail!("the manifest has no component `{name}`");
            }
        }
        let chosen = manifest
            .components
            .values()
            .filter(|c| self.components.is_empty() || self.components.contains(&c.name));
        for component in chosen {
            match build::build(&manifest.dir, component).await? {
                Some(took) => println!("built {} in {:.1} s", component.name, took.as_secs_f64()),
                None => println!("{}: no build command", component.name),
            }
        }
        manifest.check_sources()?;
        Ok(())
    }
}
