//! `wasmq schema`: prints the JSON Schema of `manifest.toml`, for editors. Save it next to the
//! manifest and point to it from the manifest's first line:
//!
//! ```toml
//! #:schema ./wasmq.schema.json
//! ```

use anyhow::Result;
use clap::Args;

use crate::manifest;

/// `wasmq schema`.
#[derive(Debug, Args)]
pub(super) struct SchemaCommand {}

impl SchemaCommand {
    /// Prints the schema to standard output.
    pub(super) fn run(self) -> Result<()> {
        println!(
            "{}",
            serde_json::to_string_pretty(&manifest::json_schema())?
        );
        Ok(())
    }
}
