//! Embeds what `wasmq new` writes into the binary, so that it works from an installed binary
//! with no checkout beside it: every file of `templates/`, the WIT contract (`wit/`, copied
//! into every new project so that it builds on its own) and the npm lock file of the
//! JavaScript examples (new JavaScript projects pin the same packages).
//!
//! The files are read from the repository when the host is built, never copied by hand: the
//! generated `templates.rs` in `OUT_DIR` holds one `include_str!` / `include_bytes!` per file,
//! and cargo runs this again when anything under these paths changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Folders that are build output or caches, never template files (someone may have built
/// inside `templates/` to try a template out).
const SKIPPED: &[&str] = &["target", "node_modules", "__pycache__", ".wasmq"];

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("the host crate has no parent folder")?;
    let templates = root.join("templates");
    let wit = root.join("wit");
    let npm_lock = root.join("guest-examples/js/package-lock.json");
    for path in [&templates, &wit, &npm_lock] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let mut code = String::from(
        "/// Every file of `templates/`: its path there (`consumer-rust/src/lib.rs`) and its text.\n\
         const TEMPLATE_FILES: &[(&str, &str)] = &[\n",
    );
    // Files directly in `templates/` (its README) describe the folder; templates are folders.
    for (relative, path) in files(&templates)?
        .into_iter()
        .filter(|(r, _)| r.contains('/'))
    {
        writeln!(
            code,
            "    ({relative:?}, include_str!({:?})),",
            path.display().to_string()
        )?;
    }
    code.push_str(
        "];\n\n\
         /// Every file of the repository's `wit/`: its path in a project (`wit/queues.wit`) and\n\
         /// its bytes.\n\
         const WIT_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (relative, path) in files(&wit)? {
        let in_project = format!("wit/{relative}");
        writeln!(
            code,
            "    ({in_project:?}, include_bytes!({:?})),",
            path.display().to_string()
        )?;
    }
    writeln!(
        code,
        "];\n\n/// `guest-examples/js/package-lock.json`.\nconst NPM_LOCK: &str = include_str!({:?});",
        npm_lock.display().to_string()
    )?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("no OUT_DIR")?).join("templates.rs");
    std::fs::write(&out, code).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(())
}

/// Every file below `dir`, sorted, as (its path relative to `dir` with `/` separators, its
/// path).
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    if found.is_empty() {
        return Err(format!("{} has no files", dir.display()).into());
    }
    found.sort();
    Ok(found)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<(String, PathBuf)>) -> Result<(), Error> {
    let listing = |e: std::io::Error| format!("listing {}: {e}", dir.display());
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let path = entry.map_err(listing)?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !SKIPPED.contains(&name) {
                walk(root, &path, found)?;
            }
        } else {
            let relative = path
                .strip_prefix(root)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            found.push((relative, path));
        }
    }
    Ok(())
}
